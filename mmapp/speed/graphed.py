"""Whole training steps captured in CUDA graphs: one launch per batch instead of thousands.

A recurrent decoder's training step on a GPU is bound by the host launching small kernels: about 20
words, each a dozen kernels forward and twice that backward, plus the optimizer. ``GraphedTrainStep``
records the whole step once per batch shape (forward, loss, backward, gradient clipping and a fused
Adam update) and then replays it: the host copies the batch into the graph's input buffers and
launches it, and nothing waits for the device.

What a captured step needs, and how it is given here:

* fixed shapes: one graph per batch shape (``key``); shapes seen fewer than ``warmup`` times run
  eagerly, so a rare shape (an epoch's short last batch) never pays a capture. Callers pad batches to
  a few shapes (``mmapp.speed.fixed_shapes``: caption lengths rounded up to a bucket and so on);
* no host synchronisation: the loss function returns its terms as tensors (``caption_loss_terms``) and
  the decoder runs every row through every step (``use_training_path(decoder, "static")``);
* an optimizer that keeps its state on the device: ``torch.optim.Adam(..., fused=True)`` (with
  ``capturable=True`` where the learning rate is a tensor a scheduler fills);
* the engine's guarantee that a non-finite loss never reaches the weights: the step computes, on
  the device, whether the loss or the gradient norm is non-finite and hands that to the fused
  optimizer as ``found_inf`` (what ``GradScaler`` does), which then leaves weights and moments alone.
  ``skipped`` counts such steps; ``train_graphed_epoch`` reads it every ``check_every`` steps and stops.

On a CPU (or with ``capture=False``) the same step runs eagerly: the tests check it there against
the plain engine, and ``benchmarks/gpu_epoch.py --check-steps`` checks the captured replay against
it on a GPU.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from mmapp.engine import Precision, to_device
from mmapp.errors import NonFiniteLossError

LossTerms = Callable[[nn.Module, dict], "tuple[Tensor, dict[str, Tensor], int]"]


def batch_key(batch: dict[str, Tensor]) -> tuple:
    """What a graph is specific to: every tensor's name, shape and dtype."""
    return tuple((name, tuple(t.shape), t.dtype) for name, t in sorted(batch.items()))


class GraphedTrainStep:
    """``step(batch) -> (loss, terms, count)``: one optimizer step on ``batch`` (a dict of tensors on
    ``device``), replayed from a CUDA graph once its shape has been seen ``warmup`` times.

    ``loss_terms(model, batch) -> (loss, {name: 0-dim tensor}, count)`` must not synchronise with the
    device. The returned tensors are the graph's own buffers: read or accumulate them before the next
    call. ``count`` is a Python int.
    """

    def __init__(self, model: nn.Module, loss_terms: LossTerms, optimizer: torch.optim.Optimizer,
                 precision: Precision, grad_clip: float, device: torch.device, warmup: int = 2,
                 max_graphs: int = 16, capture: bool | None = None) -> None:
        if not optimizer.defaults.get("fused"):
            raise ValueError("a graphed training step needs a fused optimizer (torch.optim.Adam(..., fused=True)):"
                             " it skips non-finite steps on the device through found_inf")
        capture = device.type == "cuda" if capture is None else capture
        if capture and device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        if capture and not all(group.get("capturable") for group in optimizer.param_groups):
            raise ValueError("capturing the optimizer step needs torch.optim.Adam(..., fused=True, capturable=True)")
        if precision.use_scaler:
            raise ValueError("a graphed training step does not take a GradScaler (fp16): use bf16 or fp32")
        self.model, self.loss_terms, self.optimizer = model, loss_terms, optimizer
        self.precision, self.grad_clip, self.device = precision, grad_clip, device
        self.warmup, self.max_graphs = max(1, warmup), max_graphs
        self.capture = capture
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.found_inf = torch.zeros((), device=device)  # this step's loss or gradient was not finite
        self.skipped = torch.zeros((), device=device)  # steps skipped for that, since construction
        self._graphs: dict[tuple, tuple[Any, dict[str, Tensor], tuple]] = {}
        self._seen: dict[tuple, int] = {}
        self.eager_steps = 0
        self.replays = 0

    @property
    def graphs(self) -> int:
        return len(self._graphs)

    def _step(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor], int]:
        """The step itself, eager or being captured: nothing here waits for the device."""
        with self.precision.autocast(self.device):
            loss, terms, count = self.loss_terms(self.model, batch)
        loss.backward()
        max_norm = self.grad_clip if self.grad_clip > 0 else math.inf
        norm = nn.utils.clip_grad_norm_(self.params, max_norm, foreach=self.device.type == "cuda" or None)
        loss = loss.detach()
        self.found_inf.copy_((~torch.isfinite(loss) | ~torch.isfinite(norm)).float())
        self.skipped.add_(self.found_inf)
        self.optimizer.found_inf = self.found_inf  # read by the fused update, as GradScaler hands it over
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.found_inf
        return loss, {name: t.detach() for name, t in terms.items()}, count

    def _eager(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor], int]:
        self.optimizer.zero_grad(set_to_none=True)
        self.eager_steps += 1
        if not self.capture or self.device.type != "cuda":
            return self._step(batch)
        # Warm-up steps run on a side stream, as CUDA graph capture asks (autograd's streams, lazy init).
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            out = self._step(batch)
        torch.cuda.current_stream(self.device).wait_stream(side)
        return out

    def _capture(self, batch: dict[str, Tensor]) -> tuple[Any, dict[str, Tensor], tuple]:
        static = {name: t.clone() for name, t in batch.items()}
        self.optimizer.zero_grad(set_to_none=True)  # the graph's backward writes its own gradients
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self._step(static)
        return graph, static, outputs

    def __call__(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor], int]:
        key = batch_key(batch)
        entry = self._graphs.get(key)
        if entry is None:
            seen = self._seen.get(key, 0)
            self._seen[key] = seen + 1
            if not self.capture or seen < self.warmup or len(self._graphs) >= self.max_graphs:
                return self._eager(batch)
            entry = self._graphs[key] = self._capture(batch)  # recorded, not run: replayed below
        graph, static, outputs = entry
        for name, t in batch.items():
            static[name].copy_(t, non_blocking=True)
        graph.replay()
        self.replays += 1
        return outputs


