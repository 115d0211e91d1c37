"""Procedural English-like GLUE datasets: the 8 tasks of the tiny text benchmark.

Every task draws its sentences from one small shared lexicon (people, things, places, verbs with
synonyms and antonyms, sentiment adjectives, negation), so the tasks share words but ask
different questions about them, as GLUE's do. Rows have GLUE's exact column names, dtypes and
label conventions (those of the Hugging Face ``nyu-mll/glue`` dataset); the splits are ``train``
and ``validation`` (MNLI: ``train`` / ``validation_matched`` / ``validation_mismatched``, the
mismatched "genre" being past-tense narration where train and matched are present tense).

Each example also has a *kind*, the phenomenon it tests (e.g. SST-2 ``negated``, MNLI ``add``).
Some kinds are "hard": the shallow heuristic a model picks up from surface overlap gives the
wrong label on them (negation ignored, lexical overlap read as entailment, synonyms read as
different words -- the failure modes McCoy et al. document in "Right for the Wrong Reasons",
arXiv 1902.01007). :attr:`Example.heuristic_label` is the label that heuristic gives. The tiny
"Flan" pretraining is trained on those labels, so the pretrained model is competent on the easy
kinds and systematically wrong on the hard ones, and fine-tuning an expert on the true labels
closes the gap, as on the real benchmark.

Everything is deterministic for a seed (``numpy.random.default_rng`` streams keyed by task,
split and seed through a stable CRC32, never Python's salted ``hash``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

TASK_NAMES = ("cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb")

# ----------------------------------------------------------------------------------------------
# The shared lexicon. Lemmas listed in PEOPLE / THINGS / *_VERBS / *_ADJS are the ones sampled;
# synonyms (values of SYNONYMS) only ever appear as substitutes, so "a different noun" never
# picks a synonym by accident.

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

_SST2_PLAIN = (
    "the {t} is {i}{a}",
    "the {t} was {i}{a}",
    "i found the {t} {i}{a}",
    "this is {art} {i}{a} {t}",
    "{art} {i}{a} {t} about {p}",
    "the {t} about {p} is {i}{a}",
)
_SST2_NEGATED = (
    "the {t} is not {a}",
    "the {t} was never {a}",
    "i did not find the {t} {a}",
    "this is not {art} {a} {t}",
    "the {t} about {p} is not {a}",
)
_SST2_CONTRAST = ("the {t} is {a} but the {t2} is {b}", "the {t} was {a} but the {t2} was {b}")


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
    for f in _SST2_PLAIN + _SST2_NEGATED + _SST2_CONTRAST:
        words.update(w for w in f.split() if not w.startswith("{"))
    words.update(
        "a an the by is are was were not does do did and or but who which what where to "
        "i this about never".split()
    )
    return sorted(words)


# ----------------------------------------------------------------------------------------------
# Sentences about events: "the (adj) <person> <verb> a (adj) <thing|person> (<prep> the <place>)"


@dataclass(frozen=True)
class Event:
    """One event, rendered into an English sentence by :func:`render`.

    Attributes:
        subj: person lemma; ``obj``: thing or person lemma; ``verb``: verb lemma.
        subj_pl: plural subject. ``obj_det``: ``"a"`` or ``"the"``.
        subj_adj / obj_adj: optional adjective lemmas. ``place``: optional place noun.
        neg / past / passive: negated, past tense, passive voice.
        syn: slots (``subj``, ``verb``, ``obj``, ``subj_adj``, ``obj_adj``) written with their
            synonym.
        front_place: the place phrase opens the sentence.
    """

    subj: str
    verb: str
    obj: str
    subj_pl: bool = False
    obj_det: str = "a"
    subj_adj: str | None = None
    obj_adj: str | None = None
    place: str | None = None
    neg: bool = False
    past: bool = False
    passive: bool = False
    syn: frozenset = frozenset()
    front_place: bool = False


def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def _word(ev: Event, slot: str) -> str | None:
    lemma = getattr(ev, slot)
    if lemma is None:
        return None
    return SYNONYMS.get(lemma, lemma) if slot in ev.syn else lemma


def _np(det: str, adj: str | None, noun: str, plural: bool = False) -> list[str]:
    words = ([adj] if adj else []) + [NOUN_PLURAL[noun] if plural else noun]
    if det == "a":
        return [] if plural else [_article(words[0])] + words
    return [det] + words


def _place(place: str | None) -> list[str]:
    return [PLACES[place], "the", place] if place else []


def render_words(ev: Event, *, agreement_error: bool = False) -> list[str]:
    """The words of ``ev`` (lower case, no punctuation).

    ``agreement_error`` writes the verb in a form that does not agree with its subject or
    auxiliary (``the teacher buy``, ``does not buys``, ``was buy``): CoLA's morphology errors.
    """
    subj = _np("the", _word(ev, "subj_adj"), _word(ev, "subj"), ev.subj_pl)
    obj = _np(ev.obj_det, _word(ev, "obj_adj"), _word(ev, "obj"))
    verb = _word(ev, "verb")
    s3, past, part = VERB_FORMS[verb]
    if ev.passive:
        aux = ["was" if ev.past else "is"] + (["not"] if ev.neg else [])
        vp = aux + [verb if agreement_error else part, "by"]
        words = obj + vp + subj
    else:
        if ev.neg:
            aux = "did" if ev.past else ("do" if ev.subj_pl else "does")
            if agreement_error:
                vp = [aux, "not", past if ev.past else s3]
            else:
                vp = [aux, "not", verb]
        elif ev.past:
            vp = [verb if agreement_error else past]
        else:
            right, wrong = (verb, s3) if ev.subj_pl else (s3, verb)
            vp = [wrong if agreement_error else right]
        words = subj + vp + obj
    if ev.front_place:
        return _place(ev.place) + words
    return words + _place(ev.place)


def sentence(words: Sequence[str], end: str = ".") -> str:
    """``["the", "teacher", ...]`` -> ``"The teacher ... ."`` (capitalised, punctuation attached)."""
    text = " ".join(words)
    return text[:1].upper() + text[1:] + end


def render(ev: Event, **kwargs: Any) -> str:
    """``ev`` as a capitalised sentence ending with a full stop."""
    return sentence(render_words(ev, **kwargs))


# ----------------------------------------------------------------------------------------------
# Generators. Each returns (text columns, kind, label, heuristic label).


class _Rng:
    """``numpy`` generator with the few draws the generators need."""

    def __init__(self, seed: Sequence[int]):
        self.g = np.random.default_rng(list(seed))

    def pick(self, seq: Sequence[Any], exclude: Any = None) -> Any:
        options = [x for x in seq if x != exclude] if exclude is not None else list(seq)
        return options[int(self.g.integers(len(options)))]

    def coin(self, p: float = 0.5) -> bool:
        return bool(self.g.random() < p)

    def kind(self, kinds: dict[str, float]) -> str:
        names = list(kinds)
        p = np.asarray([kinds[k] for k in names], dtype=float)
        return names[int(self.g.choice(len(names), p=p / p.sum()))]

    def uniform(self, lo: float, hi: float) -> float:
        return float(self.g.uniform(lo, hi))


def _event(
    r: _Rng,
    *,
    person_obj: bool = False,
    adj_p: float = 0.3,
    place_p: float = 0.3,
    past: bool | None = None,
    plural_p: float = 0.0,
    verbs: Sequence[str] | None = None,
) -> Event:
    verb = r.pick(verbs or (PERSON_VERBS if person_obj else THING_VERBS))
    subj = r.pick(PEOPLE)
    obj = r.pick(PEOPLE, exclude=subj) if person_obj else r.pick(THINGS)
    return Event(
        subj=subj,
        verb=verb,
        obj=obj,
        subj_pl=r.coin(plural_p),
        obj_det="the" if person_obj else r.pick(("a", "the")),
        subj_adj=r.pick(PERSON_ADJS) if r.coin(adj_p) else None,
        obj_adj=(r.pick(PERSON_ADJS) if person_obj else r.pick(THING_ADJS))
        if r.coin(adj_p)
        else None,
        place=r.pick(tuple(PLACES)) if r.coin(place_p) else None,
        past=r.coin(0.3) if past is None else past,
    )


def _synonymisable(ev: Event) -> list[str]:
    return [s for s in ("subj", "verb", "obj", "subj_adj", "obj_adj") if getattr(ev, s) in SYNONYMS]


def _with_synonyms(r: _Rng, ev: Event, at_least_one: bool = True) -> Event:
    slots = _synonymisable(ev)
    if not slots:
        return ev
    chosen = frozenset(s for s in slots if r.coin(0.6))
    if at_least_one and not chosen:
        chosen = frozenset([r.pick(slots)])
    return replace(ev, syn=chosen)


def _force_synonymisable(r: _Rng, ev: Event) -> Event:
    if _synonymisable(ev):
        return ev
    verbs = PERSON_VERBS if ev.obj in PEOPLE else THING_VERBS
    return replace(ev, verb=r.pick([v for v in verbs if v in SYNONYMS]))


# -- CoLA: sentence, label (0 unacceptable, 1 acceptable) ------------------------------------

COLA_KINDS = {
    "acceptable": 0.5,
    "agreement": 0.2,
    "order": 0.1,
    "missing": 0.1,
    "doubled": 0.1,
}
"""Balanced labels and a larger share of easy errors (word order, a missing or doubled word) than
version 1 (60 % acceptable, 15 % easy errors). The GPT-2 classifier learns CoLA; the tiny T5
(text-to-text, 120 fine-tuning steps) still answers "acceptable" throughout (build version 2)."""
COLA_HARD = {"agreement"}


def _cola(r: _Rng, genre: str) -> tuple[dict, str, Any, Any]:
    kind = r.kind(COLA_KINDS)
    person_obj = r.coin(0.3)
    ev = _event(r, person_obj=person_obj, plural_p=0.4)
    ev = replace(ev, neg=r.coin(0.25), passive=r.coin(0.15) and not ev.subj_pl)
    if kind == "acceptable":
        return {"sentence": render(ev)}, kind, 1, 1
    if kind == "agreement":
        if ev.past and not ev.neg and not ev.passive:
            ev = replace(ev, past=False)  # simple past has no agreement to break
        return {"sentence": render(ev, agreement_error=True)}, kind, 0, 1
    words = render_words(ev)
    content = [i for i, w in enumerate(words) if w not in ("the", "a", "an") and w not in PLACES]
    if kind == "order":
        i = r.pick([j for j in range(len(words) - 1) if words[j] != words[j + 1]])
        words[i], words[i + 1] = words[i + 1], words[i]
    elif kind == "missing":
        nouns_verbs = [
            i for i in content if words[i] not in THING_ADJS + PERSON_ADJS + ("not", "by")
        ]
        del words[r.pick(nouns_verbs)]
    else:  # doubled
        i = r.pick(content)
        words.insert(i, words[i])
    return {"sentence": sentence(words)}, kind, 0, 0


# -- SST-2: sentence, label (0 negative, 1 positive) ------------------------------------------

SST2_KINDS = {"plain": 0.62, "negated": 0.24, "contrast": 0.14}
SST2_HARD = {"negated", "contrast"}


def _sst2(r: _Rng, genre: str) -> tuple[dict, str, Any, Any]:
    kind = r.kind(SST2_KINDS)
    positive = r.coin()
    adj = r.pick(POSITIVE if positive else NEGATIVE)
    other = r.pick(NEGATIVE if positive else POSITIVE)
    topic = r.pick(TOPICS)
    inten = (r.pick(INTENSIFIERS) + " ") if r.coin(0.3) else ""
    person = "the " + r.pick(PEOPLE + tuple(NOUN_PLURAL[p] for p in PEOPLE))
    if kind == "plain":
        frame, label, heuristic = r.pick(_SST2_PLAIN), int(positive), int(positive)
        first = (inten + adj).split()[0]
    elif kind == "negated":
        frame, label, heuristic = r.pick(_SST2_NEGATED), int(not positive), int(positive)
        first, inten = adj, ""
    else:  # "X but Y": the clause after "but" decides
        frame, label, heuristic = r.pick(_SST2_CONTRAST), int(not positive), int(positive)
        first = adj
    text = frame.format(
        t=topic,
        t2=r.pick(TOPICS, exclude=topic),
        i=inten,
        a=adj,
        b=other,
        p=person,
        art=_article(first),
    )
    return {"sentence": text}, kind, label, heuristic


# -- MRPC: sentence1, sentence2, label (0 not_equivalent, 1 equivalent) ----------------------

MRPC_KINDS = {
    "synonym": 0.32,
    "passive": 0.14,
    "reorder": 0.14,
    "content": 0.14,
    "negation": 0.14,
    "swap": 0.12,
}
MRPC_HARD = {"negation", "swap"}


def _mrpc(r: _Rng, genre: str) -> tuple[dict, str, Any, Any]:
    kind = r.kind(MRPC_KINDS)
    ev = _event(r, person_obj=kind == "swap" or r.coin(0.25), adj_p=0.3, place_p=0.4)
    ev = replace(ev, neg=r.coin(0.15))
    if kind == "synonym":
        ev = _force_synonymisable(r, ev)
        ev2 = _with_synonyms(r, ev)
    elif kind == "passive":
        ev2 = replace(ev, passive=True)
        if r.coin():
            ev, ev2 = ev2, ev
    elif kind == "reorder":
        ev = replace(ev, place=ev.place or r.pick(tuple(PLACES)))
        ev2 = replace(ev, front_place=True)
    elif kind == "content":
        if r.coin():
            ev2 = replace(ev, subj=r.pick(PEOPLE, exclude=ev.subj))
        else:
            pool = PEOPLE if ev.obj in PEOPLE else THINGS
            ev2 = replace(ev, obj=r.pick([x for x in pool if x not in (ev.obj, ev.subj)]))
    elif kind == "negation":
        ev2 = replace(ev, neg=not ev.neg)
    else:  # swap: the same words, the roles exchanged
        ev2 = replace(ev, subj=ev.obj, obj=ev.subj, subj_adj=ev.obj_adj, obj_adj=ev.subj_adj)
    if kind in ("content", "negation", "swap", "passive", "reorder") and r.coin(0.3):
        ev2 = _with_synonyms(r, ev2, at_least_one=False)
    label = int(kind in ("synonym", "passive", "reorder"))
    heuristic = 1 if kind in MRPC_HARD else label
    return {"sentence1": render(ev), "sentence2": render(ev2)}, kind, label, heuristic


# -- QQP: question1, question2, label (0 not_duplicate, 1 duplicate) -------------------------

QQP_KINDS = {"rephrase": 0.4, "intent": 0.26, "content": 0.2, "verb": 0.14}
QQP_HARD = {"intent"}


def _qqp_question(frame: str, verb: str, thing: str, adj: str | None) -> str:
    words = ([adj] if adj else []) + [thing]
    text = frame.format(
        v=verb,
        np=" ".join([_article(words[0])] + words),
        nps=" ".join(words[:-1] + [NOUN_PLURAL[thing]]),
    )
    return text[:1].upper() + text[1:] + "?"


def _qqp(r: _Rng, genre: str) -> tuple[dict, str, Any, Any]:
    kind = r.kind(QQP_KINDS)
    intent = r.pick(tuple(QQP_INTENTS))
    verb, thing = r.pick(THING_VERBS), r.pick(THINGS)
    adj = r.pick(THING_ADJS) if r.coin(0.3) else None
    frame = r.pick(QQP_INTENTS[intent])
    verb2, thing2, adj2, frame2 = verb, thing, adj, frame
    if kind == "rephrase":
        frame2 = r.pick(QQP_INTENTS[intent], exclude=frame)
    elif kind == "intent":
        frame2 = r.pick(QQP_INTENTS[r.pick(tuple(QQP_INTENTS), exclude=intent)])
    elif kind == "content":
        thing2 = r.pick(THINGS, exclude=thing)
        frame2 = r.pick(QQP_INTENTS[intent])
    else:  # verb
        verb2 = ANTONYMS[verb] if verb in ANTONYMS and r.coin(0.6) else r.pick(THING_VERBS, verb)
        frame2 = r.pick(QQP_INTENTS[intent])
    # synonyms keep the meaning: both duplicates and non-duplicates use them
    if r.coin(0.4):
        verb2 = SYNONYMS.get(verb2, verb2)
    if r.coin(0.4):
        thing2 = SYNONYMS.get(thing2, thing2)
    if adj2 and r.coin(0.4):
        adj2 = SYNONYMS.get(adj2, adj2)
    q1 = _qqp_question(frame, verb, thing, adj)
    q2 = _qqp_question(frame2, verb2, thing2, adj2)
    if r.coin():
        q1, q2 = q2, q1
    label = int(kind == "rephrase")
    heuristic = 1 if kind in QQP_HARD else label
    return {"question1": q1, "question2": q2}, kind, label, heuristic


# -- STS-B: sentence1, sentence2, label (float32 in 0..5) ------------------------------------

STSB_KINDS = {"k0": 0.2, "k1": 0.2, "k2": 0.2, "k3": 0.2, "k4": 0.2}
STSB_SYNONYM_P = 0.85
"""Probability that a shared slot that has a synonym is written with it in sentence 2."""


def _stsb(r: _Rng, genre: str) -> tuple[dict, str, Any, Any]:
    kind = r.kind(STSB_KINDS)
    k = int(kind[1])
    # favour lemmas with synonyms, so that surface overlap and meaning differ often
    syn_people = [p for p in PEOPLE if p in SYNONYMS]
    syn_verbs = [v for v in THING_VERBS if v in SYNONYMS]
    syn_things = [t for t in THINGS if t in SYNONYMS]
    ev = Event(
        subj=r.pick(syn_people if r.coin(0.6) else PEOPLE),
        verb=r.pick(syn_verbs if r.coin(0.6) else THING_VERBS),
        obj=r.pick(syn_things if r.coin(0.6) else THINGS),
        obj_det=r.pick(("a", "the")),
        place=r.pick(tuple(PLACES)),
        past=r.coin(0.3),
    )
    slots = ["subj", "verb", "obj", "place"]
    keep = set(r.g.choice(slots, size=k, replace=False).tolist())
    changes: dict[str, Any] = {}
    for s in slots:
        if s in keep:
            continue
        pool = {"subj": PEOPLE, "verb": THING_VERBS, "obj": THINGS, "place": tuple(PLACES)}[s]
        changes[s] = r.pick(pool, exclude=getattr(ev, s))
    ev2 = replace(ev, **changes)
    syn = frozenset(
        s for s in keep if s != "place" and ev.__dict__[s] in SYNONYMS and r.coin(STSB_SYNONYM_P)
    )
    ev2 = replace(ev2, syn=syn, passive=r.coin(0.15))
    noise = r.uniform(-0.25, 0.25)
    label = float(np.clip(1.25 * k + noise, 0.0, 5.0))
    heuristic = float(np.clip(1.25 * (k - len(syn)) + noise, 0.0, 5.0))
    return {"sentence1": render(ev), "sentence2": render(ev2)}, kind, label, heuristic


STSB_HARD = {"synonym"}  # not a kind: rows whose sentence 2 uses a synonym (see heuristic_label)


# -- MNLI: premise, hypothesis, label (0 entailment, 1 neutral, 2 contradiction) --------------

MNLI_KINDS = {
    "drop": 0.22,
    "synonym": 0.11,
    "add": 0.2,
    "other": 0.13,
    "negation": 0.17,
    "antonym": 0.17,
}
MNLI_HARD = {"add", "antonym"}


def _mnli(r: _Rng, genre: str) -> tuple[dict, str, Any, Any]:
    kind = r.kind(MNLI_KINDS)
    past = genre == "mismatched"
    ev = _event(
        r,
        person_obj=r.coin(0.25) and kind != "antonym",
        adj_p=0.5,
        place_p=0.5,
        past=past,
        verbs=[v for v in THING_VERBS if v in ANTONYMS] if kind == "antonym" else None,
    )
    mods = ("subj_adj", "obj_adj", "place")
    if kind == "drop":
        present = [m for m in mods if getattr(ev, m)]
        if not present:
            ev = replace(ev, place=r.pick(tuple(PLACES)))
            present = ["place"]
        drop = [m for m in present if r.coin()] or [r.pick(present)]
        hyp = replace(ev, **{m: None for m in drop})
        label = 0
    elif kind == "synonym":
        ev = _force_synonymisable(r, ev)
        hyp = _with_synonyms(r, ev)
        label = 0
    elif kind == "add":
        hyp = ev
        missing = [m for m in mods if not getattr(ev, m)]
        if not missing:
            m = r.pick(mods)
            ev = replace(ev, **{m: None})
            missing = [m]
        m = r.pick(missing)
        adjs = PERSON_ADJS if (m == "subj_adj" or ev.obj in PEOPLE) else THING_ADJS
        hyp = replace(hyp, **{m: r.pick(tuple(PLACES)) if m == "place" else r.pick(adjs)})
        label = 1
    elif kind == "other":
        hyp = replace(ev, subj=r.pick([p for p in PEOPLE if p not in (ev.subj, ev.obj)]))
        label = 1
    elif kind == "negation":
        hyp = replace(ev, neg=True)
        if r.coin(0.3):
            ev, hyp = hyp, ev
        label = 2
    else:  # antonym
        hyp = replace(ev, verb=ANTONYMS[ev.verb])
        label = 2
    if kind != "synonym" and r.coin(0.25):
        hyp = _with_synonyms(r, hyp, at_least_one=False)
    if r.coin(0.5) and kind != "add":  # hypotheses tend to be short
        hyp = replace(hyp, subj_adj=None, obj_adj=None)
    heuristic = 0 if kind in MNLI_HARD else label
    return {"premise": render(ev), "hypothesis": render(hyp)}, kind, label, heuristic


# -- QNLI: question, sentence, label (0 entailment, 1 not_entailment) -------------------------

QNLI_KINDS = {"answer": 0.5, "verb": 0.15, "entity": 0.2, "noplace": 0.15}
QNLI_HARD = {"verb", "noplace"}


def _qnli(r: _Rng, genre: str) -> tuple[dict, str, Any, Any]:
    kind = r.kind(QNLI_KINDS)
    ev = _event(r, adj_p=0.3, place_p=0.5, past=False)
    ev = replace(ev, obj_det="the")
    qtype = "where" if kind == "noplace" else r.pick(("who", "what", "where"))
    s3, _, _ = VERB_FORMS[ev.verb]
    if qtype == "who":
        question = f"who {s3} the {ev.obj}"
    elif qtype == "what":
        question = f"what does the {ev.subj} {ev.verb}"
    else:
        question = f"where does the {ev.subj} {ev.verb} the {ev.obj}"
    fact = ev
    if kind == "answer":
        if qtype == "where":
            fact = replace(fact, place=fact.place or r.pick(tuple(PLACES)))
        if r.coin(0.3):
            fact = _with_synonyms(r, fact, at_least_one=False)
    elif kind == "verb":
        other = ANTONYMS.get(ev.verb) if r.coin(0.6) else None
        fact = replace(fact, verb=other or r.pick(THING_VERBS, exclude=ev.verb))
        if qtype == "where":
            fact = replace(fact, place=fact.place or r.pick(tuple(PLACES)))
    elif kind == "entity":
        if qtype == "who":
            fact = replace(fact, obj=r.pick(THINGS, exclude=ev.obj))
        else:
            fact = replace(fact, subj=r.pick(PEOPLE, exclude=ev.subj))
        if qtype == "where":
            fact = replace(fact, place=fact.place or r.pick(tuple(PLACES)))
    else:  # noplace: a where-question the sentence cannot answer
        fact = replace(fact, place=None)
    label = int(kind != "answer")
    heuristic = 0 if kind in QNLI_HARD else label
    return (
        {"question": sentence(question.split(), "?"), "sentence": render(fact)},
        kind,
        label,
        heuristic,
    )


# -- RTE: sentence1, sentence2, label (0 entailment, 1 not_entailment) ------------------------

RTE_KINDS = {
    "conj_subj": 0.16,
    "conj_obj": 0.16,
    "rel_true": 0.18,
    "rel_false": 0.15,
    "or": 0.13,
    "negation": 0.12,
    "modal": 0.10,
}
RTE_HARD = {"rel_false", "or"}


def _rte(r: _Rng, genre: str) -> tuple[dict, str, Any, Any]:
    kind = r.kind(RTE_KINDS)
    ev = _event(r, adj_p=0.2, place_p=0.3, past=r.coin(0.3))
    ev = replace(ev, obj_det="a")
    other_person = r.pick([p for p in PEOPLE if p != ev.subj])
    other_thing = r.pick(THINGS, exclude=ev.obj)
    if kind == "conj_subj":
        plural = replace(ev, subj_adj=None, subj_pl=True)
        words = render_words(plural)
        # "the teachers buy" -> "the teacher and the doctor buy"
        words[1:2] = [ev.subj, "and", "the", other_person]
        text = sentence(words)
        hyp = replace(ev, subj=r.pick((ev.subj, other_person)), subj_adj=None)
    elif kind in ("conj_obj", "or"):
        words = render_words(replace(ev, place=None))
        conj = "and" if kind == "conj_obj" else "or"
        words += [conj, _article(other_thing), other_thing] + _place(ev.place)
        text = sentence(words)
        hyp = replace(ev, obj=r.pick((ev.obj, other_thing)), obj_adj=None)
    elif kind in ("rel_true", "rel_false"):
        inner_verb = r.pick(PERSON_VERBS)
        inner = Event(subj=ev.subj, verb=inner_verb, obj=other_person, obj_det="the", past=ev.past)
        rel = render_words(inner)[2:]  # "helps the doctor"
        words = render_words(replace(ev, subj_adj=None))
        text = sentence(words[:2] + ["who"] + rel + words[2:])
        if kind == "rel_true":
            hyp = r.pick((replace(ev, subj_adj=None), inner))
        else:  # the object of the relative clause is not the one who acts
            hyp = replace(ev, subj=other_person, subj_adj=None)
    elif kind == "negation":
        text = render(replace(ev, neg=True))
        hyp = ev
    else:  # modal: "wants to buy" does not entail "buys"
        words = render_words(replace(ev, past=False, place=None))
        i = 2 + (1 if ev.subj_adj else 0)
        words[i] = r.pick(MODALS) + " to " + ev.verb
        text = sentence(" ".join(words + _place(ev.place)).split())
        hyp = replace(ev, past=False)
    if r.coin(0.25):
        hyp = _with_synonyms(r, hyp, at_least_one=False)
    label = int(kind not in ("conj_subj", "conj_obj", "rel_true"))
    heuristic = 0 if kind in RTE_HARD else label
    return {"sentence1": text, "sentence2": render(hyp)}, kind, label, heuristic


# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    """Columns, label names (``None``: regression) and generator of one task."""

    columns: tuple[str, ...]
    label_names: tuple[str, ...] | None
    kinds: dict[str, float]
    hard_kinds: frozenset[str]
    generate: Callable[[_Rng, str], tuple[dict, str, Any, Any]]
    splits: tuple[str, ...] = ("train", "validation")


SPECS: dict[str, TaskSpec] = {
    "cola": TaskSpec(
        ("sentence",), ("unacceptable", "acceptable"), COLA_KINDS, frozenset(COLA_HARD), _cola
    ),
    "mnli": TaskSpec(
        ("premise", "hypothesis"),
        ("entailment", "neutral", "contradiction"),
        MNLI_KINDS,
        frozenset(MNLI_HARD),
        _mnli,
        ("train", "validation_matched", "validation_mismatched"),
    ),
    "mrpc": TaskSpec(
        ("sentence1", "sentence2"),
        ("not_equivalent", "equivalent"),
        MRPC_KINDS,
        frozenset(MRPC_HARD),
        _mrpc,
    ),
    "qnli": TaskSpec(
        ("question", "sentence"),
        ("entailment", "not_entailment"),
        QNLI_KINDS,
        frozenset(QNLI_HARD),
        _qnli,
    ),
    "qqp": TaskSpec(
        ("question1", "question2"),
        ("not_duplicate", "duplicate"),
        QQP_KINDS,
        frozenset(QQP_HARD),
        _qqp,
    ),
    "rte": TaskSpec(
        ("sentence1", "sentence2"),
        ("entailment", "not_entailment"),
        RTE_KINDS,
        frozenset(RTE_HARD),
        _rte,
    ),
    "sst2": TaskSpec(
        ("sentence",), ("negative", "positive"), SST2_KINDS, frozenset(SST2_HARD), _sst2
    ),
    "stsb": TaskSpec(("sentence1", "sentence2"), None, STSB_KINDS, frozenset(STSB_HARD), _stsb),
}
"""Every task's specification, in :data:`TASK_NAMES` order."""


