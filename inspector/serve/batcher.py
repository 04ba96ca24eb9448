"""A dynamic batcher: images from concurrent requests share one engine call, on a bounded queue.

Like Triton's dynamic batcher and Ray Serve's ``@serve.batch``: one worker thread takes the oldest waiting
image, then keeps taking until it holds ``max_batch`` images or ``max_wait_ms`` have passed since that oldest
image arrived, and runs them through the engine as one batch. It waits only while more images are on their
way (requests being decoded that called :meth:`Batcher.expect`), so a lone client pays no batching delay.
The queue holds at most ``max_queue`` images; a request that does not fit is refused whole (:class:`QueueFull`,
the API's 503) instead of the queue growing without bound. Each image carries its own future, so a batch
never mixes up whose answer is whose.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue cannot take the request's images now; the caller should retry later."""


class Stopped(Exception):
    """The batcher was closed before the image was judged."""


@dataclass(slots=True)
class _Item:
    payload: Any
    future: Future
    t_queued: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class BatchStats:
    """What one engine call did, for metrics: its size and how long the batch took."""

    size: int
    seconds: float


class Batcher:
    """``submit`` payloads (any thread); ``run_batch(payloads) -> results`` runs on the one worker thread.

    ``on_batch`` (optional) is called on the worker after each batch with its :class:`BatchStats`.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Any]], Sequence[Any]],
        *,
        max_batch: int = 16,
        max_wait_ms: float = 2.0,
        max_queue: int = 64,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait_ms >= 0")
        self._run = run_batch
        self.max_batch, self.max_queue, self.max_wait_s = max_batch, max_queue, max_wait_ms / 1e3
        self._on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._coming = 0  # requests announced by expect() and not yet submitted or withdrawn
        self.rejected = 0  # requests refused because the queue was full
        self._thread = threading.Thread(target=self._work, name="serve-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Images waiting (not counting the batch in the engine)."""
        return len(self._queue)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def expect(self) -> None:
        """A request is being prepared and will submit (or :meth:`withdraw`) soon: a batch may wait for it."""
        with self._cond:
            self._coming += 1

    def withdraw(self) -> None:
        """An expected request will not submit after all (its upload was bad)."""
        with self._cond:
            self._coming = max(0, self._coming - 1)
            self._cond.notify()

    def submit(self, payloads: Sequence[Any], expected: bool = False) -> list[Future]:
        """Queue all of ``payloads`` or none: :class:`QueueFull` when they do not all fit.

        ``expected``: this request announced itself with :meth:`expect` (it is no longer on its way).
        """
        futures = [Future() for _ in payloads]
        with self._cond:
            if expected:
                self._coming = max(0, self._coming - 1)
            if self._stop:
                raise Stopped("the classifier is shutting down")
            if len(self._queue) + len(payloads) > self.max_queue:
                self.rejected += 1
                self._cond.notify()
                raise QueueFull(f"{len(self._queue)} image(s) already waiting (max_queue {self.max_queue})")
            now = time.monotonic()
            self._queue.extend(_Item(p, f, now) for p, f in zip(payloads, futures, strict=True))
            self._cond.notify()
        return futures

    def _take(self) -> list[_Item] | None:
        """The next batch: wait for a first image, then, while more are on their way, for them until max_batch
        or the first one's max_wait is up."""
        with self._cond:
            while not self._queue and not self._stop:
                self._cond.wait(timeout=0.5)
            if self._stop:
                return None
            deadline = self._queue[0].t_queued + self.max_wait_s
            while len(self._queue) < self.max_batch and self._coming > 0 and not self._stop:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(timeout=left)
            n = min(self.max_batch, len(self._queue))
            taken = [self._queue.popleft() for _ in range(n)]
        # a request whose client went away has cancelled its futures: its images are not run
        return [it for it in taken if it.future.set_running_or_notify_cancel()]

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if not batch:
                continue
            t0 = time.monotonic()
            try:
                results = self._run([it.payload for it in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch of {len(batch)} gave {len(results)} result(s)")
            except Exception as exc:  # noqa: BLE001 - one failed batch fails its requests, never the worker
                log.error("classify batch of %d failed: %s", len(batch), exc)
                for it in batch:
                    it.future.set_exception(exc)
                continue
            for it, r in zip(batch, results, strict=True):
                it.future.set_result(r)
            if self._on_batch is not None:
                self._on_batch(BatchStats(len(batch), time.monotonic() - t0))

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker after its current batch; images still queued fail with :class:`Stopped`. Idempotent."""
        with self._cond:
            self._stop = True
            left = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for it in left:
            if it.future.set_running_or_notify_cancel():
                it.future.set_exception(Stopped("the classifier is shutting down"))
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("serve-batcher thread still alive %.1f s after close()", timeout)
