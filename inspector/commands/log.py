"""`inspector log export|stats`: read the defect log written by `inspector run --log-db`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("log", help="export or summarise the defect log (SQLite)")
    lsub = p.add_subparsers(dest="log_command", metavar="{export,stats}", required=True)
    e = lsub.add_parser("export", help="write log rows as CSV or JSON lines, oldest first")
    e.add_argument("--db", required=True, help="the defect log database (log.db)")
    e.add_argument("--since", help="rows from: an age (30m, 2h, 7d) or a date/time (2026-11-27, 2026-11-27T14:00)")
    e.add_argument("--until", help="rows before: same forms as --since")
    e.add_argument("--verdict", choices=("ok", "defect", "no_verdict"), help="only this verdict")
    e.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="output format (default csv)")
    e.add_argument("--out", help="output file (default: standard output)")
    e.set_defaults(func=run_export)
    s = lsub.add_parser("stats", help="counts by verdict, class and gate outcome; latency; images")
    s.add_argument("--db", required=True, help="the defect log database (log.db)")
    s.add_argument("--since", help="only rows from: an age (30m, 2h, 7d) or a date/time")
    s.add_argument("--until", help="only rows before: same forms as --since")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=run_stats)


def run_export(args: argparse.Namespace) -> int:
    import sys

    from ground.errors import UserError
    from inspector.defectlog.query import check_window, export, parse_when
    from inspector.outputs import check_distinct

    since, until = parse_when(args.since), parse_when(args.until, "--until")
    check_window(since, until, args.since, args.until)
    check_distinct({"--out": args.out}, {"--db": args.db})
    if args.out:
        try:
            with open(args.out, "w", newline="", encoding="utf-8") as f:
                n = export(args.db, f, since=since, until=until, verdict=args.verdict, fmt=args.format)
        except OSError as exc:
            raise UserError(f"--out {args.out}: cannot write ({exc.strerror})") from None
        print(f"{n} rows written to {args.out}", file=sys.stderr)
    else:
        try:
            export(args.db, sys.stdout, since=since, until=until, verdict=args.verdict, fmt=args.format)
        except BrokenPipeError:  # `| head`: the reader has what it wanted
            sys.stdout = None  # type: ignore[assignment]  # no flush error at exit
    return 0


def run_stats(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from inspector.defectlog.query import check_window, parse_when, stats

    since, until = parse_when(args.since), parse_when(args.until, "--until")
    check_window(since, until, args.since, args.until)
    s = stats(args.db, since=since, until=until)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    con = Console()
    con.print(f"[bold]{s['db']}[/]: {s['parts']} parts, {s['first']} .. {s['last']}")
    for title in ("verdicts", "classes", "gate"):
        t = Table(title=title, title_justify="left")
        t.add_column({"verdicts": "verdict", "classes": "class", "gate": "gate outcome"}[title])
        t.add_column("parts", justify="right")
        for k, n in s[title].items():
            t.add_row(k, str(n))
        con.print(t)
    lat = s["latency_ms"]
    if lat["p50"] is not None:
        con.print(
            f"capture-to-verdict latency: p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms"
        )
    con.print(f"images kept {s['images_kept']} ({s['images_mb']} MB), dropped {s['images_dropped']}")
    for r in s["runs"]:
        con.print(
            f"run {r['run']}: model {r['model_hash']}, config {r['config_hash']}, rows {r['rows']}, "
            f"images {r['images']}, dropped {r['images_dropped']}"
        )
    return 0
