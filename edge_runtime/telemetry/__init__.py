"""What the runtime tells the outside: Prometheus metrics and structured logs."""
