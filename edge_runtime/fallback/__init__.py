"""The way out to the cloud: the v2 client that forwards low-confidence requests, and the durable queue
of hard examples."""
