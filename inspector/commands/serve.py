"""`inspector serve --model M [--host H] [--port P]`: the HTTP classify API (docs/api.md)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the model as an HTTP classify API (needs the web extra)")
    p.add_argument("--model", required=True, type=Path, help="model file: .onnx, .engine or .pt")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    p.add_argument("--threshold", type=float, default=None, help="decision threshold (default: the model's own)")
    p.add_argument("--max-batch", type=int, default=16, help="most images per engine call (default 16)")
    p.add_argument(
        "--max-wait-ms", type=float, default=2.0, help="how long a batch waits for more images (default 2 ms)"
    )
    p.add_argument(
        "--max-queue", type=int, default=64, help="images that may wait; more get 503 + Retry-After (default 64)"
    )
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body in MB (default 20)")
    p.add_argument("--max-images", type=int, default=32, help="most images in one multipart request (default 32)")
    p.add_argument(
        "--max-pixels", type=int, default=40_000_000, help="largest image, width x height (default 40,000,000)"
    )
    p.add_argument(
        "--threads", type=int, default=1, help="engine CPU threads (ONNX Runtime; default 1, as model.threads)"
    )
    p.add_argument(
        "--token-env",
        default=None,
        metavar="VAR",
        help="ask clients for 'Authorization: Bearer <token>', the token read from environment variable VAR",
    )
    p.add_argument(
        "--http",
        default="auto",
        choices=("auto", "httptools", "h11"),
        help="HTTP parser (auto: httptools when installed, else h11)",
    )
    p.add_argument(
        "--loop", default="auto", choices=("auto", "uvloop", "asyncio"), help="event loop (auto: uvloop when installed)"
    )
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    from ground.errors import UserError

    for name, low in (("port", 0), ("max_batch", 1), ("max_queue", 1), ("max_images", 1), ("max_pixels", 1)):
        value = getattr(args, name)
        if value < low or (name == "port" and value > 65535):
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} {value}: must be {'0 to 65535' if name == 'port' else f'at least {low}'}")
    if args.max_wait_ms < 0 or args.max_wait_ms > 1000:
        raise UserError(f"--max-wait-ms {args.max_wait_ms:g}: must be 0 to 1000")
    if not 0 < args.max_upload_mb <= 1024:
        raise UserError(f"--max-upload-mb {args.max_upload_mb:g}: must be above 0 and at most 1024")
    if args.max_images > args.max_queue:
        raise UserError(f"--max-images {args.max_images} is more than --max-queue {args.max_queue}; raise --max-queue")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise UserError(f"--threshold {args.threshold:g}: must be in [0, 1]")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads {args.threads}: must be at least 1")
    import importlib.util

    for flag, name in (("--http", args.http), ("--loop", args.loop)):
        if name in ("httptools", "uvloop") and importlib.util.find_spec(name) is None:
            raise UserError(f"{flag} {name}: {name} is not installed; pip install {name}, or leave {flag} at auto")


def run(args: argparse.Namespace) -> int:
    from inspector.serve.http import require_web_extra

    _check(args)
    require_web_extra()

    from engines.base import load_engine
    from inspector.resources import resolve_model
    from inspector.serve.app import ServeSettings, create_app
    from inspector.serve.classifier import Classifier
    from inspector.serve.http import Server, check_address, is_local, read_token

    token = read_token(args.token_env)
    check_address(args.host, args.port)  # before the model loads: a busy port is reported at once
    opts = {"threads": args.threads} if args.threads else {}
    engine = load_engine(resolve_model(args.model), **opts)
    try:
        engine.warm_up(args.max_batch)  # the largest batch's first call pays no lazy initialisation
        classifier = Classifier(engine, args.threshold)
        settings = ServeSettings(
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            max_queue=args.max_queue,
            max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
            max_images=args.max_images,
            max_pixels=args.max_pixels,
            token=token,
            token_env=args.token_env,
        )
        warning = engine.meta.weak_warning()
        if warning:
            log.warning("%s", warning)
        if not is_local(args.host) and token is None:
            log.warning(
                "classify API on %s without a token: anyone who reaches it can classify and read metrics "
                "(nothing can be changed through it); --token-env VAR asks for a token",
                args.host,
            )

        def started(server: Server) -> None:  # once listening: the real port when --port 0
            print(
                f"serving {classifier.model_id} ({engine.backend}) on {server.url} "
                f"(POST /v1/classify; docs at {server.url}/docs); Ctrl-C stops",
                file=sys.stderr,
                flush=True,
            )

        server = Server(
            create_app(classifier, settings), args.host, args.port, on_started=started, http=args.http, loop=args.loop
        )
        try:
            server.run()
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it shut down on: for a server, the normal stop
            pass
    finally:
        engine.close()
    print("stopped", file=sys.stderr)
    return 0
