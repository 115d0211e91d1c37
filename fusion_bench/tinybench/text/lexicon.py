"""The shared lexicon of the procedural GLUE tasks (:mod:`fusion_bench.tinybench.text.data`).

Lemmas listed in PEOPLE / THINGS / *_VERBS / *_ADJS are the ones sampled; synonyms (values of
SYNONYMS) only ever appear as substitutes, so "a different noun" never picks a synonym by
accident. :func:`lexicon` lists every word a generator can write (the tokenizer's vocabulary).
"""

from __future__ import annotations

NOUN_PLURAL = {
    # people
    "teacher": "teachers",
    "doctor": "doctors",
    "student": "students",
    "farmer": "farmers",
    "artist": "artists",
    "driver": "drivers",
    "writer": "writers",
    "singer": "singers",
    "lawyer": "lawyers",
    "nurse": "nurses",
    "pilot": "pilots",
    "baker": "bakers",
    "child": "children",
    "woman": "women",
    "man": "men",
    "neighbor": "neighbors",
    "physician": "physicians",
    "attorney": "attorneys",
    "kid": "kids",
    "instructor": "instructors",
    "lady": "ladies",
    # things
    "car": "cars",
    "house": "houses",
    "book": "books",
    "boat": "boats",
    "phone": "phones",
    "bike": "bikes",
    "letter": "letters",
    "painting": "paintings",
    "computer": "computers",
    "ticket": "tickets",
    "chair": "chairs",
    "table": "tables",
    "window": "windows",
    "bag": "bags",
    "picture": "pictures",
    "shop": "shops",
    "lamp": "lamps",
    "guitar": "guitars",
    "camera": "cameras",
    "automobile": "automobiles",
    "photo": "photos",
    "home": "homes",
    "bicycle": "bicycles",
    "store": "stores",
}
PEOPLE = (
    "teacher",
    "doctor",
    "student",
    "farmer",
    "artist",
    "driver",
    "writer",
    "singer",
    "lawyer",
    "nurse",
    "pilot",
    "baker",
    "child",
    "woman",
    "man",
    "neighbor",
)
THINGS = (
    "car",
    "house",
    "book",
    "boat",
    "phone",
    "bike",
    "letter",
    "painting",
    "computer",
    "ticket",
    "chair",
    "table",
    "window",
    "bag",
    "picture",
    "shop",
    "lamp",
    "guitar",
    "camera",
)

# lemma: (third person singular, past, past participle)
VERB_FORMS = {
    "buy": ("buys", "bought", "bought"),
    "sell": ("sells", "sold", "sold"),
    "fix": ("fixes", "fixed", "fixed"),
    "break": ("breaks", "broke", "broken"),
    "paint": ("paints", "painted", "painted"),
    "clean": ("cleans", "cleaned", "cleaned"),
    "open": ("opens", "opened", "opened"),
    "close": ("closes", "closed", "closed"),
    "find": ("finds", "found", "found"),
    "lose": ("loses", "lost", "lost"),
    "like": ("likes", "liked", "liked"),
    "hate": ("hates", "hated", "hated"),
    "build": ("builds", "built", "built"),
    "borrow": ("borrows", "borrowed", "borrowed"),
    "lend": ("lends", "lent", "lent"),
    "carry": ("carries", "carried", "carried"),
    "want": ("wants", "wanted", "wanted"),
    "see": ("sees", "saw", "seen"),
    "help": ("helps", "helped", "helped"),
    "visit": ("visits", "visited", "visited"),
    "call": ("calls", "called", "called"),
    "thank": ("thanks", "thanked", "thanked"),
    "follow": ("follows", "followed", "followed"),
    "admire": ("admires", "admired", "admired"),
    "greet": ("greets", "greeted", "greeted"),
    "pay": ("pays", "paid", "paid"),
    # synonyms
    "purchase": ("purchases", "purchased", "purchased"),
    "repair": ("repairs", "repaired", "repaired"),
    "enjoy": ("enjoys", "enjoyed", "enjoyed"),
    "construct": ("constructs", "constructed", "constructed"),
    "wash": ("washes", "washed", "washed"),
    "discover": ("discovers", "discovered", "discovered"),
    "notice": ("notices", "noticed", "noticed"),
    "assist": ("assists", "assisted", "assisted"),
    "respect": ("respects", "respected", "respected"),
    "welcome": ("welcomes", "welcomed", "welcomed"),
}
THING_VERBS = (
    "buy",
    "sell",
    "fix",
    "break",
    "paint",
    "clean",
    "open",
    "close",
    "find",
    "lose",
    "like",
    "hate",
    "build",
    "borrow",
    "lend",
    "carry",
    "want",
    "see",
)
PERSON_VERBS = ("help", "visit", "call", "thank", "follow", "admire", "greet", "pay")

