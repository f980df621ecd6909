"""Talking to the API server: the client and its errors, leader election, model verification I/O."""
