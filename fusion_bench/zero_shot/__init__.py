"""CLIP zero-shot classification shared by the model pools (data for data-dependent methods) and
the task pools (evaluation): task configs, datasets, cached text heads, logits."""
