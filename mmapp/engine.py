"""A thin training engine: one epoch of optimisation, returning a dict, knowing nothing of the CLI.

The task (captioning or VQA) supplies ``loss(model, batch) -> (loss, stats, count)``; the engine does
device moves, autocast, backward, clipping, the optimizer and scheduler steps, and stops on a
non-finite loss before anything can be written.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from mmapp.errors import NonFiniteLossError


@dataclass(frozen=True)
class Precision:
    """Autocast settings resolved for a device: dtype None means full fp32."""

    dtype: torch.dtype | None
    use_scaler: bool

    @staticmethod
    def resolve(amp: str, device: torch.device) -> "Precision":
        if amp not in ("auto", "bf16", "fp16", "off"):
            raise ValueError(f"train.amp must be auto, bf16, fp16 or off, got {amp!r}")
        if device.type != "cuda" or amp == "off":
            return Precision(None, False)
        if amp == "fp16":
            return Precision(torch.float16, True)
        return Precision(torch.bfloat16, False)

    def autocast(self, device: torch.device):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def lr_factor(schedule: str, warmup: int, total: int, tail_factor: float | None = None) -> Callable[[int], float]:
    """The learning rate at optimizer step ``step`` over the base rate: linear warm-up, then cosine decay
    to 0 / steps of 0.1 at 50% and 75% / constant, over ``total`` steps; after them, ``tail_factor`` x
    the base rate where given (the self-critical epochs, which follow the cross-entropy ones at their
    own constant rate)."""
    def factor(step: int) -> float:
        if tail_factor is not None and step >= total:
            return tail_factor
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if schedule == "step":
            return 0.1 ** (int(progress >= 0.5) + int(progress >= 0.75))
        return 1.0

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, warmup: int, total: int,
                   tail_factor: float | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """``lr_factor``'s schedule over a float learning rate (``mmapp.speed.schedule`` writes it into a
    tensor one)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(schedule, warmup, total, tail_factor))


LossFn = Callable[[nn.Module, Any], "tuple[Tensor, dict[str, float], int]"]


def train_one_epoch(model: nn.Module, batches: Iterable[Any], loss_fn: LossFn, optimizer: torch.optim.Optimizer,
                    scheduler: Any, device: torch.device, precision: Precision, grad_clip: float,
                    scaler: Any = None, on_step: Callable[[int, dict], None] | None = None,
                    progress: Any = None) -> dict[str, float]:
    """One pass over ``batches``. Returns mean loss, the loss terms, items/s and the step count.

    ``on_step(step_in_epoch, stats)`` runs after every optimizer step (e.g. periodic checkpoints).
    Raises ``NonFiniteLossError`` on a NaN/inf loss, before the optimizer touches the weights.
    ``mmapp.speed.graphed.train_graphed_epoch`` is the same loop over steps replayed from CUDA graphs.
    """
    model.train()
    totals: dict[str, float] = {}
    loss_sum, items, steps = 0.0, 0, 0
    start = time.perf_counter()
    for step, batch in enumerate(batches, start=1):
        batch = to_device(batch, device)
        with precision.autocast(device):
            loss, stats, count = loss_fn(model, batch)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLossError(f"the loss became {value} at step {step} of this epoch; training stopped "
                                     "and no checkpoint was written from this state (lower train.lr, check the data)")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += value * count
        items += count
        steps += 1
        for k, v in stats.items():
            totals[k] = totals.get(k, 0.0) + v * count
        if progress is not None:
            elapsed = time.perf_counter() - start
            progress.set_postfix(loss=f"{value:.3f}", items_s=f"{items / max(elapsed, 1e-9):.0f}")
            progress.update(1)
        if on_step is not None:
            on_step(step, {"loss": value})
    elapsed = time.perf_counter() - start
    result = {"loss": loss_sum / max(items, 1), "items_per_s": items / max(elapsed, 1e-9), "steps": steps,
              "seconds": elapsed}
    result.update({k: v / max(items, 1) for k, v in totals.items()})
    return result
