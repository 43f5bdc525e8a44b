"""CHAIR-i / CHAIR-s on hand-made captions."""

from __future__ import annotations

import pytest

from mmapp.errors import DataError
from mmapp.metrics.hallucination import MentionExtractor, chair, plural, shapes_extractor


def test_plural() -> None:
    assert [plural(w) for w in ("circle", "box", "pony", "toy", "bus")] == ["circles", "boxes", "ponies", "toys", "buses"]


def test_coco_style_chair() -> None:
    ext = MentionExtractor(words={"dog": "dog", "puppy": "dog", "cat": "cat", "sofa": "couch", "couch": "couch"},
                           phrases={"hot dog": "hot dog", "teddy bear": "teddy bear"})
    captions = {1: "A puppy and two cats on a sofa.",       # dog, cat, couch: cat absent
                2: "A man eating a hot dog.",               # hot dog (not dog): present
                3: "Dogs chasing a dog and a teddy bear."}  # dog once (no repeats), teddy bear absent
    present = {1: {"dog", "couch"}, 2: {"hot dog", "person"}, 3: {"dog"}}
    out = chair(captions, present, ext)
    assert [c["mentioned"] for c in out["per_caption"]] == [["dog", "cat", "couch"], ["hot dog"], ["dog", "teddy bear"]]
    assert [c["hallucinated"] for c in out["per_caption"]] == [["cat"], [], ["teddy bear"]]
    assert out["chair_i"] == pytest.approx(2 / 6) and out["chair_s"] == pytest.approx(2 / 3)
    assert chair(captions, present, ext, count_repeats=True)["num_mentions"] == 7


def test_shapes_chair_with_plurals_and_bare_shapes() -> None:
    ext = shapes_extractor(["red", "green", "blue"], ["circle", "square", "triangle"])
    captions = {1: "two red circles and a blue square",   # (red, circle), (blue, square)
                2: "a green triangle left of a circle",   # (green, triangle), (None, circle)
                3: "a square above a red triangle"}       # (None, square), (red, triangle)
    present = {1: {("red", "circle"), ("green", "square")},
               2: {("green", "triangle"), ("blue", "circle")},
               3: {("blue", "triangle")}}
    out = chair(captions, present, ext)
    assert out["per_caption"][0]["mentioned"] == [("red", "circle"), ("blue", "square")]
    assert [c["hallucinated"] for c in out["per_caption"]] == [
        [("blue", "square")], [], [(None, "square"), ("red", "triangle")]]
    assert out["chair_i"] == pytest.approx(3 / 6) and out["chair_s"] == pytest.approx(2 / 3)
    # any caption -> categories function works as the extractor too
    assert chair(captions, present, ext.mentions) == out


def test_no_mentions_and_missing_image() -> None:
    ext = MentionExtractor(words={"dog": "dog"})
    out = chair({1: "nothing to see here"}, {1: set()}, ext)
    assert out["chair_i"] is None and out["chair_s"] == 0.0
    with pytest.raises(DataError, match="no list of present objects"):
        chair({2: "a dog"}, {1: {"dog"}}, ext)
