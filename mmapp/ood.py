"""Is an image like the ones a model was trained on? A diagonal-Gaussian score on pooled features.

Each checkpoint stores the per-dimension mean and standard deviation of its training images' pooled
(mean over the grid) encoder features, and a threshold: a high quantile of the score on held-out
in-domain images. The score is the mean squared z-score, about 1 for typical training images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


OWN_DATA_SECTION = 'the README section "Train on your own data"'


@dataclass(frozen=True)
class DomainCheck:
    """One image's out-of-domain verdict: its score against the checkpoint's threshold."""

    score: float
    threshold: float

    @property
    def out_of_domain(self) -> bool:
        return self.score > self.threshold

    def message(self, kind: str) -> str | None:
        """The warning for an out-of-domain image (``kind``: "captioner", "VQA model"), or None."""
        if not self.out_of_domain:
            return None
        return (f"this image looks unlike the images the {kind} was trained on (out-of-domain score "
                f"{self.score:.2f}, threshold {self.threshold:.2f}), so expect wrong answers; to use the models "
                f"on pictures like this one, train them on your own data: see {OWN_DATA_SECTION}")

    def to_json(self) -> dict:
        return {"score": self.score, "threshold": self.threshold, "flagged": self.out_of_domain}


@dataclass(frozen=True)
class OODStats:
    mean: Tensor  # (D,)
    std: Tensor  # (D,)
    threshold: float
    quantile: float
    heldout_pass_rate: float

    def score(self, features: Tensor) -> Tensor:
        """features (B, P, D) grids -> scores (B,); higher is further from the training images."""
        pooled = features.float().mean(dim=1)  # (B, D)
        z = (pooled - self.mean.to(pooled.device)) / self.std.to(pooled.device)
        return (z ** 2).mean(dim=-1)

    def checks(self, features: Tensor) -> list[DomainCheck | None]:
        """features (B, P, D) -> one verdict per image; None each for features of another encoder."""
        if features.shape[-1] != self.mean.numel():
            return [None] * features.shape[0]
        return [DomainCheck(float(s), self.threshold) for s in self.score(features).tolist()]

    def tensors(self) -> dict[str, Tensor]:
        return {"ood.mean": self.mean, "ood.std": self.std}

    def meta(self) -> dict:
        return {"threshold": self.threshold, "quantile": self.quantile,
                "heldout_pass_rate": self.heldout_pass_rate, "score": "mean squared z-score of pooled features"}

    @staticmethod
    def from_checkpoint(meta: dict, tensors: dict[str, Tensor]) -> "OODStats | None":
        info = meta.get("ood")
        if not info or "ood.mean" not in tensors:
            return None
        return OODStats(tensors["ood.mean"].float(), tensors["ood.std"].float(), float(info["threshold"]),
                        float(info.get("quantile", 0.0)), float(info.get("heldout_pass_rate", 0.0)))


def pooled_rows(array: np.ndarray, rows: list[int], chunk: int = 256) -> np.ndarray:
    """Mean over the grid of cached rows: array (I, P, D) float16 memmap of I images -> (len(rows), D) float32."""
    out = np.empty((len(rows), array.shape[-1]), dtype=np.float32)
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        out[start:start + len(part)] = array[part].astype(np.float32).mean(axis=1)  # (chunk, D)
    return out


def fit_ood(train_pooled: np.ndarray, heldout_pooled: np.ndarray, quantile: float = 0.99,
            margin: float = 1.25) -> OODStats:
    """Statistics of (I, D) training features; the threshold is ``margin`` x the ``quantile`` of
    held-out in-domain scores, so that nearly every in-domain image passes."""
    mean = torch.from_numpy(train_pooled.mean(axis=0))
    std = torch.from_numpy(train_pooled.std(axis=0)).clamp(min=1e-3)
    partial = OODStats(mean, std, float("inf"), quantile, 1.0)
    held = partial.score(torch.from_numpy(heldout_pooled).unsqueeze(1)).numpy()  # (M,)
    threshold = float(np.quantile(held, quantile) * margin)
    return OODStats(mean, std, threshold, quantile, float((held <= threshold).mean()))
