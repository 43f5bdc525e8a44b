"""The words an object scene's captions and questions use: nouns, plurals and kinds.

A kind is a noun's supercategory ("animal", "fruit", "vehicle"): "what animal is this?", "two
animals and a fruit". A mass noun among them is said as a count phrase ("a piece of clothing": ``mmapp.words``).
"""

from __future__ import annotations

from typing import Mapping

from mmapp.words import kind_plural, kind_word


class ObjectWords:
    """nouns (sorted), ``plurals`` noun -> plural, ``kinds`` noun -> supercategory,
    ``nouns_by_kind``, ``kind_words`` / ``kind_plurals`` supercategory -> phrase."""

    def __init__(self, plurals: Mapping[str, str], kinds: Mapping[str, str]) -> None:
        self.plurals, self.kinds = dict(plurals), dict(kinds)
        self.nouns = sorted(plurals)
        self.nouns_by_kind: dict[str, list[str]] = {}
        for n in self.nouns:
            self.nouns_by_kind.setdefault(kinds[n], []).append(n)
        self.kind_words = {k: kind_word(k) for k in self.nouns_by_kind}
        self.kind_plurals = {k: kind_plural(k) for k in self.nouns_by_kind}
