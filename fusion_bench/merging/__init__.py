"""Pure tensor / state-dict maths of model merging (no I/O, no models)."""
