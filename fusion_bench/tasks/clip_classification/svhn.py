"""SVHN (cropped digits): house-number digits 0-9 from Google Street View.

Labels follow ``ufldl-stanford/svhn`` config ``cropped_digits``, where label ``i`` is the digit
``i`` (the original ``.mat`` files' label 10 for the digit 0 is remapped to 0 there). Template: the
CLIP paper's (arXiv 2103.00020) SVHN prompt, the same as MNIST's.
"""

CLASSNAMES = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]

TEMPLATES = [
    'a photo of the number: "{}".',
]
