"""The 8 procedural GLUE task generators. Each returns ``(text columns, kind, label, heuristic
label)`` for one example (see :mod:`fusion_bench.tinybench.text.data`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from fusion_bench.tinybench.text.lexicon import (
    ANTONYMS,
    INTENSIFIERS,
    MODALS,
    NEGATIVE,
    NOUN_PLURAL,
    PEOPLE,
    PERSON_ADJS,
    PERSON_VERBS,
    PLACES,
    POSITIVE,
    QQP_INTENTS,
    SST2_CONTRAST,
    SST2_NEGATED,
    SST2_PLAIN,
    SYNONYMS,
    THING_ADJS,
    THING_VERBS,
    THINGS,
    TOPICS,
    VERB_FORMS,
)
from fusion_bench.tinybench.text.sentences import (
    Event,
    Rng,
    article,
    force_synonymisable,
    place_words,
    random_event,
    render,
    render_words,
    sentence,
    with_synonyms,
)

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


def generate_cola(r: Rng, genre: str) -> tuple[dict, str, Any, Any]:
    kind = r.kind(COLA_KINDS)
    person_obj = r.coin(0.3)
    ev = random_event(r, person_obj=person_obj, plural_p=0.4)
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


def generate_sst2(r: Rng, genre: str) -> tuple[dict, str, Any, Any]:
    kind = r.kind(SST2_KINDS)
    positive = r.coin()
    adj = r.pick(POSITIVE if positive else NEGATIVE)
    other = r.pick(NEGATIVE if positive else POSITIVE)
    topic = r.pick(TOPICS)
    inten = (r.pick(INTENSIFIERS) + " ") if r.coin(0.3) else ""
    person = "the " + r.pick(PEOPLE + tuple(NOUN_PLURAL[p] for p in PEOPLE))
    if kind == "plain":
        frame, label, heuristic = r.pick(SST2_PLAIN), int(positive), int(positive)
        first = (inten + adj).split()[0]
    elif kind == "negated":
        frame, label, heuristic = r.pick(SST2_NEGATED), int(not positive), int(positive)
        first, inten = adj, ""
    else:  # "X but Y": the clause after "but" decides
        frame, label, heuristic = r.pick(SST2_CONTRAST), int(not positive), int(positive)
        first = adj
    text = frame.format(
        t=topic,
        t2=r.pick(TOPICS, exclude=topic),
        i=inten,
        a=adj,
        b=other,
        p=person,
        art=article(first),
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


def generate_mrpc(r: Rng, genre: str) -> tuple[dict, str, Any, Any]:
    kind = r.kind(MRPC_KINDS)
    ev = random_event(r, person_obj=kind == "swap" or r.coin(0.25), adj_p=0.3, place_p=0.4)
    ev = replace(ev, neg=r.coin(0.15))
    if kind == "synonym":
        ev = force_synonymisable(r, ev)
        ev2 = with_synonyms(r, ev)
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
        ev2 = with_synonyms(r, ev2, at_least_one=False)
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
        np=" ".join([article(words[0])] + words),
        nps=" ".join(words[:-1] + [NOUN_PLURAL[thing]]),
    )
    return text[:1].upper() + text[1:] + "?"


def generate_qqp(r: Rng, genre: str) -> tuple[dict, str, Any, Any]:
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


def generate_stsb(r: Rng, genre: str) -> tuple[dict, str, Any, Any]:
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


def generate_mnli(r: Rng, genre: str) -> tuple[dict, str, Any, Any]:
    kind = r.kind(MNLI_KINDS)
    past = genre == "mismatched"
    ev = random_event(
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
        ev = force_synonymisable(r, ev)
        hyp = with_synonyms(r, ev)
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
        hyp = with_synonyms(r, hyp, at_least_one=False)
    if r.coin(0.5) and kind != "add":  # hypotheses tend to be short
        hyp = replace(hyp, subj_adj=None, obj_adj=None)
    heuristic = 0 if kind in MNLI_HARD else label
    return {"premise": render(ev), "hypothesis": render(hyp)}, kind, label, heuristic


# -- QNLI: question, sentence, label (0 entailment, 1 not_entailment) -------------------------

QNLI_KINDS = {"answer": 0.5, "verb": 0.15, "entity": 0.2, "noplace": 0.15}
QNLI_HARD = {"verb", "noplace"}


def generate_qnli(r: Rng, genre: str) -> tuple[dict, str, Any, Any]:
    kind = r.kind(QNLI_KINDS)
    ev = random_event(r, adj_p=0.3, place_p=0.5, past=False)
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
            fact = with_synonyms(r, fact, at_least_one=False)
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


def generate_rte(r: Rng, genre: str) -> tuple[dict, str, Any, Any]:
    kind = r.kind(RTE_KINDS)
    ev = random_event(r, adj_p=0.2, place_p=0.3, past=r.coin(0.3))
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
        words += [conj, article(other_thing), other_thing] + place_words(ev.place)
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
        text = sentence(" ".join(words + place_words(ev.place)).split())
        hyp = replace(ev, past=False)
    if r.coin(0.25):
        hyp = with_synonyms(r, hyp, at_least_one=False)
    label = int(kind not in ("conj_subj", "conj_obj", "rel_true"))
    heuristic = 0 if kind in RTE_HARD else label
    return {"sentence1": text, "sentence2": render(hyp)}, kind, label, heuristic
