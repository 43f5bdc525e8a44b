"""Captions of shape scenes: 5 distinct, short, truthful (mentions, counts, relations, places)."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from mmapp.data.shapes.scene import COLORS, SHAPES, SIZES, Scene, present_objects, sample_scene
from mmapp.data.shapes.text import (CAPTIONS_PER_IMAGE, MAX_CAPTION_WORDS, NUMBER_WORDS,
                                    canonical_caption, captions, mentioned_objects,
                                    relation_holds)

_RELATIONS = {"to the left of": "left", "to the right of": "right", "above": "above", "below": "below"}
_PLACES = ("on the left", "on the right", "at the top", "at the bottom")


@pytest.fixture(scope="module")
def scene_captions():
    rng = np.random.default_rng(11)
    out = []
    for _ in range(300):
        scene = sample_scene(rng)
        out.append((scene, captions(scene, rng)))
    return out


def _described(scene: Scene, phrase: str) -> tuple[int | None, list[int]]:
    """(stated count, indices of the objects matching the size/colour/shape words)."""
    words = phrase.split()
    count = 1 if words[0] in ("a", "an", "single") else NUMBER_WORDS.index(words[0])
    size = next((w for w in words if w in SIZES), None)
    color = next(w for w in words if w in COLORS)
    shape = next(w.rstrip("s") for w in words if w.rstrip("s") in SHAPES)
    ids = [i for i, o in enumerate(scene.objects) if o.color == color and o.shape == shape
           and (size is None or o.size == size)]
    return count, ids


def _phrases(text: str) -> list[str]:
    """Noun phrases of a caption: split on list separators, relation and place words."""
    text = re.sub(r"^(there is|there are|an image of|a picture of|a scene with|a drawing of) ", "", text)
    text = re.sub(r"^\w+ (shapes|objects)(:| including) ", "", text)
    for sep in list(_RELATIONS) + list(_PLACES):
        text = text.replace(" " + sep, " |")
    parts = re.split(r", | and |\|", text)
    return [p.strip() for p in parts if p.strip()]


def test_five_distinct_short_captions_first_canonical(scene_captions):
    for scene, caps in scene_captions:
        assert len(caps) == CAPTIONS_PER_IMAGE == len(set(caps))
        assert caps[0] == canonical_caption(scene) and caps[0].startswith("there ")
        for c in caps:
            assert c == c.lower() and len(c.split()) <= MAX_CAPTION_WORDS and not c.endswith(".")
            if c.startswith("there "):  # agreement: "there is a/an ...", "there are two ..."
                assert re.match(r"there (is an? |are (two|three|four|five|six) )", c), c


def test_every_mentioned_object_is_present(scene_captions):
    mentions = 0
    for scene, caps in scene_captions:
        present = Counter(present_objects(scene))
        for c in caps:
            found = Counter(mentioned_objects(c))
            assert found, c
            for (color, shape), n in found.items():
                assert present[(color, shape)] >= n, (c, present_objects(scene))
            mentions += sum(found.values())
    assert mentions > 300 * 5


def test_stated_counts_are_exact(scene_captions):
    for scene, caps in scene_captions:
        for c in caps:
            for phrase in _phrases(c):
                count, ids = _described(scene, phrase)
                assert count == len(ids), (c, phrase, scene.objects)


def test_relations_and_places_hold(scene_captions):
    checked = Counter()
    for scene, caps in scene_captions:
        third = scene.size / 3
        for c in caps:
            body = re.sub(r"^there (is|are) ", "", c)
            for words, rel in _RELATIONS.items():
                if f" {words} " in body:
                    left, right = body.split(f" {words} ")
                    _, a_ids = _described(scene, left)
                    _, b_ids = _described(scene, right)
                    assert all(relation_holds(scene, a, b, rel) for a in a_ids for b in b_ids), c
                    checked[rel] += 1
            for part in c.split(" and "):
                for place in _PLACES:
                    if part.endswith(place):
                        _, ids = _described(scene, part[: -len(place)])
                        xs = [scene.objects[i].center[0] for i in ids]
                        ys = [scene.objects[i].center[1] for i in ids]
                        ok = {"on the left": max(xs) < third, "on the right": min(xs) > 2 * third,
                              "at the top": max(ys) < third, "at the bottom": min(ys) > 2 * third}
                        assert ok[place], c
                        checked[place] += 1
    assert min(checked[r] for r in _RELATIONS.values()) > 10
    assert min(checked[p] for p in _PLACES) > 10


def test_captions_vary_in_wording(scene_captions):
    starts = Counter(c.split()[0] + " " + c.split()[1] for _, caps in scene_captions for c in caps[1:])
    assert len(starts) > 15
    assert any(" to the left of " in c for _, caps in scene_captions for c in caps)
    assert any(re.search(r"\b(two|three) \w+ \w+s\b", c) for _, caps in scene_captions for c in caps)


@pytest.mark.parametrize("caption, expected", [
    ("a large red circle to the left of two small blue squares",
     [("red", "circle"), ("blue", "square"), ("blue", "square")]),
    ("there is an orange star, a small white hexagon and three green diamonds",
     [("orange", "star"), ("white", "hexagon")] + [("green", "diamond")] * 3),
    ("two red objects and a triangle", [("red", None), ("red", None), (None, "triangle")]),
    ("five shapes including 2 purple circles", [("purple", "circle")] * 2),
    ("some yellow stars", [("yellow", "star")] * 2),
    ("a cyan one above a blue square", [("cyan", None), ("blue", "square")]),
    ("three shapes on a plain background", []),
    ("A Red Circle.", [("red", "circle")]),
])
def test_mentioned_objects(caption, expected):
    assert mentioned_objects(caption) == expected
