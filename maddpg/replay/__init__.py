"""Replay: the numpy ring buffer (queue backends come with the distributed runtime)."""
