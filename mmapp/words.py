"""English words the generators, the caption parser and the metrics share."""

from __future__ import annotations

_IRREGULAR = {"fish": "fish", "person": "people", "sheep": "sheep", "mouse": "mice", "deer": "deer"}


def plural(word: str) -> str:
    """Regular English plural of a word or of a phrase's last word: box -> boxes, pony -> ponies,
    toy -> toys, polar bear -> polar bears (and a few irregular ones: fish, person, mouse)."""
    head, _, last = word.rpartition(" ")
    if last in _IRREGULAR:
        out = _IRREGULAR[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        out = last + "es"
    elif len(last) > 1 and last.endswith("y") and last[-2] not in "aeiou":
        out = last[:-1] + "ies"
    else:
        out = last + "s"
    return f"{head} {out}" if head else out
