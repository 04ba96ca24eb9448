"""Latency and throughput of one engine per batch size: the numbers that decide which backend a line uses.

Timed with ``time.perf_counter_ns`` around ``infer`` only (preprocessing is the same for every backend and
is measured by the runtime's own timings). Inputs are fixed random images, preprocessed like real ones.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engines.base import Engine
from engines.errors import UserError
from engines.imagesets import synthetic_batch


@dataclass
class BenchRow:
    batch: int
    runs: int
    p50_ms: float
    p99_ms: float
    images_per_s: float  # batch / the median batch time: the same statistic as ``per_image_ms``

    @property
    def per_image_ms(self) -> float:
        return self.p50_ms / self.batch


def parse_batches(text: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32]; anything else is a :class:`UserError`."""
    try:
        sizes = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--batch: expected comma-separated sizes like 1,8,32, got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise UserError(f"--batch: sizes must be positive integers, got {text!r}")
    return sizes


def bench_batch(engine: Engine, batch: int, seconds: float = 3.0, warmup: int = 3, min_runs: int = 5) -> BenchRow:
    """Run ``infer`` on one batch size for about ``seconds`` (at least ``min_runs`` times)."""
    x = synthetic_batch(engine.meta, batch, seed=batch)
    for _ in range(warmup):
        engine.infer(x)
    times: list[int] = []
    deadline = time.perf_counter_ns() + int(seconds * 1e9)
    while len(times) < min_runs or time.perf_counter_ns() < deadline:
        t0 = time.perf_counter_ns()
        engine.infer(x)
        times.append(time.perf_counter_ns() - t0)
    ms = np.asarray(times, dtype=np.float64) / 1e6
    return BenchRow(
        batch,
        len(ms),
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 99)),
        batch * 1000.0 / float(np.percentile(ms, 50)),  # the median, like p50_ms and per_image_ms
    )


def bench_engine(engine: Engine, batches: Sequence[int] = (1, 8, 32), seconds: float = 3.0) -> list[BenchRow]:
    return [bench_batch(engine, b, seconds) for b in batches]
