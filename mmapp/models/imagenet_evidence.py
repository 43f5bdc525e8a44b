"""What the encoder's own ImageNet classifier says about an answer: a fixed, untrained input.

The pretrained CNN was trained to name 1000 ImageNet classes in real photographs; the training
scenes teach a head to name a few hundred things from one or two pictures each. On real photos the
first knows more (``scripts/naming_probe.py``). This module carries the classifier's rows for the
ImageNet classes that one of the answers names ("Egyptian cat" names "cat") and
turns an attended grid cell into, per answer, log P(answer) under that classifier renormalised over
the matched classes (0 for an answer without a match). A word also names every class it is a WordNet
hypernym of ("dog" names the 118 breeds, "fish" the tench and the goldfish; ``imagenet_hypernyms.tsv``,
written by ``scripts/build_imagenet_hypernyms.py``), so a real photo of a golden retriever is
evidence for "dog". The VQA model adds it to its answer logits
(``vqa.imagenet_weight``) and the captioner to its word logits (``decoder.imagenet_weight``), each
with a fixed weight.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def imagenet_lemmas() -> list[list[str]]:
    """Each ImageNet-1k class's WordNet lemmas (lower case), in the classifier's order, read from the
    copy that ships inside timm (nothing is downloaded)."""
    import timm.data

    info = Path(timm.data.__file__).parent / "_info"
    synsets = (info / "imagenet_synsets.txt").read_text().split()
    lemmas = dict(line.split("\t", 1) for line in (info / "imagenet_synset_to_lemma.txt").read_text().splitlines())
    return [[w.strip().lower() for w in lemmas[s].split(",")] for s in synsets]


HYPERNYMS = Path(__file__).with_name("imagenet_hypernyms.tsv")


def imagenet_hypernyms(path: str | Path = HYPERNYMS) -> list[list[list[str]]]:
    """Per ImageNet-1k class, in the classifier's order: the synsets above it in WordNet 3.0, nearest
    first, each as its lemmas (lower case, head word first)."""
    rows = Path(path).read_text(encoding="utf-8").splitlines()[1:]
    return [[synset.split(",") for synset in row.split("\t")[2].split(";")] for row in rows]


def match_answers(answers: Sequence[str], lemmas: Sequence[Sequence[str]],
                  plurals: dict[str, str] | None = None,
                  hypernyms: Sequence[Sequence[Sequence[str]]] | None = None,
                  most_classes: float = 0.2) -> list[list[int]]:
    """Per answer, the ImageNet classes it names. The answer's forms are itself and its other form
    (from ``plurals``: its plural, or for a plural word its singular; else the answer + "s"). A class
    is named by a form that is one of its lemmas, or, given the classes' ``hypernyms``, the head word
    of a synset above it ("dog" names "golden retriever"; "cat" not "lion", whose "big cat, cat"
    is headed "big cat"). A synset above more than ``most_classes`` of the classes names no
    particular thing ("object" stands above 958 classes, "animal" 398; "dog" 118) and names none. A
    lemma ending in " form" names the class only where the form is a lemma of a synset above it
    ("Egyptian cat" -> cat, "mobile phone" -> phone; not "hot dog" -> dog, not "koala bear" -> bear,
    never "catamaran" -> cat); without ``hypernyms`` the ending alone decides."""
    heads: list[set[str]] = [set() for _ in lemmas]  # per class, the head words of the synsets above it
    above: list[set[str] | None] = [None for _ in lemmas]  # per class, every lemma above it; None: unknown
    if hypernyms is not None:
        above_how_many = Counter(tuple(synset) for chain in hypernyms for synset in chain)
        for c, chain in enumerate(hypernyms):
            kept = [synset for synset in chain if above_how_many[tuple(synset)] <= most_classes * len(lemmas)]
            heads[c] = {synset[0] for synset in kept}
            above[c] = {lemma for synset in kept for lemma in synset}
    out = []
    for answer in answers:
        forms = {answer, (plurals or {}).get(answer, answer + "s")}
        out.append([c for c, names in enumerate(lemmas)
                    if forms & set(names) or forms & heads[c]
                    or any(n.endswith(" " + f) and (above[c] is None or f in above[c]) for n in names for f in forms)])
    return out


class ImageNetEvidence(nn.Module):
    """pooled head channels (B, C) -> (B, N): per answer (or caption word), log P(answer) under the ImageNet classifier
    renormalised over its K matched classes (an answer's classes summed); 0 for an answer without one.

    Buffers, saved with the model: the K classifier rows ``weight`` (K, C) and ``bias`` (K,), and
    ``membership`` (N, K), 1 where class k names answer n. ``fill`` sets them at training time.
    Derived from ``membership`` (not saved; rebuilt on fill and on load): its nonzero (answer, class)
    pairs and which answers have a class. A class names one answer or a few, so summing each
    answer's class probabilities over the pairs costs a few hundred additions where the product with
    the dense (N, K) matrix read all of it; a caption decoder does that at every step."""

    def __init__(self, num_classes: int, num_answers: int, channels: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(num_classes, channels))
        self.register_buffer("bias", torch.zeros(num_classes))
        self.register_buffer("membership", torch.zeros(num_answers, num_classes))
        for name, dtype in (("pair_answer", torch.long), ("pair_class", torch.long), ("has_class", torch.bool)):
            self.register_buffer(name, torch.zeros(0, dtype=dtype), persistent=False)
        self._index_pairs()
        self.register_load_state_dict_post_hook(lambda module, _keys: module._index_pairs())

    @torch.no_grad()
    def _index_pairs(self) -> None:
        answer, cls = self.membership.nonzero(as_tuple=True)  # (M,) each
        self.pair_answer, self.pair_class = answer, cls
        self.has_class = self.membership.sum(dim=1) > 0  # (N,)

    @staticmethod
    def classes_for(matches: Sequence[Sequence[int]]) -> list[int]:
        """The ImageNet classes that name some answer, sorted: the K rows kept."""
        return sorted({c for m in matches for c in m})

    @torch.no_grad()
    def fill(self, classifier: nn.Linear, matches: Sequence[Sequence[int]]) -> "ImageNetEvidence":
        classes = self.classes_for(matches)
        if len(classes) != self.weight.shape[0] or len(matches) != self.membership.shape[0]:
            raise ValueError(f"{len(classes)} classes for {len(matches)} answers, built for "
                             f"{self.weight.shape[0]} and {self.membership.shape[0]}")
        row = {c: i for i, c in enumerate(classes)}
        self.weight.copy_(classifier.weight[classes])
        self.bias.copy_(classifier.bias[classes])
        self.membership.zero_()
        for n, m in enumerate(matches):
            for c in m:
                self.membership[n, row[c]] = 1.0
        self._index_pairs()
        return self

    def class_logits(self, features: Tensor) -> Tensor:
        """Head channels (..., C) -> the K kept classes' logits (..., K). Linear: the logits of an
        attention-weighted cell are the same weighting of the cells' logits."""
        return features @ self.weight.T + self.bias

    def cell_logits(self, head: Tensor, head_resize: Sequence[int] = ()) -> Tensor:
        """Every grid cell's head channels (B, P, C) -> its class logits (B, P, K), computed on the
        head's own cells where ``head_resize`` says the grid's are those resized (``on_head_cells``):
        within float rounding of ``class_logits`` of every cell, for 4x fewer products on the 14 x 14 grid."""
        return on_head_cells(head, head_resize, self.class_logits)

    def from_logits(self, logits: Tensor) -> Tensor:
        """(..., K) class logits -> (..., N) evidence."""
        p = torch.softmax(logits, dim=-1)
        summed = p.new_zeros(*p.shape[:-1], self.membership.shape[0])  # (..., N): the sum of its classes' p
        summed.index_add_(-1, self.pair_answer, p.index_select(-1, self.pair_class))
        return summed.clamp(min=1e-30).log().masked_fill(~self.has_class, 0.0)  # 0 without a class

    def forward(self, pooled: Tensor) -> Tensor:
        return self.from_logits(self.class_logits(pooled))


def on_head_cells(head: Tensor, head_resize: Sequence[int], per_cell: Callable[[Tensor], Tensor]) -> Tensor:
    """``per_cell``, an affine map of each cell's channels ((..., C) -> (..., K)), of every grid cell's
    head channels (B, P, C) -> (B, P, K). With ``head_resize`` (h, w, H, W), P = H * W, the head
    channels are the head's own h x w map bilinearly resized (``encoder.grid=joined``): the map is
    then computed on those h x w cells, read back from the grid, and its result resized the same way.
    Both steps are linear and a resize's weights sum to 1, so this is ``per_cell`` of every cell within
    float rounding, for (H W) / (h w) times fewer products. Any other grid: ``per_cell(head)``."""
    if len(head_resize) != 4 or head.shape[-2] != head_resize[2] * head_resize[3]:
        return per_cell(head)
    h, w, H, W = head_resize
    B, C = head.shape[0], head.shape[-1]
    (up_h, down_h), (up_w, down_w) = (resize_matrices(n, N, head) for n, N in ((h, H), (w, W)))
    cells = (down_h @ head.reshape(B, H, W * C)).reshape(B * h, W, C)  # (B h, W, C): rows to h
    cells = down_w @ cells  # (B h, w, C): the head's own cells
    out = up_w @ per_cell(cells)  # (B h, W, K)
    K = out.shape[-1]
    return (up_h @ out.reshape(B, h, W * K)).reshape(B, H * W, K)


def resize_matrices(n: int, N: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """The bilinear resize of one axis from n to N cells (``F.interpolate``, align_corners=False) as a
    matrix (N, n), and its pseudo-inverse (n, N), which reads the n cells back from the N (exactly
    for n <= N, where the resize loses nothing); in ``like``'s dtype and device."""
    up, down = _resize_matrices(n, N)
    return up.to(like.device, like.dtype), down.to(like.device, like.dtype)


@lru_cache(maxsize=16)
def _resize_matrices(n: int, N: int) -> tuple[Tensor, Tensor]:
    up = F.interpolate(torch.eye(n, dtype=torch.float64)[None], size=N, mode="linear", align_corners=False)[0].T
    return up, torch.linalg.pinv(up)


def singulars(words: Sequence[str]) -> dict[str, str]:
    """word -> its singular where it looks like a plural of another of ``words`` ("dogs" -> "dog",
    "boxes" -> "box", "cherries" -> "cherry"): a caption's plural then shares its noun's classes."""
    known = set(words)
    out = {}
    for w in words:
        for cut, add in (("ies", "y"), ("es", ""), ("s", "")):
            if w.endswith(cut) and w[: -len(cut)] + add in known:
                out[w] = w[: -len(cut)] + add
                break
    return out


def configure(cfg: Any, names: Sequence[str], encoder: Any, plurals: dict[str, str] | None = None) -> tuple[Any, list]:
    """A model config (``vqa`` or ``decoder``) with ``imagenet_classes`` and ``imagenet_channels``
    set for these answer or word ``names`` and ``encoder``, and the names' matched classes (for
    ``ImageNetEvidence.fill``); the config unchanged and None when its ``imagenet_weight`` is 0."""
    if not cfg.imagenet_weight:
        return cfg, None
    matches = match_answers(names, imagenet_lemmas(), plurals, imagenet_hypernyms())
    return dataclasses.replace(cfg, imagenet_classes=len(ImageNetEvidence.classes_for(matches)),
                               imagenet_channels=encoder.head_channels()), matches


def fill(module: Any, matches: list | None, encoder: Any) -> None:
    """Fill ``module.imagenet`` (a VQA net or a caption decoder) from ``encoder``'s classifier."""
    if matches is not None and module.imagenet is not None:
        module.imagenet.fill(encoder.imagenet_classifier(), matches)
