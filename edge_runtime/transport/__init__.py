"""The ways in: the REST (ASGI, on the runtime's own HTTP/1.1 server `http_server`) and gRPC adapters over
the dataplane, and the REST port's connection limits."""
