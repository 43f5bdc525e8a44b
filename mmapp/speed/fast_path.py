"""The trainer's fast path (``train.cuda_graphs``): fixed-shape batches, a tensor learning-rate
schedule, fused Adam and whole training steps replayed from CUDA graphs.

``train.cuda_graphs``:

* ``auto`` (the default): on where the run can take it on a CUDA device (see ``fast_path_reason``),
  off elsewhere (the CPU, DDP, fp16, ``train.compile``, a fine-tuned encoder);
* ``on``: the fast path, or an error saying why it cannot be; on a CPU it runs the same steps
  eagerly (padded batches, tensor schedule, fused Adam, the device-side non-finite guard; nothing is
  captured), which is how the tests exercise it;
* ``off``: the eager engine (``engine.train_one_epoch``) with free-shaped batches, as before.

Self-critical epochs (``train.self_critical_after``) run eagerly through ``engine.train_one_epoch``
with the same optimizer and schedule: their sampled captions have no fixed shape.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from mmapp.engine import Precision
from mmapp.errors import NonFiniteLossError
from mmapp.models.recurrent_decoder import RecurrentAttentionDecoder
from mmapp.models.vqa import VQANet
from mmapp.speed.fixed_shapes import use_static_shapes
from mmapp.speed.graphed import GraphedTrainStep, train_graphed_epoch

SETTINGS = ("auto", "on", "off")


def fast_path_reason(train_cfg: Any, device: torch.device, distributed: bool, precision: Precision,
                     model: nn.Module) -> str | None:
    """Why this run cannot take the fast path (None: it can)."""
    head = getattr(model, "head", model)
    if distributed:
        return "it runs in one process (DDP's gradient hooks are not captured)"
    if precision.use_scaler:
        return "fp16's GradScaler is not captured: use train.amp=bf16 or off"
    if train_cfg.compile:
        return "train.compile is another training path: pick one"
    if any(p.requires_grad for p in getattr(model, "encoder", nn.Module()).parameters()):
        return "a fine-tuned encoder's BatchNorm would see the padding images"
    if not isinstance(head, (RecurrentAttentionDecoder, VQANet)):
        return f"{type(head).__name__} has no fixed-shape training path (recurrent decoders and the VQA model do)"
    if isinstance(head, VQANet) and head.cfg.head != "classify":
        return "the generative VQA head (vqa.head=generate) has no fixed-shape batches yet"
    return None


def wants_fast_path(train_cfg: Any, device: torch.device, distributed: bool, precision: Precision,
                    model: nn.Module) -> bool:
    """Resolve ``train.cuda_graphs`` once for a run; ``on`` raises ``ValueError`` where it cannot be."""
    if train_cfg.cuda_graphs == "off":
        return False
    reason = fast_path_reason(train_cfg, device, distributed, precision, model)
    if train_cfg.cuda_graphs == "on" and reason:
        raise ValueError(f"train.cuda_graphs=on: {reason}")
    return reason is None and (train_cfg.cuda_graphs == "on" or device.type == "cuda")


class FastPath:
    """What the trainer swaps in on the fast path: the optimizer (fused Adam, tensor learning rate;
    capturable on CUDA), the fixed-shape collate and the graphed epoch; its schedule is
    ``speed.schedule.TensorSchedule``.

    ``loss_terms(model, batch)`` is the task's loss with its terms as tensors (no host sync);
    ``fixed_batch(batch) -> (tensors, count)`` pads a collated batch to its fixed shape and counts
    its real items.
    """

    def __init__(self, model: nn.Module, loss_terms: Callable, fixed_batch: Callable, train_cfg: Any,
                 device: torch.device, precision: Precision) -> None:
        use_static_shapes(model)
        self.device, self.fixed_batch = device, fixed_batch
        params = [p for p in model.parameters() if p.requires_grad]
        lr = torch.tensor(float(train_cfg.lr), device=device)
        self.optimizer = torch.optim.Adam(params, lr=lr, weight_decay=train_cfg.weight_decay, fused=True,
                                          capturable=device.type == "cuda")
        self.step = GraphedTrainStep(model, loss_terms, self.optimizer, precision, train_cfg.grad_clip, device)
        self._skipped_before = 0.0

    def collate(self, collate: Callable) -> Callable:
        """``collate`` followed by ``fixed_batch``, run in the loader's workers."""
        return _Padded(collate, self.fixed_batch)

    def after_load(self) -> None:
        """``optimizer.load_state_dict`` put the checkpoint's (CPU) rate tensors in the groups: back to
        the device, before anything is captured."""
        for group in self.optimizer.param_groups:
            group["lr"] = torch.as_tensor(group["lr"], dtype=torch.float32).to(self.device)

    def guard(self) -> None:
        """Raise ``NonFiniteLossError`` if a step of this epoch was skipped as non-finite (one sync):
        called before a mid-epoch checkpoint is written."""
        skipped = float(self.step.skipped) - self._skipped_before
        if skipped:
            raise NonFiniteLossError(f"the loss or its gradient became non-finite in {skipped:.0f} step(s) of this "
                                     "epoch; those updates were skipped, training stopped and no checkpoint was "
                                     "written from this state (lower train.lr, check the data)")

    def epoch(self, model: nn.Module, batches: Any, scheduler: Any, on_step: Callable | None = None,
              progress: Any = None) -> dict[str, float]:
        self._skipped_before = float(self.step.skipped)
        stats = train_graphed_epoch(model, batches, self.step, scheduler, self.device, on_step, progress)
        stats.update(graphs=self.step.graphs, eager_steps=self.step.eager_steps)
        return stats


class _Padded:
    """A picklable ``fixed_batch(collate(items))`` for DataLoader workers."""

    def __init__(self, collate: Callable, fixed_batch: Callable) -> None:
        self.collate, self.fixed_batch = collate, fixed_batch

    def __call__(self, items: list) -> Any:
        return self.fixed_batch(self.collate(items))
