"""The live console of `inspector run --web [HOST:]PORT`: the overlay streamed to a browser, live counts and line
state, the last defects, and a supervisor's audited threshold change.

:func:`open_console` is the one entry the line calls; FastAPI and uvicorn (the ``web`` extra) are imported only
here, so a line without ``--web`` never needs them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from inspector.webaccess import require_web_extra

if TYPE_CHECKING:
    from inspector.config import WebConfig
    from inspector.line import Line
    from inspector.pipeline import View
    from inspector.web.console import ConsoleSink, ThresholdChange

log = logging.getLogger(__name__)


class Console:
    """The console as one stage of the line: a sink, a view tap, a pending threshold change, a server."""

    def __init__(self, cfg: WebConfig, line: Line) -> None:
        from inspector.web.audit import AuditLog
        from inspector.web.console import ConsoleSink, WebConsole
        from inspector.web.http import HttpServer, add_stream, build_app, read_token

        token = read_token(cfg.host, cfg.token_env)
        self.cfg = cfg
        self.line = line
        self.state = WebConsole(cfg, line)
        self.sink: ConsoleSink = ConsoleSink(self.state)
        audit = AuditLog(line.cfg.log.db) if line.cfg.log.db and line.request.with_outputs else None
        app = build_app(self.state, audit, token)
        add_stream(app, self.state)
        try:
            self.server = HttpServer(app, cfg.host, cfg.port)
        except BaseException:
            self.state.close()
            raise
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        self.url = f"http://{host}:{self.server.port}/"
        log.info("web console at %s (threshold changes %s)", self.url, "need the token" if token else "open")

    def tee(self, view: View) -> View:
        """The line's view with the stream tapped off it."""
        from inspector.web.console import StreamView

        return StreamView(view, self.state)

    @property
    def pending(self) -> ThresholdChange | None:
        return self.state.pending

    def apply_pending(self, line: Line) -> None:
        self.state.apply_pending(line)

    def close(self) -> None:
        """The line has stopped: the page says so; after ``web.linger_s`` (SIGTERM or Ctrl-C end it sooner; no
        linger when no frame was inspected, e.g. a start that failed) the server stops."""
        self.state.ended.set()
        if self.cfg.linger_s > 0 and self.line.stats.frames > 0 and not self.line.stop_event.is_set():
            log.info("web console stays up %.0f s with the final counts (%s)", self.cfg.linger_s, self.url)
            try:
                self.line.stop_event.wait(self.cfg.linger_s)
            except KeyboardInterrupt:
                pass
        self.state.close()
        self.server.close()


def open_console(cfg: WebConfig, line: Line) -> Console:
    """Start the console for ``line`` (its port bound now: a port in use stops the line before it starts)."""
    require_web_extra("the web console (--web / web.enabled)")
    return Console(cfg, line)
