"""The ways in: the REST (ASGI on uvicorn) and gRPC adapters over the dataplane, and the REST port's
connection limits."""
