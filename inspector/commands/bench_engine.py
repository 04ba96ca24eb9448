"""`inspector bench-engine MODEL`: latency p50/p99 and throughput per batch size, as a table."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench-engine", help="measure a model's latency and throughput per batch size")
    p.add_argument("model", help="model file (.onnx, .engine or .pt)")
    p.add_argument("--batch", default="1,8,32", help="comma-separated batch sizes (default 1,8,32)")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per batch size (default 3)")
    p.add_argument("--threads", type=int, help="CPU threads (ONNX Runtime / PyTorch on CPU)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from rich.console import Console
    from rich.table import Table

    from engines.base import load_engine
    from engines.bench import bench_engine, parse_batches
    from ground.errors import UserError

    if args.seconds <= 0:
        raise UserError("--seconds must be positive")
    batches = parse_batches(args.batch)
    opts = {"threads": args.threads} if args.threads else {}
    with load_engine(args.model, **opts) as engine:
        rows = bench_engine(engine, batches, args.seconds)
        backend = engine.backend
    console = Console()
    console.print(
        f"{args.model} on {backend}; {args.threads or 'default'} threads, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    table = Table()
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
