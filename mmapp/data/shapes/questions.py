"""VQA questions about a shape scene: every candidate per type, and a balancer that picks one.

Question types (our own; VQA v2 answer types in brackets):
  color    "what color is the <size?> <shape>?"                      (other)   unique referent
  shape    "what shape is the <size?> <color> object?"               (other)   unique referent
  size     "what size is the <color?> <shape>?" -> small / large     (other)   unique referent
  count    "how many [<color>] <shapes>|objects are there?" -> 0..6  (number)
  exists   "is there a <color> <shape>?" -> yes / no                 (yes/no)  "no" often a near miss
  position "is the <A> to the left of / to the right of / above / below the <B>?"  (yes/no)
Referents are unique descriptions; position needs centres apart by ``relation_margin`` in the
asked direction (a "no" is the clear opposite, never a tie). ``candidates(scene)`` lists every
valid question of each type with its answer; ``AnswerBalancer`` then picks, image after image,
the answer that is furthest below its target share, so answer distributions stay near-uniform
(count: 1-4 favoured, 0/5/6 half as often) and a prior cannot score well.
"""

from __future__ import annotations

import numpy as np

from mmapp.data.question_balance import AnswerBalancer, Candidate, position_candidates
from mmapp.data.shapes.scene import COLORS, SHAPES, SIZES, Scene
from mmapp.data.shapes.text import relation_holds

QUESTION_TYPES: tuple[str, ...] = ("color", "shape", "count", "exists", "position", "size")
ANSWER_TYPES: dict[str, str] = {"color": "other", "shape": "other", "size": "other",
                                "count": "number", "exists": "yes/no", "position": "yes/no"}
TARGETS: dict[str, dict[str, float]] = {
    "color": {c: 1.0 for c in COLORS},
    "shape": {s: 1.0 for s in SHAPES},
    "size": {s: 1.0 for s in SIZES},
    "count": {"0": 1.0, "1": 2.0, "2": 2.0, "3": 2.0, "4": 2.0, "5": 1.0, "6": 1.0},
    "exists": {"yes": 1.0, "no": 1.0},
    "position": {"yes": 1.0, "no": 1.0},
}
NEAR_MISS_SHARE = 0.75  # of "no" exists questions: a present colour or shape, wrong pairing


class _Lookup:
    """Object indices by any combination of shape / color / size, built once per scene."""

    def __init__(self, scene: Scene):
        self.scene = scene
        self._table: dict[tuple, list[int]] = {}
        for i, o in enumerate(scene.objects):
            for mask in range(1, 8):
                key = tuple((k, getattr(o, k)) for b, k in enumerate(("color", "shape", "size")) if mask >> b & 1)
                self._table.setdefault(key, []).append(i)

    def find(self, **attrs: str) -> list[int]:
        """Indices of the objects with all the given attribute values."""
        key = tuple((k, attrs[k]) for k in ("color", "shape", "size") if k in attrs)
        return self._table.get(key, [])


def _unique_ref(look: _Lookup, i: int, *options: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The attribute tuples among ``options`` that single out object i."""
    o = look.scene.objects[i]
    return [keys for keys in options if look.find(**{k: getattr(o, k) for k in keys}) == [i]]


def _words(scene: Scene, i: int, keys: tuple[str, ...], noun: str | None = None) -> str:
    o = scene.objects[i]
    order = [k for k in ("size", "color", "shape") if k in keys]
    words = [getattr(o, k) for k in order]
    return " ".join(words + ([noun] if noun else []))


def _attribute_questions(look: _Lookup) -> list[Candidate]:
    scene = look.scene
    out = []
    for i, o in enumerate(scene.objects):
        for keys in _unique_ref(look, i, ("shape",), ("size", "shape")):
            out.append(Candidate("color", f"what color is the {_words(scene, i, keys)}?", o.color, (i,)))
        for keys in _unique_ref(look, i, ("color",), ("size", "color")):
            out.append(Candidate("shape", f"what shape is the {_words(scene, i, keys, 'object')}?",
                                 o.shape, (i,)))
        for keys in _unique_ref(look, i, ("shape",), ("color", "shape")):
            out.append(Candidate("size", f"what size is the {_words(scene, i, keys)}?", o.size, (i,)))
    return out


def _count_questions(look: _Lookup) -> list[Candidate]:
    scene = look.scene
    def q(text: str, ids: list[int]) -> Candidate:
        return Candidate("count", f"how many {text} are there?", str(len(ids)), tuple(ids))

    out = [q("objects", list(range(len(scene.objects))))]
    out += [q(s + "s", look.find(shape=s)) for s in SHAPES]
    out += [q(c + " objects", look.find(color=c)) for c in COLORS]
    out += [q(f"{c} {s}s", look.find(color=c, shape=s)) for c in COLORS for s in SHAPES]
    return out


def _exists_questions(look: _Lookup) -> list[Candidate]:
    scene = look.scene
    colors = {o.color for o in scene.objects}
    shapes = {o.shape for o in scene.objects}
    out = []
    for c in COLORS:
        for s in SHAPES:
            ids = look.find(color=c, shape=s)
            article = "an" if c[0] in "aeiou" else "a"
            text = f"is there {article} {c} {s}?"
            if ids:
                out.append(Candidate("exists", text, "yes", tuple(ids)))
            else:
                near = c in colors or s in shapes
                out.append(Candidate("exists", text, "no", (), "near" if near else "far"))
    return out


def _position_questions(look: _Lookup, rng: np.random.Generator) -> list[Candidate]:
    scene = look.scene
    refs = {}
    for i in range(len(scene.objects)):
        options = _unique_ref(look, i, ("shape",), ("color", "shape"), ("size", "color", "shape"))
        if options:  # a bare shape only sometimes, so most questions name the colour too
            add_color = options[0] == ("shape",) and len(options) > 1 and rng.random() < 0.7
            refs[i] = _words(scene, i, options[1] if add_color else options[0])
    return position_candidates(refs, lambda a, b, rel: relation_holds(scene, a, b, rel))


def candidates(scene: Scene, rng: np.random.Generator) -> dict[str, list[Candidate]]:
    """Every valid question per type (types with none are absent)."""
    look = _Lookup(scene)
    found = _attribute_questions(look) + _count_questions(look) + _exists_questions(look)
    found += _position_questions(look, rng)
    out: dict[str, list[Candidate]] = {}
    for c in found:
        out.setdefault(c.qtype, []).append(c)
    return out


def answer_balancer() -> AnswerBalancer:
    """A balancer with the shapes targets, asking the types in QUESTION_TYPES order."""
    return AnswerBalancer(TARGETS, QUESTION_TYPES, NEAR_MISS_SHARE)
