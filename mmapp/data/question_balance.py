"""Balanced question choice for generated scenes: candidates, and a balancer that picks one per type.

A generator lists every valid question of each type with its answer (``Candidate``); the
``AnswerBalancer`` then picks, image after image, the answer that is furthest below its target
share, so answer distributions stay near-uniform and a prior cannot score well. Shared by the
shapes and the objects generators; each passes its own types and targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Candidate:
    """One valid question; ``objects`` are indices into the scene's objects it refers to;
    ``tag`` sub-kind ("near"/"far" for a "no" exists question, else "")."""

    qtype: str
    question: str
    answer: str
    objects: tuple[int, ...]
    tag: str = ""


RELATION_WORDS: dict[str, str] = {"left": "to the left of", "right": "to the right of", "above": "above",
                                  "below": "below"}
OPPOSITE: dict[str, str] = {"left": "right", "right": "left", "above": "below", "below": "above"}


def position_candidates(refs: Mapping[int, str], holds: Callable[[int, int, str], bool]) -> list[Candidate]:
    """"is the <A> to the left of / ... the <B>?" for every ordered pair of referents (object index ->
    the words that single it out): "yes" where ``holds(a, b, relation)``, "no" where the opposite
    holds (never a tie)."""
    out = []
    for a in refs:
        for b in refs:
            if a == b:
                continue
            for rel, words in RELATION_WORDS.items():
                text = f"is the {refs[a]} {words} the {refs[b]}?"
                if holds(a, b, rel):
                    out.append(Candidate("position", text, "yes", (a, b)))
                elif holds(a, b, OPPOSITE[rel]):
                    out.append(Candidate("position", text, "no", (a, b)))
    return out


def one_per_answer(found: dict[str, list[Candidate]], rng: np.random.Generator) -> dict[str, list[Candidate]]:
    """Keep one random candidate per (type, answer, tag): what the balancer needs, and small
    to send between processes. Choosing within an answer does not depend on the balancer."""
    out: dict[str, list[Candidate]] = {}
    for qtype, options in found.items():
        groups: dict[tuple[str, str], list[Candidate]] = {}
        for c in options:
            groups.setdefault((c.answer, c.tag), []).append(c)
        out[qtype] = [g[int(rng.integers(len(g)))] for _, g in sorted(groups.items())]
    return out


@dataclass
class AnswerBalancer:
    """Running answer counts per type; ``pick`` chooses the available answer that is furthest
    below its target share (ties at random), then a question with that answer at random.

    targets: question type -> {answer: relative target share}; order: the question types in the
    order ``pick_all`` asks them; near_share: the share of "near" among the "no" answers of
    ``exists`` questions (a near miss: something present, wrongly paired).
    """

    targets: Mapping[str, Mapping[str, float]]
    order: Sequence[str]
    near_share: float = 0.75
    counts: dict[str, dict[str, int]] = field(init=False)
    near_far: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.counts = {t: {a: 0 for a in self.targets[t]} for t in self.order}
        self.near_far = {"near": 0, "far": 0}

    def _least(self, table: dict[str, int], targets: Mapping[str, float], available: set[str],
               rng: np.random.Generator) -> str:
        total = sum(targets.values())
        n = sum(table.values()) + 1
        scores = {a: table[a] / n - targets[a] / total for a in sorted(available)}
        best = min(scores.values())
        tied = [a for a, s in scores.items() if s <= best + 1e-12]
        return tied[int(rng.integers(len(tied)))]

    def pick(self, qtype: str, options: list[Candidate], rng: np.random.Generator) -> Candidate:
        """One of ``options`` (all of type ``qtype``, non-empty); updates the counts."""
        answers = {c.answer for c in options}
        answer = self._least(self.counts[qtype], self.targets[qtype], answers, rng)
        chosen = [c for c in options if c.answer == answer]
        if qtype == "exists" and answer == "no":
            tags = {c.tag for c in chosen}
            tag = self._least(self.near_far, {"near": self.near_share, "far": 1 - self.near_share}, tags, rng)
            self.near_far[tag] += 1
            chosen = [c for c in chosen if c.tag == tag]
        self.counts[qtype][answer] += 1
        return chosen[int(rng.integers(len(chosen)))]

    def pick_all(self, found: dict[str, list[Candidate]], rng: np.random.Generator) -> list[Candidate]:
        """One question per type that has candidates, in ``order``."""
        return [self.pick(t, found[t], rng) for t in self.order if found.get(t)]
