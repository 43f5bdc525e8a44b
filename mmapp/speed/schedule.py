"""The learning-rate schedule held in a device tensor, for training steps replayed from CUDA graphs.

A captured optimizer step reads the learning rate from the memory it was captured with; a float
``param_group["lr"]`` would be baked into the graph. ``TensorSchedule`` keeps every step's rate in a
table on the device (``engine.lr_factor`` x the base rate, computed once) and copies step k's entry
into the optimizer's ``lr`` tensor in place: no host synchronisation, no new tensor. It follows
``torch.optim.lr_scheduler.LambdaLR``'s protocol (``step``, ``get_last_lr``, ``state_dict`` with
``last_epoch``, ``load_state_dict``), so the trainer and its checkpoints treat both alike, and it
sets the same rate at every step (``tests/test_fast_path.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mmapp.engine import lr_factor


class TensorSchedule:
    """``engine.make_scheduler``'s schedule over tensor learning rates (one per parameter group)."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: str, warmup: int, total: int,
                 tail_factor: float | None = None) -> None:
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            if not isinstance(group["lr"], Tensor):
                raise ValueError("a tensor schedule needs tensor learning rates (torch.optim.Adam(..., lr=torch.tensor(lr)))")
            group.setdefault("initial_lr", float(group["lr"]))
        self.base_lrs = [float(group["initial_lr"]) for group in optimizer.param_groups]
        factor = lr_factor(schedule, warmup, total, tail_factor)
        # steps 0..total; every later step has step total's rate (the decay's end, or the tail's)
        factors = torch.tensor([factor(step) for step in range(total + 1)], dtype=torch.float64)  # (total + 1,)
        self.tables = [(factors * base).to(group["lr"].device, group["lr"].dtype)
                       for base, group in zip(self.base_lrs, optimizer.param_groups)]
        self.last_epoch = -1
        self.step()  # as LambdaLR: the rate of step 0 from the start

    def _write(self) -> None:
        for table, group in zip(self.tables, self.optimizer.param_groups):
            group["lr"].copy_(table[min(self.last_epoch, len(table) - 1)], non_blocking=True)

    def step(self) -> None:
        self.last_epoch += 1
        self._write()

    def get_last_lr(self) -> list[float]:
        """The rates in use (reads the device: once an epoch, for the history)."""
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Takes its own ``state_dict`` or a ``LambdaLR``'s (both count steps in ``last_epoch``)."""
        self.last_epoch = int(state["last_epoch"])
        self._write()
