import sys

from edge_operator.main import main

sys.exit(main())
