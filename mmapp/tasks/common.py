"""What the caption and VQA tasks share: a head with an optional encoder in front, and where the
visual input comes from (a feature cache, or images through the encoder)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mmapp.data.feature_cache import FeatureCache
from mmapp.errors import DataError
from mmapp.models.encoder import Encoder, build_encoder
from mmapp.ood import fit_ood, pooled_rows
from mmapp.run_config import RunConfig


class EncodedHead(nn.Module):
    """``head`` fed with grids (B, P, D): cached ones, or the encoder's output for images (B, 3, S, S).

    ``encoder`` is always present (its config and weights hash describe the head's input); it runs
    only on image batches, and trains only where ``fine_tune_stages`` > 0.
    """

    def __init__(self, encoder: Encoder, head: nn.Module) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def features(self, visual: Tensor) -> Tensor:
        """(B, P, D) grids pass through; (B, 3, S, S) images are encoded."""
        if visual.dim() == 4:
            return self.encoder(visual)
        return visual

    def forward(self, visual: Tensor, *args: Any) -> Any:
        return self.head(self.features(visual), *args)


def encoder_and_inputs(cfg: RunConfig) -> tuple[Any, Encoder, dict[str, Any]]:
    """(feature cache or None, the encoder, dataset keyword arguments for the visual input)."""
    if cfg.data.features:
        cache = FeatureCache.open(cfg.data.features)
        encoder = build_encoder(cache.encoder_config)
        if encoder.weights_id() != cache.weights_id:
            raise DataError(f"{cfg.data.features}: features were computed with encoder weights {cache.weights_id}, "
                            f"but {encoder.cfg.name} weights here hash to {encoder.weights_id()}; rebuild the cache")
        return cache, encoder, {"features": cache}
    if not cfg.data.images:
        raise ValueError("set data.features (a feature cache from `mmapp features`) or data.images (a folder)")
    encoder = build_encoder(cfg.encoder)
    return None, encoder, {"images_root": cfg.data.images, "encoder_cfg": cfg.encoder}


def ood_from_cache(cache: Any, train_handles: Any, val_handles: Any) -> tuple[dict, dict]:
    """Out-of-distribution statistics of the training images (threshold set on the validation
    images), as (checkpoint tensors, checkpoint meta); empty without a feature cache."""
    if cache is None:
        return {}, {}
    train_rows = sorted({int(h) for h in train_handles})
    val_rows = sorted({int(h) for h in val_handles})
    stats = fit_ood(pooled_rows(cache.array, train_rows), pooled_rows(cache.array, val_rows))
    return stats.tensors(), {"ood": stats.meta()}


def shard(items: list, rank: int, world_size: int) -> list:
    return items[rank::world_size]


@torch.no_grad()
def batched(dataset: Any, indices: list[int], batch_size: int, collate: Any):
    for start in range(0, len(indices), batch_size):
        yield collate([dataset[i] for i in indices[start:start + batch_size]])
