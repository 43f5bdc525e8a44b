"""Captions of a shape scene, and the caption parser behind the hallucination metric.

``captions(scene, rng)`` gives 5 different references: the first is canonical ("there is a
large red circle, a small blue square and a green star"); the others vary wording, object
order, grouping with counts ("two red circles"), sizes and relations ("to the left of",
"above", "on the right"). Every caption has at most MAX_CAPTION_WORDS words: crowded scenes
mention only their most salient groups. Every mentioned object is present, every count is
exact for its description and every relation holds with a margin (see ``relation_margin``).

``mentioned_objects(caption)`` turns any caption (generated or reference) into the (color,
shape) pairs it mentions, so a metric can check them against ``present_objects``;
``object_mentions(tokens)`` finds where each shape noun phrase is, for grounding its words.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mmapp.data.shapes.scene import COLORS, SHAPES, SIZES, Scene
from mmapp.errors import DataError

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six")
MAX_CAPTION_WORDS = 20
CAPTIONS_PER_IMAGE = 5
_PREFIXES = ("an image of ", "a picture of ", "a scene with ", "a drawing of ")
_GENERIC_NOUNS = ("object", "objects", "shape", "shapes", "thing", "things", "one", "ones")


def relation_margin(scene: Scene, a: int, b: int) -> float:
    """Centres must differ by more than this (pixels) along an axis for a left/right or
    above/below relation between objects a and b: 20 px at 224, or half their summed radii."""
    oa, ob = scene.objects[a], scene.objects[b]
    return max(20.0 * scene.size / 224.0, 0.5 * (oa.radius + ob.radius))


def relation_holds(scene: Scene, a: int, b: int, relation: str) -> bool:
    """Whether object a is clearly ``relation`` ("left", "right", "above", "below") of b."""
    (ax, ay), (bx, by) = scene.objects[a].center, scene.objects[b].center
    m = relation_margin(scene, a, b)
    return {"left": bx - ax, "right": ax - bx, "above": by - ay, "below": ay - by}[relation] > m


@dataclass(frozen=True)
class _Group:
    """Objects sharing (size?, color, shape); ``size`` None when the caption omits sizes."""

    members: tuple[int, ...]
    size: str | None
    color: str
    shape: str

    def phrase(self, article: str = "a") -> str:
        words = [w for w in (self.size, self.color) if w]
        n = len(self.members)
        if n == 1:
            head = "an" if article == "a" and words[0][0] in "aeiou" else article
            return " ".join([head, *words, self.shape])
        return " ".join([NUMBER_WORDS[n], *words, self.shape + "s"])


def _groups(scene: Scene, with_size: bool) -> list[_Group]:
    keys: dict[tuple, list[int]] = {}
    for i, o in enumerate(scene.objects):
        keys.setdefault((o.size if with_size else None, o.color, o.shape), []).append(i)
    return [_Group(tuple(m), *k) for k, m in keys.items()]


def _salience(scene: Scene, g: _Group) -> float:
    return sum(scene.objects[i].radius for i in g.members)


def _mean_x(scene: Scene, g: _Group) -> float:
    return float(np.mean([scene.objects[i].center[0] for i in g.members]))


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _fits(text: str) -> bool:
    return len(text.split()) <= MAX_CAPTION_WORDS


def _salient(scene: Scene, groups: list[_Group], k: int = 4) -> list[_Group]:
    return sorted(groups, key=lambda g: -_salience(scene, g))[:k]


def _listing(scene: Scene, groups: list[_Group], prefix: str, budget: int = 4) -> str | None:
    """prefix + "A, B and C" with the most salient groups that fit the word limit."""
    for k in range(min(budget, len(groups)), 0, -1):
        chosen = _salient(scene, groups, k)
        chosen.sort(key=lambda g: _mean_x(scene, g))
        text = prefix + _join([g.phrase() for g in chosen])
        if _fits(text):
            return text
    return None


def canonical_caption(scene: Scene) -> str:
    """"there is a large red circle, a small blue square and ..." (most salient groups, left to right)."""
    groups = _groups(scene, with_size=True)
    for k in range(min(4, len(groups)), 0, -1):
        chosen = sorted(_salient(scene, groups, k), key=lambda g: _mean_x(scene, g))
        verb = "there is " if len(chosen[0].members) == 1 else "there are "
        text = verb + _join([g.phrase() for g in chosen])
        if _fits(text):
            return text
    raise AssertionError("a single group always fits")


def _group_relation(scene: Scene, a: _Group, b: _Group, relation: str) -> bool:
    return all(relation_holds(scene, i, j, relation) for i in a.members for j in b.members)


def _relation_caption(scene: Scene, rng: np.random.Generator, axis: str) -> str | None:
    groups = _groups(scene, with_size=bool(rng.random() < 0.6))
    rels = ("left", "right") if axis == "x" else ("above", "below")
    pairs = [(a, b, r) for a in groups for b in groups if a is not b for r in rels
             if _group_relation(scene, a, b, r)]
    if not pairs:
        return None
    a, b, r = pairs[int(rng.integers(len(pairs)))]
    words = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
    text = f"{a.phrase()} {words[r]} {b.phrase()}"
    if rng.random() < 0.3:
        text = ("there is " if len(a.members) == 1 else "there are ") + text
    return text if _fits(text) else None


def _location(scene: Scene, g: _Group) -> str | None:
    third = scene.size / 3.0
    xs = [scene.objects[i].center[0] for i in g.members]
    ys = [scene.objects[i].center[1] for i in g.members]
    if max(xs) < third:
        return "on the left"
    if min(xs) > 2 * third:
        return "on the right"
    if max(ys) < third:
        return "at the top"
    if min(ys) > 2 * third:
        return "at the bottom"
    return None


def _location_caption(scene: Scene, rng: np.random.Generator) -> str | None:
    groups = _groups(scene, with_size=bool(rng.random() < 0.5))
    placed = [(g, loc) for g in groups if (loc := _location(scene, g))]
    if not placed:
        return None
    first = placed[int(rng.integers(len(placed)))]
    others = [p for p in placed if p[1] != first[1]]  # "x at the top and y at the top" reads badly
    chosen = [first] + ([others[int(rng.integers(len(others)))]] if others else [])
    text = " and ".join(f"{g.phrase()} {loc}" for g, loc in chosen)
    return text if _fits(text) else None


def _count_caption(scene: Scene, rng: np.random.Generator) -> str | None:
    n = len(scene.objects)
    groups = _groups(scene, with_size=bool(rng.random() < 0.5))
    if n == 1:
        return "a single " + groups[0].phrase().split(" ", 1)[1]
    if len(groups) == 1:
        return None  # "two shapes: two red stars"
    noun = "shapes" if rng.random() < 0.5 else "objects"
    if len(groups) <= 3:
        return _listing(scene, groups, f"{NUMBER_WORDS[n]} {noun}: ", budget=3)
    return _listing(scene, groups, f"{NUMBER_WORDS[n]} {noun} including ", budget=2)


def _shuffled_listing(scene: Scene, rng: np.random.Generator) -> str | None:
    groups = _groups(scene, with_size=bool(rng.random() < 0.4))
    chosen = _salient(scene, groups, 3)
    chosen = [chosen[i] for i in rng.permutation(len(chosen))]
    prefix = _PREFIXES[int(rng.integers(len(_PREFIXES)))]
    text = prefix + _join([g.phrase() for g in chosen])
    return text if _fits(text) else None


def captions(scene: Scene, rng: np.random.Generator) -> list[str]:
    """CAPTIONS_PER_IMAGE distinct captions; the first is ``canonical_caption(scene)``."""
    out = [canonical_caption(scene)]
    makers = [
        lambda: _relation_caption(scene, rng, "x"),
        lambda: _relation_caption(scene, rng, "y"),
        lambda: _count_caption(scene, rng),
        lambda: _location_caption(scene, rng),
        lambda: _shuffled_listing(scene, rng),
    ]
    for i in rng.permutation(len(makers)):
        text = makers[i]()
        if text and text not in out:
            out.append(text)
        if len(out) == CAPTIONS_PER_IMAGE:
            return out
    for with_size in (False, True):  # fallbacks: always enough distinct ones
        groups = _groups(scene, with_size)
        for prefix in ("", *_PREFIXES):
            text = _listing(scene, groups, prefix)
            if text and text not in out:
                out.append(text)
            if len(out) == CAPTIONS_PER_IMAGE:
                return out
    raise AssertionError("not enough distinct captions")


_COUNTS = {w: i for i, w in enumerate(NUMBER_WORDS)} | {"a": 1, "an": 1, "single": 1}
_SHAPE_WORDS = {s: s for s in SHAPES} | {s + "s": s for s in SHAPES}
_PLURALS = {s + "s" for s in SHAPES} | {"objects", "shapes", "things", "ones"}
_MODIFIERS = set(COLORS) | set(SIZES) | set(_COUNTS) | {str(i) for i in range(10)} | {"big", "little"}


def mentioned_objects(caption: str) -> list[tuple[str | None, str | None]]:
    """(color, shape) of each object a caption mentions, repeated by its count.

    "a large red circle to the left of two small blue squares" ->
    [("red", "circle"), ("blue", "square"), ("blue", "square")]. A noun phrase without a
    colour gives (None, shape); "two red objects" gives (("red", None),) * 2; a plural without
    a number counts 2; a phrase with neither colour nor shape ("three shapes") gives nothing.
    """
    tokens = re.findall(r"[a-z0-9]+", caption.lower())
    out: list[tuple[str | None, str | None]] = []
    for i, tok in enumerate(tokens):
        shape = _SHAPE_WORDS.get(tok)
        if shape is None and tok not in _GENERIC_NOUNS:
            continue
        j, color, count = i - 1, None, None
        while j >= 0 and tokens[j] in _MODIFIERS:
            t = tokens[j]
            if t in COLORS and color is None:
                color = t
            elif t.isdigit():
                count = int(t) if count is None else count
            elif t in _COUNTS and count is None:
                count = _COUNTS[t]
            j -= 1
        if shape is None and color is None:
            continue  # "three shapes", or "one" used as a number word
        if count is None:
            count = 2 if tok in _PLURALS else 1
        out.extend([(color, shape)] * count)
    return out


def load_present_objects(instances_file: str | Path) -> dict[int, list[tuple[str, str]]]:
    """image id -> (color, shape) of each object, from a shapes ``instances_<split>.json``."""
    path = Path(instances_file)
    data = json.loads(path.read_text())
    k = -1
    try:
        names = {c["id"]: c["name"] for c in data["categories"]}
        out: dict[int, list[tuple[str, str]]] = {int(im["id"]): [] for im in data["images"]}
        for k, ann in enumerate(data["annotations"]):
            out[int(ann["image_id"])].append((ann["color"], names[ann["category_id"]]))
    except (KeyError, TypeError) as e:
        raise DataError(f"{path}: not a shapes instances file (annotation #{k}: missing {e})") from None
    return out


def object_mentions(tokens: Sequence[str]) -> list[tuple[int, int, str | None, str, str | None]]:
    """(first word, shape word, colour, shape, size) of each shape noun phrase in a tokenised
    caption, positions indexing ``tokens``: "a small red circle" -> (1, 3, "red", "circle", "small");
    the phrase is the shape word and the colour/size words right before it."""
    out = []
    for t, word in enumerate(tokens):
        shape = _SHAPE_WORDS.get(word)
        if shape is None:
            continue
        colour = size = None
        j = t - 1
        while j >= 0 and (tokens[j] in COLORS or tokens[j] in SIZES):
            colour = colour or (tokens[j] if tokens[j] in COLORS else None)
            size = size or (tokens[j] if tokens[j] in SIZES else None)
            j -= 1
        out.append((j + 1, t, colour, shape, size))
    return out
