"""Model pools: a pretrained model (``_pretrained_``) plus named fine-tuned experts."""
