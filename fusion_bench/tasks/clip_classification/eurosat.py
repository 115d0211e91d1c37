"""EuroSAT: 10 land-use / land-cover classes of Sentinel-2 satellite images.

Labels follow ``tanganke/eurosat`` (the original alphabetical folder order AnnualCrop, Forest,
HerbaceousVegetation, Highway, Industrial, Pasture, PermanentCrop, Residential, River, SeaLake),
spelled out in words as in the task-vectors work (Ilharco et al., arXiv 2212.04089) because CLIP
reads "annual crop land" far better than "AnnualCrop". Templates: the CLIP paper's (arXiv
2103.00020) EuroSAT prompts.
"""

CLASSNAMES = [
    "annual crop land",
    "forest",
    "brushland or shrubland",
    "highway or road",
    "industrial buildings or commercial buildings",
    "pasture land",
    "permanent crop land",
    "residential buildings or homes or apartments",
    "river",
    "lake or sea",
]

TEMPLATES = [
    "a centered satellite photo of {}.",
    "a centered satellite photo of a {}.",
    "a centered satellite photo of the {}.",
]