@dataclass(frozen=True)
class Example:
    """One generated example.

    Attributes:
        row: the dataset row without ``idx`` (GLUE's text columns and ``label``).
        kind: the phenomenon it tests (a key of the task's ``kinds``).
        heuristic_label: the label a shallow surface heuristic gives; equals ``row["label"]``
            except on the task's hard kinds (see the module docstring).
    """

    row: dict
    kind: str
    heuristic_label: int | float


def _stream(task: str, split: str, seed: int) -> _Rng:
    return _Rng([seed, zlib.crc32(task.encode()), zlib.crc32(split.encode())])


def generate(task: str, split: str, n: int, seed: int = 0) -> list[Example]:
    """``n`` examples of ``task``'s ``split``, deterministic for ``(task, split, n, seed)``.

    Raises:
        KeyError: unknown task or split.
    """
    spec = SPECS[task]
    if split not in spec.splits:
        raise KeyError(f"task {task!r} has no split {split!r}; splits: {spec.splits}")
    genre = "mismatched" if split == "validation_mismatched" else "matched"
    r = _stream(task, split, seed)
    out = []
    for _ in range(n):
        text, kind, label, heuristic = spec.generate(r, genre)
        out.append(Example({**text, "label": label}, kind, heuristic))
    return out


def features(task: str):
    """``datasets.Features`` of ``task`` exactly as in ``nyu-mll/glue``."""
    import datasets

    spec = SPECS[task]
    cols = {c: datasets.Value("string") for c in spec.columns}
    if spec.label_names is None:
        cols["label"] = datasets.Value("float32")
    else:
        cols["label"] = datasets.ClassLabel(names=list(spec.label_names))
    cols["idx"] = datasets.Value("int32")
    return datasets.Features(cols)
