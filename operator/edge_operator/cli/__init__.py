"""The kubectl plugin (`kubectl edgeai`): pure views over API objects and a thin command line."""
