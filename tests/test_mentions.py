"""The dataset-neutral caption parser (data/mentions.py): on shapes captions it finds exactly what
the shapes parser finds; on object captions it names categories, kinds and plurals."""

from __future__ import annotations

import json

import numpy as np

from mmapp.data.mentions import Lexicon, SceneObject, load_scene_objects, present_keys
from mmapp.data.shapes.scene import COLORS, SHAPES, SIZES, sample_scene
from mmapp.data.shapes.text import captions, mentioned_objects, object_mentions
from mmapp.metrics.hallucination import chair
from mmapp.vocab import tokenize

SHAPES_LEXICON = Lexicon([(s, None, "shape") for s in SHAPES], {"color": COLORS, "size": SIZES})


def _shape_captions(n: int = 150) -> list[str]:
    rng = np.random.default_rng(7)
    out = []
    for _ in range(n):
        out += captions(sample_scene(rng), rng)
    return out + ["two red objects and three shapes", "a small one", "one large blue thing", "four circles"]


def test_shapes_captions_give_the_shapes_parsers_mentions():
    for caption in _shape_captions():
        words = tokenize(caption)
        old = [(first, t, colour, shape, size) for first, t, colour, shape, size in object_mentions(words)]
        new = [(m.first, m.last, dict(m.attributes).get("color"), m.category, dict(m.attributes).get("size"))
               for m in SHAPES_LEXICON.mentions(words) if m.category is not None]
        assert new == old, caption
        old_keys = list(dict.fromkeys((c, s, None) for c, s in mentioned_objects(caption)))
        assert list(dict.fromkeys(SHAPES_LEXICON.chair_keys(caption))) == old_keys, caption


LEX = Lexicon([("cat", None, "animal"), ("polar bear", None, "animal"), ("mouse", "mice", "animal"),
               ("apple", None, "fruit"), ("shirt", None, "clothing")])


def test_object_captions_name_categories_kinds_and_plurals():
    ms = LEX.mentions(tokenize("a polar bear to the left of two mice and three apples"))
    assert [(m.category, m.count, m.first, m.last) for m in ms] == [("polar bear", 1, 1, 2), ("mouse", 2, 8, 8),
                                                                    ("apple", 3, 11, 11)]
    kinds = LEX.mentions(tokenize("a photo of two animals and a piece of clothing"))
    assert [(m.category, m.supercategory, m.count) for m in kinds] == [(None, "animal", 2), (None, "clothing", 1)]
    assert LEX.mentions(tokenize("a bear")) == []  # "bear" alone is not a class here


def test_a_colour_that_is_also_a_noun_is_an_adjective_before_a_noun():
    lex = Lexicon([("circle", None, "shape"), ("orange", None, "fruit")], {"color": ["orange", "red"]})
    assert [m.key for m in lex.mentions(tokenize("an orange circle and an orange"))] == [
        ("orange", "circle", None), (None, "orange", None)]


def test_chair_on_objects_counts_a_wrong_noun_and_accepts_its_kind():
    cat = SceneObject(1, "cat", "animal", (), (0, 0, 10, 10))
    present = present_keys({1: [cat]})
    out = chair({1: "a cat and an apple"}, present, LEX.chair_keys)
    assert (out["num_mentions"], out["num_hallucinated"]) == (2, 1)
    assert chair({1: "a photo of an animal, a cat"}, present, LEX.chair_keys)["num_hallucinated"] == 0
    assert chair({1: "a fruit"}, present, LEX.chair_keys)["num_hallucinated"] == 1


def test_load_scene_objects_reads_plurals_and_attributes(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({
        "images": [{"id": 5, "width": 100, "height": 80}],
        "categories": [{"id": 1, "name": "mouse", "plural": "mice", "supercategory": "animal"},
                       {"id": 2, "name": "circle", "supercategory": "shape"}],
        "annotations": [{"id": 50, "image_id": 5, "category_id": 1, "bbox": [0, 0, 5, 5]},
                        {"id": 51, "image_id": 5, "category_id": 2, "bbox": [9, 9, 5, 5], "color": "red"}]}))
    lexicon, objects, sizes = load_scene_objects(path)
    assert sizes == {5: (100, 80)}
    assert [o.key for o in objects[5]] == [(None, "mouse", "animal"), ("red", "circle", "shape")]
    assert [m.category for m in lexicon.mentions(["two", "mice", "and", "a", "red", "circle"])] == ["mouse", "circle"]
    assert lexicon.mentions(["three", "shapes"]) == []  # the generic "shape" names nothing by itself
