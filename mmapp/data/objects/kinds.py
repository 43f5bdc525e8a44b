"""The words an object scene's captions and questions use: nouns, plurals and kinds.

A kind is a noun's supercategory ("animal", "fruit", "vehicle"): "what animal is this?", "two
animals and a fruit".
"""

from __future__ import annotations

from typing import Mapping

from mmapp.words import plural


class ObjectWords:
    """nouns (sorted), ``plurals`` noun -> plural, ``kinds`` noun -> supercategory,
    ``nouns_by_kind``, ``kind_plurals`` supercategory -> its plural."""

    def __init__(self, plurals: Mapping[str, str], kinds: Mapping[str, str]) -> None:
        self.plurals, self.kinds = dict(plurals), dict(kinds)
        self.nouns = sorted(plurals)
        self.nouns_by_kind: dict[str, list[str]] = {}
        for n in self.nouns:
            self.nouns_by_kind.setdefault(kinds[n], []).append(n)
        self.kind_plurals = {k: plural(k) for k in self.nouns_by_kind}
