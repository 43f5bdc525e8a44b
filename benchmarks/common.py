"""What every benchmark shares: timing (medians over repeats), result records, sizes and synthetic data.

A ``Figure`` is one measured number with what it is compared to: a target from the issue
(``target``, e.g. "at least 2x the reference") or a figure measured in the same run (``baseline``).
Its ``ratio`` is always oriented so that > 1 is better and >= ``need`` meets the target.
"""

from __future__ import annotations

import gc
import resource
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

PAD, START, END = 0, 1, 2


@dataclass(frozen=True)
class Sizes:
    """Model and workload sizes; ``full()`` are the issue's, ``quick()`` a smoke run's."""

    vocab: int = 10_000
    embed: int = 512
    attention: int = 512
    hidden: int = 512
    encoder_dim: int = 1280
    batch: int = 64  # captions per training step
    beam_images: int = 64  # images in the batched beam search
    single_images: int = 24  # images decoded one at a time (per repeat)
    steps: int = 20  # decoder steps of a beam search
    train_repeats: int = 5
    repeats: int = 3
    vqa_vocab: int = 15_000
    vqa_answers: int = 3000
    vqa_dim: int = 2048
    vqa_batch: int = 128
    vqa_grid: int = 14
    encoder_batches: tuple[int, ...] = (1, 8, 32)
    feature_images: int = 64
    app_requests: int = 16  # per client, sequential
    app_clients: int = 16

    @staticmethod
    def full() -> "Sizes":
        return Sizes()

    @staticmethod
    def quick() -> "Sizes":
        return Sizes(vocab=500, embed=64, attention=64, hidden=64, encoder_dim=1280, batch=16, beam_images=8,
                     single_images=3, steps=8, train_repeats=2, repeats=2, vqa_vocab=500, vqa_answers=100,
                     vqa_dim=256, vqa_batch=16, vqa_grid=7, encoder_batches=(1, 4), feature_images=8,
                     app_requests=3, app_clients=4)


@dataclass
class Figure:
    """One measured figure. ``higher_is_better`` orients ``ratio``; ``need`` is the ratio the target asks."""

    group: str
    name: str
    value: float
    unit: str
    higher_is_better: bool
    compare: str = ""  # what the ratio is taken against, in words
    ratio: float | None = None
    need: float | None = None  # ratio the target asks for (None: information only)
    note: str = ""
    samples: list[float] = field(default_factory=list)

    @property
    def meets(self) -> bool | None:
        if self.need is None or self.ratio is None:
            return None
        return self.ratio >= self.need

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["meets"] = self.meets
        return out


def against(value: float, baseline: float, higher_is_better: bool) -> float:
    """The ratio of ``value`` to ``baseline``, > 1 when ``value`` is better."""
    if value <= 0 or baseline <= 0:
        return float("nan")
    return value / baseline if higher_is_better else baseline / value


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 1, sync: Callable[[], None] | None = None) -> list[float]:
    """Seconds per call of ``fn`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    gc.collect()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of process ``pid`` in MB, from ``/proc/<pid>/status``."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(rest.split()[0]) / 1024
    return fields.get("VmRSS", float("nan")), fields.get("VmHWM", float("nan"))


def coco_like_lengths(n: int, generator: torch.Generator) -> Tensor:
    """(n,) caption lengths in tokens, ``<start>`` and ``<end>`` included, shaped like COCO's:
    6 + Poisson(4) words (mean 10 words, 12 tokens; 16-19 tokens at most in a batch of 64)."""
    words = 6 + torch.poisson(torch.full((n,), 4.0), generator=generator).long()
    return words + 2


def caption_batch(n: int, vocab: int, generator: torch.Generator, pad_to: int | None = None) -> tuple[Tensor, Tensor]:
    """(captions (n, L) = ``<start> w.. <end> <pad>..`` padded to the longest (or ``pad_to``), lengths (n,))."""
    lengths = coco_like_lengths(n, generator)
    L = max(int(lengths.max()), pad_to or 0)
    captions = torch.full((n, L), PAD, dtype=torch.long)
    words = torch.randint(4, vocab, (n, L), generator=generator)
    for i, length in enumerate(lengths.tolist()):
        captions[i, 0] = START
        captions[i, 1 : length - 1] = words[i, 1 : length - 1]
        captions[i, length - 1] = END
    return captions, lengths


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
