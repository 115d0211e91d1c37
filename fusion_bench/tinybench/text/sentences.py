"""Sentences about events -- "the (adj) <person> <verb> a (adj) <thing|person> (<prep> the
<place>)" -- and the random draws the task generators share (:mod:`.glue_tasks`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fusion_bench.tinybench.text.lexicon import (
    NOUN_PLURAL,
    PEOPLE,
    PERSON_ADJS,
    PERSON_VERBS,
    PLACES,
    SYNONYMS,
    THING_ADJS,
    THING_VERBS,
    THINGS,
    VERB_FORMS,
)


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


def article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def slot_word(ev: Event, slot: str) -> str | None:
    lemma = getattr(ev, slot)
    if lemma is None:
        return None
    return SYNONYMS.get(lemma, lemma) if slot in ev.syn else lemma


def noun_phrase(det: str, adj: str | None, noun: str, plural: bool = False) -> list[str]:
    words = ([adj] if adj else []) + [NOUN_PLURAL[noun] if plural else noun]
    if det == "a":
        return [] if plural else [article(words[0])] + words
    return [det] + words


def place_words(place: str | None) -> list[str]:
    return [PLACES[place], "the", place] if place else []


def render_words(ev: Event, *, agreement_error: bool = False) -> list[str]:
    """The words of ``ev`` (lower case, no punctuation).

    ``agreement_error`` writes the verb in a form that does not agree with its subject or
    auxiliary (``the teacher buy``, ``does not buys``, ``was buy``): CoLA's morphology errors.
    """
    subj = noun_phrase("the", slot_word(ev, "subj_adj"), slot_word(ev, "subj"), ev.subj_pl)
    obj = noun_phrase(ev.obj_det, slot_word(ev, "obj_adj"), slot_word(ev, "obj"))
    verb = slot_word(ev, "verb")
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
        return place_words(ev.place) + words
    return words + place_words(ev.place)


def sentence(words: Sequence[str], end: str = ".") -> str:
    """``["the", "teacher", ...]`` -> ``"The teacher ... ."`` (capitalised, punctuation attached)."""
    text = " ".join(words)
    return text[:1].upper() + text[1:] + end


def render(ev: Event, **kwargs: Any) -> str:
    """``ev`` as a capitalised sentence ending with a full stop."""
    return sentence(render_words(ev, **kwargs))


class Rng:
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


def random_event(
    r: Rng,
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


def synonymisable(ev: Event) -> list[str]:
    return [s for s in ("subj", "verb", "obj", "subj_adj", "obj_adj") if getattr(ev, s) in SYNONYMS]


def with_synonyms(r: Rng, ev: Event, at_least_one: bool = True) -> Event:
    slots = synonymisable(ev)
    if not slots:
        return ev
    chosen = frozenset(s for s in slots if r.coin(0.6))
    if at_least_one and not chosen:
        chosen = frozenset([r.pick(slots)])
    return replace(ev, syn=chosen)


def force_synonymisable(r: Rng, ev: Event) -> Event:
    if synonymisable(ev):
        return ev
    verbs = PERSON_VERBS if ev.obj in PEOPLE else THING_VERBS
    return replace(ev, verb=r.pick([v for v in verbs if v in SYNONYMS]))
