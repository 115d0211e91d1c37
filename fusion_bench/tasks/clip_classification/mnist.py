"""MNIST: handwritten digits 0-9.

Labels follow ``ylecun/mnist`` (label ``i`` is the digit ``i``). Template: the CLIP paper's
(arXiv 2103.00020) MNIST prompt.
"""

CLASSNAMES = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]

TEMPLATES = [
    'a photo of the number: "{}".',
]
