"""Small shared helpers (I/O, instantiation, hub access)."""
