"""Questions of shape scenes: answers recomputed from the scene, balance, near misses."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from mmapp.data.question_balance import one_per_answer
from mmapp.data.shapes.questions import ANSWER_TYPES, QUESTION_TYPES, answer_balancer, candidates
from mmapp.data.shapes.scene import COLORS, SHAPES, SIZES, Scene, sample_scene
from mmapp.data.shapes.text import relation_margin


@pytest.fixture(scope="module")
def asked():
    """(scene, chosen candidates) for 400 scenes, picked by one balancer as the writer does."""
    balancer, out = answer_balancer(), []
    for k in range(400):
        rng = np.random.default_rng([5, k])
        scene = sample_scene(rng)
        found = one_per_answer(candidates(scene, rng), rng)
        out.append((scene, balancer.pick_all(found, np.random.default_rng([5, k, 1]))))
    return out


def _find(scene: Scene, words: list[str]) -> list[int]:
    size = next((w for w in words if w in SIZES), None)
    color = next((w for w in words if w in COLORS), None)
    shape = next((w.rstrip("s") for w in words if w.rstrip("s") in SHAPES), None)
    return [i for i, o in enumerate(scene.objects)
            if (size is None or o.size == size) and (color is None or o.color == color)
            and (shape is None or o.shape == shape)]


def _unique(scene: Scene, phrase: str) -> int:
    ids = _find(scene, phrase.split())
    assert len(ids) == 1, f"ambiguous referent {phrase!r}"
    return ids[0]


def _oracle(scene: Scene, q: str) -> tuple[str, list[int]]:
    """The answer and referred objects, recomputed from the scene and the question text only."""
    if m := re.fullmatch(r"what color is the (.+)\?", q):
        i = _unique(scene, m[1])
        return scene.objects[i].color, [i]
    if m := re.fullmatch(r"what shape is the (.+) object\?", q):
        i = _unique(scene, m[1])
        return scene.objects[i].shape, [i]
    if m := re.fullmatch(r"what size is the (.+)\?", q):
        i = _unique(scene, m[1])
        return scene.objects[i].size, [i]
    if m := re.fullmatch(r"how many (.+) are there\?", q):
        ids = _find(scene, m[1].split())
        return str(len(ids)), ids
    if m := re.fullmatch(r"is there an? (\w+) (\w+)\?", q):
        ids = _find(scene, [m[1], m[2]])
        return ("yes" if ids else "no"), ids
    if m := re.fullmatch(r"is the (.+) (to the left of|to the right of|above|below) the (.+)\?", q):
        a, b = _unique(scene, m[1]), _unique(scene, m[3])
        (ax, ay), (bx, by) = scene.objects[a].center, scene.objects[b].center
        d = {"to the left of": bx - ax, "to the right of": ax - bx, "above": by - ay, "below": ay - by}[m[2]]
        assert abs(d) > max(20.0, relation_margin(scene, a, b) - 1e-9), "ambiguous geometry"
        return ("yes" if d > 0 else "no"), [a, b]
    raise AssertionError(f"unknown question form {q!r}")


def test_answers_match_the_scene(asked):
    seen = Counter()
    for scene, chosen in asked:
        assert [c.qtype for c in chosen] == [t for t in QUESTION_TYPES if t in {c.qtype for c in chosen}]
        for c in chosen:
            assert c.question == c.question.lower() and c.question.endswith("?")
            answer, ids = _oracle(scene, c.question)
            assert c.answer == answer, (c, scene.objects)
            assert sorted(c.objects) == sorted(ids)
            seen[c.qtype] += 1
    assert seen["count"] == seen["exists"] == len(asked)
    assert min(seen.values()) > 0.7 * len(asked)  # one per type where possible


def _shares(asked, qtype: str) -> dict[str, float]:
    counts = Counter(c.answer for _, chosen in asked for c in chosen if c.qtype == qtype)
    total = sum(counts.values())
    return {a: n / total for a, n in counts.items()}


def test_answer_distributions_are_balanced(asked):
    for qtype in ("exists", "position", "size"):
        shares = _shares(asked, qtype)
        assert len(shares) == 2 and all(0.4 <= s <= 0.6 for s in shares.values()), (qtype, shares)
    color, shape, count = _shares(asked, "color"), _shares(asked, "shape"), _shares(asked, "count")
    assert set(color) == set(COLORS) and max(color.values()) < 2 / len(COLORS)
    assert set(shape) == set(SHAPES) and max(shape.values()) < 2 / len(SHAPES)
    assert {"0", "1", "2", "3", "4"} <= set(count)
    assert all(0.12 <= count[a] <= 0.25 for a in "1234"), count


def test_no_answers_to_exists_are_mostly_near_misses(asked):
    near = far = 0
    for scene, chosen in asked:
        for c in chosen:
            if c.qtype == "exists" and c.answer == "no":
                color, shape = re.fullmatch(r"is there an? (\w+) (\w+)\?", c.question).groups()
                if color in {o.color for o in scene.objects} or shape in {o.shape for o in scene.objects}:
                    near += 1
                else:
                    far += 1
    assert near / (near + far) >= 0.5


def test_every_type_has_an_answer_type():
    assert set(ANSWER_TYPES) == set(QUESTION_TYPES)
    assert set(ANSWER_TYPES.values()) == {"yes/no", "number", "other"}


def test_candidates_cover_all_valid_forms():
    scene = sample_scene(np.random.default_rng(2))
    found = candidates(scene, np.random.default_rng(0))
    counts = {c.question: c.answer for c in found["count"]}
    assert counts["how many objects are there?"] == str(len(scene.objects))
    assert len(found["exists"]) == len(COLORS) * len(SHAPES)
    assert sum(c.answer == "yes" for c in found["exists"]) == len({(o.color, o.shape) for o in scene.objects})
