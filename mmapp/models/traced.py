"""A module's method run through a TorchScript trace at inference: the whole call as one call from Python.

Each torch operation called from Python gives the GIL back while it runs and takes it again after.
Beside other busy threads (the app's second batch worker, its HTTP and request threads) each of
those hand-backs may wait for the GIL, and the thread is put to sleep and woken again. The
EfficientNet-Lite0 encoder makes about 570 calls from Python into C per forward, most of them
torch operations: two encoder threads in one process sustained 146-185 images/s against 200 in
two processes. A trace runs the same operations in C++ under one hand-back of the GIL: 213-216
images/s, a fifth of the context switches, and the same results, bitwise (docs/benchmarks.md,
"The Gradio queue's polling, and the encoder's GIL hand-backs").

TorchScript is deprecated in favour of ``torch.compile`` and ``torch.export``, but neither runs a graph
outside Python without compiling C++ at run time (a compiler, and seconds to minutes of start-up). The
torch this project pins (<= 2.14.1) has it; should ``torch.jit`` go, or fail to trace a method, the
method runs as it is.

A trace records one input's shapes. The batch dimension stays free when the method does not turn
the batch size into a Python number, which is checked when the trace is made: the trace and the
method must agree bitwise on another batch size, or the method keeps running as it is.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import torch
from torch import Tensor, nn

MAX_TRACES = 4  # input shapes traced per method; others run as they are


class Traced:
    """``Traced(module, "name")(x)`` == ``module.name(x)`` for a tensor ``x`` (B, ...), through one trace per
    (shape past the batch dimension, dtype, memory layout), made on first use. For inference only
    (no gradients) and for a module whose parameters no longer change."""

    def __init__(self, module: nn.Module, method: str) -> None:
        self.module, self.method = module, method
        self._traces: dict[tuple, Any] = {}  # key -> the traced module, or None: run the method as it is
        self._lock = threading.Lock()

    def __call__(self, x: Tensor) -> Tensor:
        key = (tuple(x.shape[1:]), x.dtype, x.device, x.is_contiguous(memory_format=torch.channels_last))
        if key not in self._traces:
            with self._lock:  # two threads' first calls make one trace
                if key not in self._traces:
                    self._traces[key] = self._trace(x) if len(self._traces) < MAX_TRACES else None
        traced = self._traces[key]
        return getattr(self.module, self.method)(x) if traced is None else getattr(traced, self.method)(x)

    def _trace(self, x: Tensor):
        """The trace for ``x``'s shape, or None where it does not reproduce the method at another batch size."""
        run = getattr(self.module, self.method)
        other = x[:1] if x.shape[0] > 1 else torch.cat([x, x])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes past the batch are meant to be fixed
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation: see the module docstring
            try:
                traced = torch.jit.trace_module(self.module, {self.method: x}, check_trace=False)
            except (AttributeError, RuntimeError, TypeError, ValueError):
                return None
        expected = run(other)
        try:
            got = getattr(traced, self.method)(other)
        except RuntimeError:  # e.g. a view to the traced batch size
            return None
        same = isinstance(got, Tensor) and got.shape == expected.shape and torch.equal(got, expected)
        return traced if same else None

    def __getstate__(self) -> dict:  # copies (deepcopy, pickle) start without traces
        return {"module": self.module, "method": self.method}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["module"], state["method"])
