"""`inspector review`: look through the defect log, mark what the line got wrong, export a training set.

``inspector review --db LOG`` prints what is reviewed and what is not; ``--web [HOST:]PORT`` opens the review
page (a gallery with filters, keyboard marks); ``inspector review export --db LOG --out DIR`` writes the
reviewed crops as class folders for ``inspector train --data DIR``.
"""

from __future__ import annotations

import argparse


def _db_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    # `review` and `review export` both take --db; argparse would demand the parent's one before `export`
    p.add_argument("--db", required=required, help="the defect log database (log.db); the line may be writing it")
    p.add_argument("--images", metavar="DIR", help="the log's crops folder (default: <db>_images beside it)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "review",
        help="review logged parts (summary, or a web page with --web); export marked crops as a data set",
        description="Review the defect log: mark confirmed defects, false rejects and missed defects.",
    )
    _db_args(p, required=False)
    p.add_argument(
        "--web", metavar="[HOST:]PORT", nargs="?", const="8765", help="serve the review page (default 127.0.0.1:8765)"
    )
    p.add_argument(
        "--token-env",
        metavar="VAR",
        default="INSPECTOR_REVIEW_TOKEN",
        help="environment variable holding the token that marking needs beyond localhost",
    )
    p.add_argument("--since", help="summary: only parts from (30m, 2h, 7d, 2026-11-27, 2026-11-27T14:00)")
    p.add_argument("--until", help="summary: only parts before (same forms)")
    p.add_argument("--json", action="store_true", help="summary as JSON")
    p.set_defaults(func=run)
    rsub = p.add_subparsers(dest="review_command", metavar="{export}")
    e = rsub.add_parser("export", help="write the reviewed crops as class folders with a manifest (for train)")
    _db_args(e)
    e.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder for the data set")
    e.add_argument(
        "--classes",
        choices=("ok-defect", "model"),
        default="ok-defect",
        help="folder names: ok/ and defect/ (default), or the line model's class names as the log gives them",
    )
    e.set_defaults(func=run_export)


def run(args: argparse.Namespace) -> int:
    from ground.errors import UserError
    from inspector.review.store import ReviewStore

    if not args.db:
        raise UserError("inspector review: give the defect log with --db LOG (the database from log.db)")

    if args.web is not None:
        return run_web(args)
    from inspector.defectlog.query import parse_when
    from inspector.review.store import Filters

    store = ReviewStore(args.db, args.images, index=False)
    s = store.summary(Filters(since=parse_when(args.since), until=parse_when(args.until, "--until")))
    store.close()
    if args.json:
        import json

        print(json.dumps(s, indent=2))
        return 0
    _print_summary(s)
    return 0


def _print_summary(s: dict) -> None:
    from datetime import datetime

    from rich.console import Console
    from rich.table import Table

    def when(t: float | None) -> str:
        return "-" if t is None else datetime.fromtimestamp(t).isoformat(sep=" ", timespec="seconds")

    con = Console()
    con.print(f"[bold]{s['db']}[/]: {s['parts']} parts, {when(s['first'])} .. {when(s['last'])}")
    t = Table(title="review by verdict", title_justify="left")
    for c in ("verdict", "parts", "reviewed", "not yet", "crops kept"):
        t.add_column(c, justify="left" if c == "verdict" else "right")
    for v, d in sorted(s["verdicts"].items()):
        t.add_row(v, str(d["parts"]), str(d["reviewed"]), str(d["unreviewed"]), str(d["with_crop"]))
    con.print(t)
    if s["marks"]:
        m = Table(title="marks", title_justify="left")
        m.add_column("mark")
        m.add_column("parts", justify="right")
        m.add_column("with crop (exported)", justify="right")
        for k, d in s["marks"].items():
            m.add_row(k, str(d["parts"]), str(d["with_crop"]))
        con.print(m)
        con.print("reviewers: " + ", ".join(f"{k} {n}" for k, n in s["reviewers"].items()))
    if s["false_reject_share"] is not None:
        con.print(f"of the rejected parts reviewed, {100 * s['false_reject_share']:.1f}% were good (false rejects)")
    if s["missed_share"] is not None:
        con.print(f"of the passed parts reviewed, {100 * s['missed_share']:.1f}% were defective (missed)")
    con.print(
        f"{s['exportable']} reviewed crop(s) ready for `inspector review export`"
        if s["marks"]
        else "nothing reviewed yet: inspector review --db LOG --web"
    )


def run_web(args: argparse.Namespace) -> int:
    import sys

    from inspector.review.http import Guard, parse_listen, require_web, serve
    from inspector.review.store import ReviewStore
    from inspector.webaccess import is_loopback

    require_web()
    host, port = parse_listen(args.web)
    guard = Guard.for_host(host, args.token_env)
    from inspector.review.app import create_app

    store = ReviewStore(args.db, args.images)
    local = None
    if is_loopback(host):
        local = {f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]")} | {"127.0.0.1", "localhost"}
    app = create_app(store, guard, local_hosts=local)
    shown = f"[{host}]" if ":" in host else host

    def started() -> None:
        print(f"review page: http://{shown}:{port}/ ({store.db}; Ctrl-C to stop)", file=sys.stderr, flush=True)

    if not store.writable:
        print(f"warning: {store.read_only_reason}", file=sys.stderr, flush=True)
    try:
        serve(app, host, port, on_started=started)
    finally:
        store.close()
    return 0


def run_export(args: argparse.Namespace) -> int:
    import sys

    from inspector.review.export import export_dataset
    from inspector.review.store import ReviewStore

    store = ReviewStore(args.db, args.images, index=False)
    s = export_dataset(store, args.out, classes=args.classes)
    store.close()
    per = ", ".join(f"{k} {n}" for k, n in s["classes"].items()) or "none"
    print(f"{s['files']} crop(s) written to {s['out']} ({per}); manifest {s['out']}/manifest.csv")
    for why, n in s["skipped"].items():
        print(f"skipped {n}: {why}", file=sys.stderr)
    if not s["trainable"]:
        print("warning: training needs reviewed crops of at least two classes", file=sys.stderr)
    return 0