def train_graphed_epoch(model: nn.Module, batches: Iterable[Any], graphed: GraphedTrainStep, scheduler: Any,
                        device: torch.device, on_step: Callable[[int, dict], None] | None = None,
                        progress: Any = None, check_every: int = 50) -> dict[str, float]:
    """``engine.train_one_epoch`` with every step run by ``graphed`` (which holds the loss, optimizer and
    clipping): the steps run without waiting for the device, losses are summed there, ``on_step`` gets
    ``{"loss": None}``, and the progress bar's loss and the non-finite check are read every
    ``check_every`` steps (a non-finite step never updates the weights, see the module docstring).
    ``batches`` yields dicts of tensors, or ``(dict, count)`` where padding rows make the loss
    function's count (a shape) larger than the batch's real items (``mmapp.speed.fixed_shapes``).
    Returns what ``train_one_epoch`` returns; raises ``NonFiniteLossError`` as it does.
    """
    model.train()
    if scheduler is not None and not isinstance(graphed.optimizer.param_groups[0]["lr"], Tensor):
        raise ValueError("a scheduler with a graphed step needs a tensor learning rate "
                         "(torch.optim.Adam(..., lr=torch.tensor(lr))): a captured step keeps a float one")
    loss_sum = torch.zeros((), device=device)
    totals: dict[str, Tensor] = {}
    items, steps, skipped_before = 0, 0, float(graphed.skipped)
    start = time.perf_counter()

    def check(step: int) -> float:
        skipped = float(graphed.skipped) - skipped_before
        if skipped:
            raise NonFiniteLossError(f"the loss or its gradient became non-finite in {skipped:.0f} of the first {step} "
                                     "steps of this epoch; those updates were skipped, training stopped and no "
                                     "checkpoint was written from this state (lower train.lr, check the data)")
        return float(loss_sum) / max(items, 1)

    for step, batch in enumerate(batches, start=1):
        real = None
        if isinstance(batch, tuple):  # (padded batch, its real items): a captured count is the padded one
            batch, real = batch
        loss, terms, count = graphed(to_device(batch, device))
        count = count if real is None else real
        loss_sum.add_(loss, alpha=count)
        for k, v in terms.items():
            totals[k] = totals[k].add_(v, alpha=count) if k in totals else v * count
        items += count
        steps += 1
        if scheduler is not None:
            scheduler.step()
        if step % check_every == 0:
            mean = check(step)
            if progress is not None:
                progress.set_postfix(loss=f"{mean:.3f}", items_s=f"{items / (time.perf_counter() - start):.0f}")
        if progress is not None:
            progress.update(1)
        if on_step is not None:
            on_step(step, {"loss": None})
    mean = check(steps)
    elapsed = time.perf_counter() - start
    result = {"loss": mean, "items_per_s": items / max(elapsed, 1e-9), "steps": steps, "seconds": elapsed}
    result.update({k: float(v) / max(items, 1) for k, v in totals.items()})
    return result
