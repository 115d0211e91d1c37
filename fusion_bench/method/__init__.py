"""Fusion methods: one module per algorithm, named like its config in ``config/method/``."""
