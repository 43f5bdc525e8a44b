"""Which of a scene's objects a caption's words name, for any dataset with COCO instances.

The lexicon comes from the instances file: each category's name and plural (the extension field
``plural``, else the regular plural) name its objects ("circle", "polar bears"); each
supercategory names every object of its kind ("animal", "two fruits", "a sea animal"); the values of the objects' attribute fields (the shapes
data's ``color`` and ``size``) are adjectives ("small red circle"). Generic nouns ("object",
"thing", "shape", "one") name objects only with an attribute ("two red objects").

A ``Mention`` is one noun phrase: the positions of its first attribute word and of its noun's
last word, what it names, and its count. ``Lexicon.mentions(tokens)`` finds them left to right,
longest noun first; ``Mention.matches(obj)`` says whether it names an object, and
``Mention.key`` is its category for CHAIR (``metrics.hallucination``), with ``None`` as wildcard.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mmapp.data.fields import field, read_json, top_list
from mmapp.vocab import tokenize
from mmapp.words import plural

ATTRIBUTES: tuple[str, ...] = ("color", "size")
GENERIC_NOUNS: tuple[str, ...] = ("object", "shape", "thing", "one")
NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six")
_COUNT_WORDS = {w: i for i, w in enumerate(NUMBER_WORDS)} | {"a": 1, "an": 1, "single": 1}
_OTHER_MODIFIERS = frozenset({"big", "little"})


@dataclass(frozen=True)
class SceneObject:
    """One annotated object: category name, supercategory, attribute values, COCO box."""

    id: int
    category: str
    supercategory: str
    attributes: tuple[tuple[str, str], ...]
    bbox: tuple[float, float, float, float]

    def attribute(self, name: str) -> str | None:
        return dict(self.attributes).get(name)

    @property
    def key(self) -> tuple[str | None, str, str]:
        """(colour, category, supercategory): what CHAIR checks mentions against."""
        return (self.attribute("color"), self.category, self.supercategory)


@dataclass(frozen=True)
class Mention:
    """A noun phrase: words ``first`` .. ``last`` (attribute words and the noun); it names
    ``category`` or, for a kind word, ``supercategory``, or (generic noun) any object with its
    ``attributes``; ``count`` from its number word (a plural without one: 2)."""

    first: int
    last: int
    category: str | None
    supercategory: str | None
    attributes: tuple[tuple[str, str], ...]
    count: int

    def matches(self, obj: SceneObject) -> bool:
        if self.category is not None and obj.category != self.category:
            return False
        if self.supercategory is not None and obj.supercategory != self.supercategory:
            return False
        return all(obj.attribute(k) == v for k, v in self.attributes)

    @property
    def key(self) -> tuple[str | None, str | None, str | None]:
        """(colour or None, category or None, supercategory or None), as ``SceneObject.key``."""
        return (dict(self.attributes).get("color"), self.category, self.supercategory)


class Lexicon:
    """Noun phrases -> what they name. categories: (name, plural or None, supercategory);
    attribute_values: attribute -> the values its objects take."""

    def __init__(self, categories: Iterable[tuple[str, str | None, str]],
                 attribute_values: Mapping[str, Iterable[str]] = {}) -> None:
        self.nouns: dict[tuple[str, ...], tuple[str | None, str | None, bool]] = {}
        kinds: set[str] = set()
        for name, plural_form, supercategory in categories:
            self.nouns[tuple(name.split())] = (name, None, False)
            self.nouns[tuple((plural_form or plural(name)).split())] = (name, None, True)
            kinds.add(supercategory)
        for kind in sorted(kinds - set(GENERIC_NOUNS) - {""}):
            self.nouns.setdefault(tuple(kind.split()), (None, kind, False))
            self.nouns.setdefault(tuple(plural(kind).split()), (None, kind, True))
        for word in GENERIC_NOUNS:
            self.nouns.setdefault((word,), (None, None, False))
            self.nouns.setdefault((plural(word),), (None, None, True))
        self.attributes = {v: a for a in ATTRIBUTES for v in attribute_values.get(a, ())}
        self.longest = max(len(k) for k in self.nouns)

    def _noun_at(self, tokens: Sequence[str], i: int) -> tuple[int, tuple[str | None, str | None, bool]] | None:
        for n in range(min(self.longest, len(tokens) - i), 0, -1):
            found = self.nouns.get(tuple(tokens[i:i + n]))
            if found is not None:
                return n, found
        return None

    def mentions(self, tokens: Sequence[str]) -> list[Mention]:
        """The noun phrases of a tokenised caption, left to right. A generic noun without an
        attribute word ("three shapes", "one" as a number) names nothing and is skipped."""
        out, i = [], 0
        while i < len(tokens):
            hit = self._noun_at(tokens, i)
            if hit is None or (tokens[i] in self.attributes and i + 1 < len(tokens)
                               and (tokens[i + 1] in self.attributes or self._noun_at(tokens, i + 1))):
                i += 1  # no noun here, or a colour word that is also a noun ("orange") used as one
                continue
            n, (category, kind, is_plural) = hit
            attributes: dict[str, str] = {}
            j = i - 1
            while j >= 0 and tokens[j] in self.attributes:
                attributes.setdefault(self.attributes[tokens[j]], tokens[j])
                j -= 1
            first = j + 1
            count = None
            while j >= 0 and (tokens[j] in self.attributes or tokens[j] in _COUNT_WORDS or tokens[j].isdigit()
                              or tokens[j] in _OTHER_MODIFIERS):
                t = tokens[j]
                if count is None and t.isdigit():
                    count = int(t)
                elif count is None and t in _COUNT_WORDS:
                    count = _COUNT_WORDS[t]
                j -= 1
            if category is not None or kind is not None or attributes:
                out.append(Mention(first, i + n - 1, category, kind, tuple(sorted(attributes.items())),
                                   count if count is not None else (2 if is_plural else 1)))
            i += n
        return out

    def chair_keys(self, caption: str) -> list[tuple[str | None, str | None, str | None]]:
        """The CHAIR categories a caption mentions (``Mention.key``), in order: phrases that name
        a category, a kind or a colour (a bare "small ones" names nothing checkable)."""
        return [m.key for m in self.mentions(tokenize(caption)) if m.key != (None, None, None)]


def load_scene_objects(instances_path: str | Path) -> tuple[Lexicon, dict[int, list[SceneObject]],
                                                            dict[int, tuple[int, int]]]:
    """A COCO instances file -> (its lexicon, image id -> objects, image id -> (width, height)).
    Attribute words are the file's ``attributes`` ({"color": [...], ...}, an extension the shapes
    generator writes) or else the values its objects take."""
    path = instances_path
    data = read_json(path)
    cats: dict[int, tuple[str, str | None, str]] = {}
    for i, c in enumerate(top_list(data, "categories", path)):
        where = f"category #{i}"
        cats[field(c, "id", int, path, where)] = (field(c, "name", str, path, where), c.get("plural"),
                                                  str(c.get("supercategory", "")))
    sizes = {field(im, "id", int, path, f"image #{i}"): (field(im, "width", int, path, f"image #{i}"),
                                                         field(im, "height", int, path, f"image #{i}"))
             for i, im in enumerate(top_list(data, "images", path))}
    objects: dict[int, list[SceneObject]] = {i: [] for i in sizes}
    declared = data.get("attributes") if isinstance(data, dict) else None  # the generator's own list
    values: dict[str, set[str]] = {a: set((declared or {}).get(a, ())) for a in ATTRIBUTES}
    for i, a in enumerate(top_list(data, "annotations", path)):
        where = f"annotation #{i}"
        name, _, supercategory = cats.get(field(a, "category_id", int, path, where), ("", None, ""))
        attrs = tuple((k, str(a[k])) for k in ATTRIBUTES if k in a)
        for k, v in attrs:
            values[k].add(v)
        objects.setdefault(field(a, "image_id", int, path, where), []).append(SceneObject(
            field(a, "id", int, path, where), name, supercategory, attrs,
            tuple(float(v) for v in field(a, "bbox", list, path, where))))
    return Lexicon(cats.values(), values), objects, sizes


def present_keys(objects: Mapping[int, Sequence[SceneObject]]) -> dict[int, list[Any]]:
    """image id -> the CHAIR keys of its objects."""
    return {i: [o.key for o in objs] for i, objs in objects.items()}
