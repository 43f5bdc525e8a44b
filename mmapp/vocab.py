"""Word and answer vocabularies, and the tokeniser (NLTK's Treebank tokeniser: needs no data).

Both vocabularies serialise to plain JSON (``to_dict``/``from_dict``) and travel inside every
checkpoint.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)
_PUNCT = set(string.punctuation) | {"``", "''", "--", "..."}
_SPACE = re.compile(r"\s+")


@lru_cache(maxsize=1)
def _treebank():
    # heavy: nltk, loaded on the first tokenisation
    from nltk.tokenize import TreebankWordTokenizer

    return TreebankWordTokenizer()


def tokenize(text: str) -> list[str]:
    """Lower-case, Treebank-tokenise and drop punctuation tokens.

    >>> tokenize("A red circle, left of two Squares.")
    ['a', 'red', 'circle', 'left', 'of', 'two', 'squares']
    """
    text = _SPACE.sub(" ", text.lower()).strip()
    if not text:
        return []
    return [t for t in _treebank().tokenize(text) if t not in _PUNCT]


@dataclass(frozen=True)
class Vocab:
    """Word vocabulary: ids 0..3 are ``<pad> <start> <end> <unk>``."""

    words: tuple[str, ...]

    def __post_init__(self) -> None:
        if tuple(self.words[:4]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}, got {self.words[:4]}")
        if len(set(self.words)) != len(self.words):
            raise ValueError("a vocabulary has duplicate words")
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words)})

    pad_id, start_id, end_id, unk_id = 0, 1, 2, 3

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self._index  # type: ignore[attr-defined]

    def id(self, word: str) -> int:
        return self._index.get(word, self.unk_id)  # type: ignore[attr-defined]

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int = 1, max_size: int | None = None) -> "Vocab":
        """Words seen at least ``min_freq`` times, most frequent first (ties alphabetical)."""
        counts = Counter(w for t in texts for w in tokenize(t))
        kept = sorted((w for w, c in counts.items() if c >= min_freq and w not in SPECIALS),
                      key=lambda w: (-counts[w], w))
        if max_size is not None:
            kept = kept[: max(0, max_size - len(SPECIALS))]
        return cls(SPECIALS + tuple(kept))

    def encode(self, text: str | Sequence[str], max_len: int | None = None) -> list[int]:
        """``<start> w1 .. wn <end>`` ids; at most ``max_len`` words (truncated before ``<end>``)."""
        words = tokenize(text) if isinstance(text, str) else list(text)
        if max_len is not None:
            words = words[:max_len]
        return [self.start_id] + [self.id(w) for w in words] + [self.end_id]

    def encode_question(self, text: str, max_len: int | None = None) -> list[int]:
        """Question ids without start/end markers; unknown words map to ``<unk>``."""
        words = tokenize(text)
        if max_len is not None:
            words = words[:max_len]
        return [self.id(w) for w in words]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words up to (excluding) ``<end>``; ``<start>`` and ``<pad>`` are skipped."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i in (self.start_id, self.pad_id):
                continue
            out.append(self.words[i])
        return out

    def to_dict(self) -> dict:
        return {"words": list(self.words)}

    @classmethod
    def from_dict(cls, data: dict) -> "Vocab":
        return cls(tuple(data["words"]))


@dataclass(frozen=True)
class AnswerVocab:
    """The K most frequent (normalised) answers; the classifier's output space."""

    answers: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(set(self.answers)) != len(self.answers):
            raise ValueError("an answer vocabulary has duplicate answers")
        object.__setattr__(self, "_index", {a: i for i, a in enumerate(self.answers)})

    def __len__(self) -> int:
        return len(self.answers)

    def index(self, answer: str) -> int | None:
        return self._index.get(answer)  # type: ignore[attr-defined]

    @classmethod
    def build(cls, answers: Iterable[str], top_k: int) -> "AnswerVocab":
        counts = Counter(answers)
        ranked = sorted(counts, key=lambda a: (-counts[a], a))
        return cls(tuple(ranked[:top_k]))

    def to_dict(self) -> dict:
        return {"answers": list(self.answers)}

    @classmethod
    def from_dict(cls, data: dict) -> "AnswerVocab":
        return cls(tuple(data["answers"]))
