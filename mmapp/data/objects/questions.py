"""VQA questions about an object scene: every candidate per type, balanced by ``AnswerBalancer``.

Question types (VQA v2 answer types in brackets):
  object   "what is this?" / "what is in the picture?" (one object) -> noun          (other)
  kind     "what <kind> is this?" (one object), "what <kind> is there?" (the only one of
           its kind) -> noun; kind is the supercategory: animal, fruit, vehicle, ...  (other)
  count    "how many <plural> / <kinds> / objects are there?" -> 0..4               (number)
  exists   "is there a <noun>?" -> yes / no; most "no" are near misses: a noun of a kind
           that is in the scene                                                     (yes/no)
  position "is the <A> to the left of / to the right of / above / below the <B>?"    (yes/no)
  bigger   "which is bigger, the <A> or the <B>?" -> A or B (areas differ by 1.6x)   (other)
Referents are the only object of their noun in the scene. ``candidates`` lists every valid
question with its answer and the objects it is about.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from mmapp.data.objects.kinds import ObjectWords
from mmapp.data.objects.scene import ObjectScene
from mmapp.data.objects.text import article, relation_holds
from mmapp.data.question_balance import AnswerBalancer, Candidate, position_candidates

QUESTION_TYPES: tuple[str, ...] = ("object", "kind", "count", "exists", "position", "bigger")
ANSWER_TYPES: dict[str, str] = {"object": "other", "kind": "other", "count": "number", "exists": "yes/no",
                                "position": "yes/no", "bigger": "other"}
COUNT_TARGETS: dict[str, float] = {"0": 1.0, "1": 2.0, "2": 2.0, "3": 1.5, "4": 1.0}
BIGGER_RATIO = 1.6
NEAR_MISS_SHARE = 0.75


def _by_noun(scene: ObjectScene) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, o in enumerate(scene.objects):
        out.setdefault(o.noun, []).append(i)
    return out


def _what(scene: ObjectScene, rng: np.random.Generator) -> list[Candidate]:
    if len(scene.objects) != 1:
        return []
    text = ("what is this?", "what is in the picture?", "what is that?")[int(rng.integers(3))]
    return [Candidate("object", text, scene.objects[0].noun, (0,))]


def _kind(scene: ObjectScene) -> list[Candidate]:
    by_kind: dict[str, list[int]] = {}
    for i, o in enumerate(scene.objects):
        by_kind.setdefault(o.supercategory, []).append(i)
    out = []
    for kind, ids in by_kind.items():
        if len(ids) == 1:
            where = "is this" if len(scene.objects) == 1 else "is there"
            out.append(Candidate("kind", f"what {kind} {where}?", scene.objects[ids[0]].noun,
                                 (ids[0],)))
    return out


def _count(scene: ObjectScene, plurals: Mapping[str, str], kind_plurals: Mapping[str, str],
           nouns: Sequence[str], rng: np.random.Generator) -> list[Candidate]:
    def q(what: str, ids: list[int]) -> Candidate:
        return Candidate("count", f"how many {what} are there?", str(len(ids)), tuple(ids))

    by_noun = _by_noun(scene)
    out = [q("objects", list(range(len(scene.objects))))]
    out += [q(plurals[n], ids) for n, ids in by_noun.items()]
    for kind in sorted({o.supercategory for o in scene.objects}):
        out.append(q(kind_plurals[kind], [i for i, o in enumerate(scene.objects) if o.supercategory == kind]))
    absent = [n for n in nouns if n not in by_noun]
    if absent:  # a count of zero: something not in the picture
        out.append(q(plurals[absent[int(rng.integers(len(absent)))]], []))
    return out


def _exists(scene: ObjectScene, nouns_by_kind: Mapping[str, Sequence[str]], nouns: Sequence[str],
            rng: np.random.Generator) -> list[Candidate]:
    by_noun = _by_noun(scene)
    out = [Candidate("exists", f"is there {article(n)} {n}?", "yes", tuple(ids)) for n, ids in by_noun.items()]
    near = sorted({n for o in scene.objects for n in nouns_by_kind[o.supercategory] if n not in by_noun})
    if near:
        n = near[int(rng.integers(len(near)))]
        out.append(Candidate("exists", f"is there {article(n)} {n}?", "no", (), "near"))
    far = [n for n in nouns if n not in by_noun and n not in near]
    if far:
        n = far[int(rng.integers(len(far)))]
        out.append(Candidate("exists", f"is there {article(n)} {n}?", "no", (), "far"))
    return out


def _pairs(scene: ObjectScene) -> list[tuple[int, int]]:
    unique = [ids[0] for ids in _by_noun(scene).values() if len(ids) == 1]
    return [(a, b) for a in unique for b in unique if a != b]


def _position(scene: ObjectScene) -> list[Candidate]:
    unique = {ids[0]: noun for noun, ids in _by_noun(scene).items() if len(ids) == 1}
    return position_candidates(unique, lambda a, b, rel: relation_holds(scene, a, b, rel))


def _bigger(scene: ObjectScene) -> list[Candidate]:
    out = []
    for a, b in _pairs(scene):
        oa, ob = scene.objects[a], scene.objects[b]
        if oa.area >= BIGGER_RATIO * ob.area:
            text = f"which is bigger, the {oa.noun} or the {ob.noun}?"
            out += [Candidate("bigger", text, oa.noun, (a, b), "first"),
                    Candidate("bigger", f"which is bigger, the {ob.noun} or the {oa.noun}?", oa.noun, (a, b),
                              "second")]
    return out


def candidates(scene: ObjectScene, vocab: ObjectWords, rng: np.random.Generator) -> dict[str, list[Candidate]]:
    """Every valid question per type (types with none are absent)."""
    found = _what(scene, rng) + _kind(scene)
    found += _count(scene, vocab.plurals, vocab.kind_plurals, vocab.nouns, rng)
    found += _exists(scene, vocab.nouns_by_kind, vocab.nouns, rng) + _position(scene) + _bigger(scene)
    out: dict[str, list[Candidate]] = {}
    for c in found:
        out.setdefault(c.qtype, []).append(c)
    return out


def answer_balancer(nouns: Sequence[str]) -> AnswerBalancer:
    """Balanced answers: nouns uniform for object/kind/bigger, counts 1-2 favoured, yes = no."""
    uniform = {n: 1.0 for n in nouns}
    targets = {"object": uniform, "kind": uniform, "bigger": uniform, "count": COUNT_TARGETS,
               "exists": {"yes": 1.0, "no": 1.0}, "position": {"yes": 1.0, "no": 1.0}}
    return AnswerBalancer(targets, QUESTION_TYPES, NEAR_MISS_SHARE)
