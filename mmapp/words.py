"""English words the generators, the caption parser and the metrics share: plurals and kind phrases."""

from __future__ import annotations

# Supercategories ("kinds") that are mass nouns: (singular, plural) count phrases for them.
MASS_KINDS: dict[str, tuple[str, str]] = {
    "clothing": ("piece of clothing", "pieces of clothing"),
    "furniture": ("piece of furniture", "pieces of furniture"),
    "food": ("kind of food", "kinds of food"),
    "sport": ("piece of sports equipment", "pieces of sports equipment"),
}
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


def kind_word(kind: str) -> str:
    """"animal"; "piece of clothing"."""
    return MASS_KINDS.get(kind, (kind, ""))[0]


def kind_plural(kind: str) -> str:
    """"animals"; "pieces of clothing"."""
    return MASS_KINDS[kind][1] if kind in MASS_KINDS else plural(kind)
