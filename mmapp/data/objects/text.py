"""Captions of an object scene: 5 different references per image, every statement true.

One object: "a cat", "a photo of a cat", "there is a cat", "a close up of a cat" (when it
fills the frame), "a photo of an animal, a cat". Several: a listing ("there is a cat, two
apples and a dog"), a reordered listing, a relation that holds with a margin ("a cat to the left
of two apples"), the kinds of things ("two fruits and an animal") and a count ("three objects: a
cat, an apple and a dog"). Things of one noun are grouped with a count ("two apples").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmapp.data.objects.kinds import ObjectWords
from mmapp.data.objects.scene import ObjectScene
from mmapp.data.question_balance import RELATION_WORDS

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six")
CAPTIONS_PER_IMAGE = 5
MAX_CAPTION_WORDS = 20
RELATION_MARGIN = 0.08  # of the image side: centres must differ by more than this along the axis
_AN_EXCEPTIONS = ("uni", "use", "uk", "one", "eu")


def article(word: str) -> str:
    """"a" or "an" before ``word`` (by its spelling, with the common exceptions)."""
    w = word.lower()
    if w.startswith(_AN_EXCEPTIONS):
        return "a"
    return "an" if w[:1] in "aeiou" or w.startswith(("hour", "honest")) else "a"


def noun_phrase(noun: str, plural: str, count: int) -> str:
    """"a cat", "an apple", "two apples"."""
    return f"{article(noun)} {noun}" if count == 1 else f"{NUMBER_WORDS[count]} {plural}"


def relation_holds(scene: ObjectScene, a: int, b: int, relation: str) -> bool:
    """Object a is ``relation`` (left/right/above/below) of object b, centres apart by the margin."""
    (xa, ya), (xb, yb) = scene.objects[a].center, scene.objects[b].center
    m = RELATION_MARGIN * scene.size
    return {"left": xa + m < xb, "right": xa > xb + m, "above": ya + m < yb, "below": ya > yb + m}[relation]


@dataclass(frozen=True)
class Group:
    """The scene's objects of one noun."""

    noun: str
    plural: str
    supercategory: str
    members: tuple[int, ...]

    def phrase(self) -> str:
        return noun_phrase(self.noun, self.plural, len(self.members))


def groups(scene: ObjectScene, plurals: dict[str, str]) -> list[Group]:
    """Groups by noun, most salient (largest total area) first."""
    by_noun: dict[str, list[int]] = {}
    for i, o in enumerate(scene.objects):
        by_noun.setdefault(o.noun, []).append(i)
    out = [Group(n, plurals[n], scene.objects[m[0]].supercategory, tuple(m)) for n, m in by_noun.items()]
    return sorted(out, key=lambda g: (-sum(scene.objects[i].area for i in g.members), g.noun))


def join(parts: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _kinds(scene: ObjectScene, words: ObjectWords) -> str:
    counts: dict[str, int] = {}
    for o in scene.objects:
        counts[o.supercategory] = counts.get(o.supercategory, 0) + 1
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return join([noun_phrase(s, words.kind_plurals[s], n) for s, n in ordered])


def _relation(scene: ObjectScene, gs: list[Group], rng: np.random.Generator) -> str | None:
    pairs = [(a, b, r) for a in gs for b in gs if a is not b for r in RELATION_WORDS
             if all(relation_holds(scene, i, j, r) for i in a.members for j in b.members)]
    if not pairs:
        return None
    a, b, r = pairs[int(rng.integers(len(pairs)))]
    return f"{a.phrase()} {RELATION_WORDS[r]} {b.phrase()}"


def captions(scene: ObjectScene, words: ObjectWords, rng: np.random.Generator) -> list[str]:
    """CAPTIONS_PER_IMAGE different true captions (at most MAX_CAPTION_WORDS words each)."""
    gs = groups(scene, words.plurals)
    listing = join([g.phrase() for g in gs])
    if len(scene.objects) == 1:
        g, o = gs[0], scene.objects[0]
        kind = f"{article(g.supercategory)} {g.supercategory}"
        close = max(o.box[2], o.box[3]) > 0.7 * scene.size
        options = [f"a photo of {listing}", f"there is {listing}", f"a picture of {listing}",
                   f"a close up of {listing}" if close else f"{listing} in the picture",
                   f"a photo of {kind}, {listing}"]
        return [listing] + [options[i] for i in rng.permutation(len(options))[:CAPTIONS_PER_IMAGE - 1]]
    shuffled = [gs[i].phrase() for i in rng.permutation(len(gs))]
    count = f"{NUMBER_WORDS[len(scene.objects)]} objects: {listing}"
    out = [f"there is {listing}", f"a picture of {join(shuffled)}"]
    out.append(_relation(scene, gs, rng) or f"{join(shuffled)} together")
    out.append(f"a photo of {_kinds(scene, words)}")
    out.append(count)
    return [c for c in out if len(c.split()) <= MAX_CAPTION_WORDS] + [listing] * sum(
        len(c.split()) > MAX_CAPTION_WORDS for c in out)
