"""``batcher chaos``: a soak of real services under injected faults."""
