"""The flags of the commands that inspect a line (`run`, `demo`) and the one adapter from them to a
:class:`~inspector.line.Line`: arguments -> validated configuration + :class:`~inspector.line.LineRequest`,
then the run, its summary, its scorecard and its exit code. The commands themselves only choose the source.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ground.errors import UserError
from inspector.commands.argtypes import count, index
from inspector.config import InspectorConfig, load_config
from inspector.line import Line, LineRequest


def add_arguments(p: argparse.ArgumentParser, *, sources: bool = True) -> None:
    """The line flags; ``sources=False`` (the demo) leaves out --camera/--source (they read as None)."""
    p.add_argument("--config", metavar="FILE", help="YAML configuration (default: built-in defaults)")
    if sources:
        src = p.add_mutually_exclusive_group()
        src.add_argument("--camera", metavar="N", type=index, help="camera index (USB/V4L2)")
        src.add_argument("--source", metavar="URI", help="video, image folder, rtsp://..., 'gst:PIPELINE' or 'demo'")
    else:
        p.set_defaults(camera=None, source=None)
    p.add_argument("--model", metavar="PATH", help="model: .onnx (default models/casting_seedcnn.onnx), .engine, .pt")
    p.add_argument("--events", metavar="FILE.jsonl", help="write one JSON line per part here")
    p.add_argument("--truth", metavar="truth.csv", help="score the run against a simulator truth file")
    p.add_argument("--no-display", action="store_true", help="no window: a dashboard in the terminal instead")
    p.add_argument("--realtime", action="store_true", help="files: pace frames at the recorded rate")
    p.add_argument("--serial", metavar="PORT", help="reject gate serial port (or loop://, 'sim')")
    p.add_argument("--log-db", metavar="PATH", help="SQLite defect log")
    p.add_argument("--max-frames", metavar="N", type=count, help="stop after N frames")
    p.add_argument("--snapshot-dir", metavar="DIR", default=".", help="where the window's s key saves PNGs")
    p.add_argument(
        "--metrics-port",
        metavar="PORT",
        type=port,
        help="serve Prometheus metrics on this port (on 127.0.0.1 unless metrics.host says otherwise)",
    )
    p.add_argument(
        "--mqtt",
        metavar="HOST[:PORT]",
        type=broker,
        help="publish verdicts and line state to this MQTT broker (port 1883 unless given; see mqtt: in the config)",
    )
    p.add_argument(
        "--web",
        metavar="[HOST:]PORT",
        type=listen,
        help="serve the live console on this port (on 127.0.0.1 unless HOST is given; see web: in the config)",
    )


def build_config(args: argparse.Namespace) -> InspectorConfig:
    """The configuration file (or the defaults) with the flags given on the command line laid over it."""
    cfg = load_config(args.config) if args.config else InspectorConfig()
    if args.camera is not None:
        cfg.source.uri = str(args.camera)
    if args.source:
        cfg.source.uri = args.source
    if args.realtime:
        cfg.source.realtime = True
    if args.model:
        cfg.model.path = args.model
    if args.serial:
        cfg.gate.port = args.serial
    if args.log_db:
        cfg.log.db = args.log_db
    if args.no_display:
        cfg.display.enabled = "off"
    if args.metrics_port is not None:
        cfg.metrics.enabled, cfg.metrics.port = True, args.metrics_port
    if args.mqtt is not None:
        cfg.mqtt.enabled = True
        cfg.mqtt.host, mqtt_port = args.mqtt
        if mqtt_port is not None:
            cfg.mqtt.port = mqtt_port
    if getattr(args, "web", None) is not None:
        cfg.web.enabled = True
        web_host, cfg.web.port = args.web
        if web_host is not None:
            cfg.web.host = web_host
    return cfg


def listen(text: str) -> tuple[str | None, int]:
    """--web [HOST:]PORT (an IPv6 host in brackets: [::1]:8088)."""
    host, sep, num = text.rpartition(":")
    host = host.strip("[]") if sep else None
    if (sep and not host) or not num.isdigit() or not 0 <= int(num) <= 65535:
        raise argparse.ArgumentTypeError(f"expected PORT or HOST:PORT (port 0-65535), got '{text}'")
    return host, int(num)


def broker(text: str) -> tuple[str, int | None]:
    """--mqtt HOST[:PORT] (an IPv6 address without a port stays whole)."""
    host, sep, num = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    if not host or (sep and not (num.isdigit() and 1 <= int(num) <= 65535)):
        raise argparse.ArgumentTypeError(f"expected HOST or HOST:PORT (port 1-65535), got '{text}'")
    return host, int(num) if sep else None


def port(text: str) -> int:
    """A TCP port flag."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 1-65535, got '{text}'")
    return int(text)