THING_ADJS = ("red", "blue", "green", "old", "new", "big", "small", "cheap", "expensive", "heavy")
PERSON_ADJS = ("tall", "young", "happy", "tired", "clever", "kind", "angry", "rich", "busy")

SYNONYMS = {
    "doctor": "physician",
    "lawyer": "attorney",
    "child": "kid",
    "teacher": "instructor",
    "woman": "lady",
    "car": "automobile",
    "picture": "photo",
    "house": "home",
    "bike": "bicycle",
    "shop": "store",
    "buy": "purchase",
    "fix": "repair",
    "like": "enjoy",
    "build": "construct",
    "clean": "wash",
    "find": "discover",
    "see": "notice",
    "help": "assist",
    "admire": "respect",
    "greet": "welcome",
    "big": "large",
    "small": "little",
    "expensive": "costly",
    "happy": "glad",
    "clever": "smart",
    "rich": "wealthy",
    "angry": "upset",
}
ANTONYMS = {
    "buy": "sell",
    "sell": "buy",
    "fix": "break",
    "break": "fix",
    "open": "close",
    "close": "open",
    "find": "lose",
    "lose": "find",
    "like": "hate",
    "hate": "like",
    "borrow": "lend",
    "lend": "borrow",
}

PLACES = {
    "park": "in",
    "market": "at",
    "city": "in",
    "village": "in",
    "station": "at",
    "kitchen": "in",
    "library": "at",
    "office": "at",
    "garage": "in",
    "school": "at",
    "museum": "at",
    "harbor": "near",
    "river": "near",
}

TOPICS = (
    "movie",
    "film",
    "story",
    "plot",
    "acting",
    "music",
    "ending",
    "script",
    "cast",
    "dialogue",
    "soundtrack",
    "performance",
    "book",
    "painting",
)
POSITIVE = (
    "good",
    "great",
    "wonderful",
    "excellent",
    "brilliant",
    "charming",
    "delightful",
    "enjoyable",
    "beautiful",
    "funny",
    "moving",
    "fresh",
)
NEGATIVE = (
    "bad",
    "awful",
    "boring",
    "terrible",
    "dull",
    "weak",
    "poor",
    "tedious",
    "messy",
    "silly",
    "predictable",
    "bland",
)
INTENSIFIERS = ("very", "really", "quite", "truly", "so")
MODALS = ("wants", "plans", "hopes", "tries")

# Question frames of QQP, grouped by intent: frames of one intent ask the same thing.
QQP_INTENTS = {
    "method": (
        "how can i {v} {np}",
        "how do i {v} {np}",
        "what is the best way to {v} {np}",
        "what is the easiest way to {v} {np}",
    ),
    "place": (
        "where can i {v} {np}",
        "where should i {v} {np}",
        "what is a good place to {v} {np}",
    ),
    "reason": (
        "why do people {v} {nps}",
        "why would someone {v} {np}",
        "what makes people {v} {nps}",
    ),
    "cost": (
        "how much does it cost to {v} {np}",
        "what does it cost to {v} {np}",
        "is it expensive to {v} {np}",
    ),
}

SST2_PLAIN = (
    "the {t} is {i}{a}",
    "the {t} was {i}{a}",
    "i found the {t} {i}{a}",
    "this is {art} {i}{a} {t}",
    "{art} {i}{a} {t} about {p}",
    "the {t} about {p} is {i}{a}",
)
SST2_NEGATED = (
    "the {t} is not {a}",
    "the {t} was never {a}",
    "i did not find the {t} {a}",
    "this is not {art} {a} {t}",
    "the {t} about {p} is not {a}",
)
SST2_CONTRAST = ("the {t} is {a} but the {t2} is {b}", "the {t} was {a} but the {t2} was {b}")


def lexicon() -> list[str]:
    """Every word a generator can write (lower case), for the tokenizer's vocabulary."""
    words: set[str] = set()
    words.update(NOUN_PLURAL)
    words.update(NOUN_PLURAL.values())
    for lemma, forms in VERB_FORMS.items():
        words.add(lemma)
        words.update(forms)
    words.update(THING_ADJS + PERSON_ADJS + tuple(SYNONYMS.values()))
    words.update(PLACES)
    words.update(PLACES.values())
    words.update(TOPICS + POSITIVE + NEGATIVE + INTENSIFIERS + MODALS)
    for frames in QQP_INTENTS.values():
        for f in frames:
            words.update(w for w in f.split() if not w.startswith("{"))
    for f in SST2_PLAIN + SST2_NEGATED + SST2_CONTRAST:
        words.update(w for w in f.split() if not w.startswith("{"))
    words.update(
        "a an the by is are was were not does do did and or but who which what where to "
        "i this about never".split()
    )
    return sorted(words)
