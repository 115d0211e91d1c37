"""fusion_bench: a config-driven benchmark for deep model fusion.

Importing the package is cheap on purpose: heavy libraries (torch, transformers, datasets)
are imported inside the functions that need them.
"""

__version__ = "0.1.0"
