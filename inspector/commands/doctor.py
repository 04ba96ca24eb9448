"""`inspector doctor [--config FILE]`: one table of what this machine has and what the line still needs."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check this machine for what a line needs (exit 1 if a needed check fails)")
    p.add_argument("--config", metavar="FILE", help="the line's YAML configuration: check what it names")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    p.set_defaults(func=run)


STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from inspector.service.doctor import failed_needed, run_checks, to_json

    rows = run_checks(args.config)
    bad = failed_needed(rows)
    if args.json:
        print(to_json(rows))
        return 1 if bad else 0
    table = Table(title="inspector doctor" + (f" --config {args.config}" if args.config else ""), show_lines=False)
    for col in ("check", "result", "detail", "fix"):
        table.add_column(col, overflow="fold")
    for r in rows:
        mark = r.state + ("*" if r.needed else "")
        table.add_row(escape(r.name), f"[{STYLE[r.state]}]{mark}[/]", escape(r.detail), escape(r.fix))
    console = Console()
    console.print(table)
    console.print("* needed by " + ("the configuration" if args.config else "the runtime"))
    if bad:
        console.print(f"[bold red]{len(bad)} needed check(s) failed:[/] " + ", ".join(r.name for r in bad))
        return 1
    console.print("[green]nothing needed is missing[/]")
    return 0
