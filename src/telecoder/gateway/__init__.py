"""The model gateway: agents reach models through it, with a key worthless elsewhere."""
