"""`inspector bench-engine MODEL [MODEL ...]`: latency p50/p99 and throughput per batch size, one table.

ms/image and images/s come from the same statistic (the median batch time), so one is 1000 / the other;
several models are measured one after the other in the same run, so their rows compare."""

from __future__ import annotations

import argparse
from pathlib import Path

from inspector.commands.argtypes import count, positive


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench-engine", help="measure a model's latency and throughput per batch size")
    p.add_argument("model", nargs="+", help="model file(s) (.onnx, .engine or .pt), measured one after the other")
    p.add_argument("--batch", default="1,8,32", help="comma-separated batch sizes (default 1,8,32)")
    p.add_argument("--seconds", type=positive, default=3.0, help="seconds per batch size (default 3)")
    p.add_argument("--threads", type=count, help="CPU threads (ONNX Runtime / PyTorch on CPU)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from rich.console import Console
    from rich.table import Table

    from engines.base import load_engine
    from engines.bench import bench_engine, parse_batches

    batches = parse_batches(args.batch)
    opts = {"threads": args.threads} if args.threads else {}
    results = []
    for model in args.model:
        with load_engine(model, **opts) as engine:
            results.append((model, engine.backend, bench_engine(engine, batches, args.seconds)))
    console = Console()
    console.print(
        f"{args.threads or 'default'} threads, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        "ms/image and images/s are both from the median (p50) batch time"
    )
    for model, backend, rows in results:
        table = Table(title=f"{Path(model).name} on {backend}", title_justify="left")
        for col in ("batch", "runs", "p50 ms", "p99 ms", "ms/image", "images/s"):
            table.add_column(col, justify="right")
        for r in rows:
            table.add_row(
                str(r.batch),
                str(r.runs),
                f"{r.p50_ms:.2f}",
                f"{r.p99_ms:.2f}",
                f"{r.per_image_ms:.3f}",
                f"{r.images_per_s:.0f}",
            )
        console.print(table)
    return 0
