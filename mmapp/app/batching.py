"""Dynamic batching of model calls across concurrent requests, with per-request errors.

Gradio's own ``batch=True`` hands a batch function lists of inputs, but an exception fails every
request in the batch, and a batch function cannot fail just one of them. The app therefore validates
each request in its own handler (so a bad upload gets its own clear error) and hands only valid work
to a ``MicroBatcher``: a worker thread takes everything that is waiting (up to ``max_batch_size``)
and runs it as one model call. While the workers are busy new requests pile up and form the next
batch, so throughput grows with load and an idle server adds no latency. With ``workers`` > 1, that
many threads take batches from the same queue and run them side by side (on a CPU, one worker per
core: one model call runs its many small operations on one thread and would leave the others idle).
Under load (the previous batch held more than one item) the worker also lingers up to ``linger_s``
for a batch to fill before it runs it: when a full batch's replies go out together, their clients'
next requests arrive a few milliseconds apart, and without the wait the first of them would run
alone, a whole model call for one image, while the others queue behind it. Items handed in with
``submit_after`` are announced while the caller prepares them (the app resizes each image in its
request's thread): a worker about to run a batch that is not full waits for announced items, up to
``arrival_wait_s``, so a wave of requests still being resized joins one batch rather than several
small ones. Should a batch still fail, each of its items is retried alone, so one bad item only
fails its own request.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future
from typing import Callable, Generic, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

log = logging.getLogger(__name__)


class MicroBatcher(Generic[Item, Result]):
    """Runs ``run_batch(items) -> results`` (one result, or an ``Exception`` instance, per item)."""

    def __init__(self, run_batch: Callable[[Sequence[Item]], Sequence[Result | Exception]],
                 max_batch_size: int = 16, name: str = "batcher", linger_s: float = 0.01,
                 workers: int = 1, arrival_wait_s: float = 0.05) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if linger_s < 0 or arrival_wait_s < 0:
            raise ValueError(f"linger_s and arrival_wait_s must be >= 0, got {linger_s}, {arrival_wait_s}")
        self.run_batch, self.max_batch_size, self.name = run_batch, max_batch_size, name
        self.linger_s, self.workers, self.arrival_wait_s = linger_s, workers, arrival_wait_s
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=1000)  # recent sizes, for tests/stats
        self._pending: collections.deque[tuple[Item, Future]] = collections.deque()
        self._wake = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._arriving = 0  # items announced by submit_after and still being prepared
        self._closed = False

    def submit(self, item: Item, timeout: float | None = None) -> Result:
        """Queue one item, wait for its batch to run and return its result (or raise its error)."""
        return self._enqueue(item, announced=False).result(timeout)

    def submit_after(self, prepare: Callable[[], Item], timeout: float | None = None) -> Result:
        """``submit(prepare())``, with the item announced to the workers while ``prepare`` runs (in the
        caller's thread), so that a batch about to run waits for it (see the module docstring)."""
        with self._wake:
            self._arriving += 1
        try:
            item = prepare()
        except BaseException:
            with self._wake:
                self._arriving -= 1
                self._wake.notify_all()
            raise
        return self._enqueue(item, announced=True).result(timeout)

    def _enqueue(self, item: Item, announced: bool) -> Future:
        future: Future = Future()
        with self._wake:
            self._arriving -= announced
            if self._closed:
                raise RuntimeError(f"{self.name} is closed")
            self._pending.append((item, future))
            if not self._threads:  # started on first use: nothing runs at construction
                self._threads = [threading.Thread(target=self._loop, name=f"{self.name}-{i}", daemon=True)
                                 for i in range(self.workers)]
                for thread in self._threads:
                    thread.start()
            self._wake.notify_all()  # a lingering worker may be waiting for this very item
        return future

    def close(self) -> None:
        """Stop the workers after the work already queued."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if not self._pending:
                    return
                now = time.monotonic()
                # under load (the last batch held more than one item) let the batch fill; while
                # announced items are being prepared, wait for them (up to arrival_wait_s)
                fill_by = now + self.linger_s if self.batch_sizes and self.batch_sizes[-1] > 1 else now
                arrivals_by = now + self.arrival_wait_s
                while len(self._pending) < self.max_batch_size and not self._closed:
                    left = (arrivals_by if self._arriving > 0 else fill_by) - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
                batch = [self._pending.popleft() for _ in range(min(len(self._pending), self.max_batch_size))]
                if not batch:  # another worker took what was waiting while this one lingered
                    continue
                self.batch_sizes.append(len(batch))
            self._run([item for item, _ in batch], [future for _, future in batch])

    def _run(self, items: list[Item], futures: list[Future]) -> None:
        try:
            results = list(self.run_batch(items))
            if len(results) != len(items):
                raise RuntimeError(f"{self.name}: {len(items)} items gave {len(results)} results")
        except Exception as error:  # noqa: BLE001 - isolate the failing item by retrying one by one
            if len(items) > 1:
                log.warning("%s: a batch of %d failed (%s); retrying its items one by one",
                            self.name, len(items), error)
                for item, future in zip(items, futures):
                    self._run([item], [future])
                return
            results = [error]
        for future, result in zip(futures, results):
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
