"""CHAIR-style object hallucination in captions (Rohrbach et al., 2018).

A ``MentionExtractor`` turns a caption into the object categories it mentions: captions are
tokenised with ``mmapp.vocab.tokenize`` (lower-cased, punctuation dropped) and scanned left to
right, taking at each position the longest matching phrase, else a single word. Plural forms
("circles", "boxes", "ponies") of every single word and of each phrase's last word are derived
automatically unless the mapping already holds them.

A category is any hashable, e.g. "dog" for COCO-style objects, or ``("red", "circle")`` for the
shapes dataset. Tuples may hold ``None`` as a wildcard: a bare "circle" can map to
``(None, "circle")``, which counts as present when any circle is in the image.

- CHAIR-i = hallucinated mentions / all mentions (each category once per caption unless
  ``count_repeats``), over all captions.
- CHAIR-s = captions with at least one hallucinated mention / all captions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

from mmapp.errors import DataError
from mmapp.vocab import tokenize
from mmapp.words import plural

Category = Hashable


@dataclass(frozen=True)
class MentionExtractor:
    """words: single word -> category; phrases: phrase (words separated by spaces) -> category."""

    words: Mapping[str, Category]
    phrases: Mapping[str, Category] = field(default_factory=dict)
    add_plurals: bool = True

    def __post_init__(self) -> None:
        table: dict[tuple[str, ...], Category] = {}
        for phrase, cat in list(self.phrases.items()) + list(self.words.items()):
            key = tuple(phrase.lower().split())
            if not key:
                raise ValueError("an empty word or phrase in a mention mapping")
            table[key] = cat
        if self.add_plurals:
            for key, cat in list(table.items()):
                table.setdefault(key[:-1] + (plural(key[-1]),), cat)
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_longest", max((len(k) for k in table), default=0))

    def mentions(self, caption: str) -> list[Category]:
        """Categories mentioned in the caption, in order, repeats included."""
        tokens = tokenize(caption)
        table: dict[tuple[str, ...], Category] = self._table  # type: ignore[attr-defined]
        found, i = [], 0
        while i < len(tokens):
            for n in range(min(self._longest, len(tokens) - i), 0, -1):  # type: ignore[attr-defined]
                key = tuple(tokens[i:i + n])
                if key in table:
                    found.append(table[key])
                    i += n
                    break
            else:
                i += 1
        return found


def shapes_extractor(colours: Iterable[str], shapes: Iterable[str],
                     bare_shapes: bool = True) -> MentionExtractor:
    """Extractor for the shapes dataset: "red circle(s)" -> ("red", "circle"); with
    ``bare_shapes``, a shape without a colour -> (None, "circle") (present if any circle is)."""
    colours, shapes = list(colours), list(shapes)
    phrases = {f"{c} {s}": (c, s) for c in colours for s in shapes}
    words = {s: (None, s) for s in shapes} if bare_shapes else {}
    return MentionExtractor(words=words, phrases=phrases)


def is_present(category: Category, present: set) -> bool:
    """Exact membership, or for a tuple with ``None`` wildcards, any present tuple it matches."""
    if category in present:
        return True
    if isinstance(category, tuple) and None in category:
        return any(isinstance(p, tuple) and len(p) == len(category)
                   and all(c is None or c == pc for c, pc in zip(category, p)) for p in present)
    return False


def chair(captions: Mapping[Hashable, str], present: Mapping[Hashable, Iterable[Category]],
          extractor: MentionExtractor | Callable[[str], Iterable[Category]],
          count_repeats: bool = False) -> dict[str, Any]:
    """CHAIR-i and CHAIR-s of one caption per image.

    captions: image id -> caption; present: image id -> categories really in the image;
    extractor: a ``MentionExtractor`` or any function caption -> mentioned categories (e.g. the
    shapes dataset's own caption parser).
    Returns ``{"chair_i", "chair_s", "num_captions", "num_mentions", "num_hallucinated",
    "per_caption": [{"image_id", "mentioned", "hallucinated"}]}``; ``chair_i`` is None when no
    caption mentions any object.
    """
    mentions_of = extractor.mentions if isinstance(extractor, MentionExtractor) else extractor
    per_caption = []
    n_mentions = n_halluc = n_bad_captions = 0
    for image_id, caption in captions.items():
        if image_id not in present:
            raise DataError(f"image id {image_id!r} has a caption but no list of present objects")
        objects = set(present[image_id])
        mentioned: Sequence[Category] = list(mentions_of(caption))
        if not count_repeats:
            mentioned = list(dict.fromkeys(mentioned))
        hallucinated = [m for m in mentioned if not is_present(m, objects)]
        n_mentions += len(mentioned)
        n_halluc += len(hallucinated)
        n_bad_captions += bool(hallucinated)
        per_caption.append({"image_id": image_id, "mentioned": list(mentioned), "hallucinated": hallucinated})
    n = len(per_caption)
    return {
        "chair_i": n_halluc / n_mentions if n_mentions else None,
        "chair_s": n_bad_captions / n if n else None,
        "num_captions": n,
        "num_mentions": n_mentions,
        "num_hallucinated": n_halluc,
        "per_caption": per_caption,
    }
