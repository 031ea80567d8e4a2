"""ZeroMQ inference protocol: wire format (codec), DEALER client, ROUTER batching server."""
