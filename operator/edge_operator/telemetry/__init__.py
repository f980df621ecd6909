"""What the operator tells the outside: Prometheus metrics and structured logs. Imports no decision logic."""