def check_truth(truth: str | None) -> None:
    if truth and not Path(truth).is_file():
        raise UserError(f"--truth {truth}: file not found; give the truth CSV written by `inspector simulate`")


def inspect(
    cfg: InspectorConfig,
    args: argparse.Namespace,
    truth: str | None = None,
    *,
    watch_pace: bool = False,
    reloadable: bool = False,
) -> int:
    """Run the line to its end and report: summary table (and .summary.json), MQTT report, scorecard.

    ``reloadable``: SIGHUP (systemctl reload) re-reads ``--config`` with this run's flags laid over it again."""
    from rich.console import Console

    console = Console()
    summary_path, scorecard_path = check_run_outputs(cfg, args, truth)
    reload = (lambda: build_config(args)) if reloadable and args.config else None
    request = LineRequest(
        events=args.events,
        keep_events=bool(truth) and not args.events,
        snapshot_dir=args.snapshot_dir,
        watch_pace=watch_pace,
        reload=reload,
        config_file=args.config,
    )
    line = Line(cfg, request)
    with line:
        for warning in line.warnings:
            console.print(f"[bold red]warning:[/] {warning}", soft_wrap=True)  # one line: paths never cut
        if line.console is not None:
            console.print(f"web console: {line.console.url}", highlight=False)
        line.run(max_frames=args.max_frames)
    line.check_frames_read()
    result = line.result()
    from inspector.events import read_events, summary_table

    console.print(summary_table(result))
    from inspector.viewstate import outcome_lines

    for outcome in outcome_lines(line.health()):  # the gate's and the log's outcomes, without -v
        console.print(outcome, highlight=False)
    if line.mqtt is not None:
        console.print(line.mqtt.report())
    events_path = args.events
    if summary_path is not None:
        summary_path.write_text(json.dumps(result, indent=2) + "\n")
    if truth:
        events = read_events(events_path) if events_path else line.events.events
        _scorecard(console, events, truth, scorecard_path, seen_until=line.stats.last_seq)
    if line.capture is not None and line.capture.error:
        print(f"error: {line.capture.error}", file=sys.stderr)
        return 1
    return 130 if line.interrupted else 0


def check_run_outputs(cfg: InspectorConfig, args: argparse.Namespace, truth: str | None) -> tuple[Path | None, Path]:
    """Every file the run writes, checked before it starts (:mod:`inspector.outputs`) -> (the summary's path or
    None, the scorecard's path). Results go beside the events file, else beside the truth file they were scored
    against (never the cwd); events to a device or a pipe (``--events /dev/stdout``) have nothing beside them."""
    from inspector.outputs import check_distinct, check_not_foreign, images_dir, is_scorecard_file, is_summary_file

    events = args.events
    stream = events is not None and (
        str(Path(events).absolute()).startswith(("/dev/", "/proc/"))
        or (Path(events).exists() and not Path(events).is_file())
    )
    beside = events if events and not stream else None
    if stream and truth:
        raise UserError(
            f"--events {events} with --truth: the scorecard reads the events back, which a device or pipe cannot "
            "give; write --events to a file, or drop --events"
        )
    out_dir = Path(beside).parent if beside else Path(truth).parent if truth else Path.cwd()
    summary = out_dir / (Path(beside).stem + ".summary.json") if beside else None
    scorecard = out_dir / "scorecard.json"
    outputs = {"--events": events, "log.db": cfg.log.db, "the run summary": summary}
    if cfg.log.db:
        outputs["log.images_dir"] = images_dir(cfg.log)
    if truth:
        outputs["the scorecard"] = scorecard
    uri = cfg.source.uri
    source = uri if "://" not in uri and not uri.startswith("gst:") and Path(uri).is_file() else None
    check_distinct(
        outputs,
        {"--config file": args.config, "--truth file": truth, "model": cfg.model.path, "source": source},
    )
    check_not_foreign("the run summary", summary, is_summary_file, "a run summary")
    if truth:
        check_not_foreign("the scorecard", scorecard, is_scorecard_file, "a scorecard")
    return summary, scorecard


def _scorecard(console, events: list[dict], truth: str, path: Path, seen_until: int | None = None) -> None:
    from inspector.scorecard import score

    card = score(events, truth, seen_until=seen_until)
    console.print(card.table())
    path.write_text(json.dumps(card.to_dict(), indent=2) + "\n")
    console.print(f"scorecard saved to {path}")
