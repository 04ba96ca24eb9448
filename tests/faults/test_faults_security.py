"""Security: what crosses a trust boundary is handled safely, and a regression is caught.

Static checks parse every Python file of the product (inspector, engines, training, calibration, bench) and
refuse: unpickling (torch.load without weights_only=True, pickle/joblib/dill loads, np.load allow_pickle),
yaml.load / unsafe loaders, shell=True / os.system / os.popen / a subprocess given one command string,
eval/exec, and network listeners not bound to localhost. Each check is itself tested on a bad snippet, so a
checker that finds nothing because it is broken fails too. Behavioural checks run the real CLI.
"""

from __future__ import annotations

import ast
import csv
import functools
import http.server
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from faults_kit import ROOT, line_video, run_cli, write_config

PRODUCT = ("ground", "inspector", "engines", "training", "calibration", "bench")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _name(node: ast.AST) -> str:
    """Dotted name of a call target: torch.load, yaml.load, os.system, ..."""
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return "?"


def _kw(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _const(node: ast.AST | None):
    return node.value if isinstance(node, ast.Constant) else None


def problems_in(source: str, where: str = "<snippet>") -> list[str]:
    """Every forbidden pattern in ``source``, as 'where:line: what'."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name, line = _name(node.func), f"{where}:{node.lineno}"
        last = name.rsplit(".", 1)[-1]
        if name.endswith("torch.load") or name == "torch.load" or (last == "load" and name.startswith("torch")):
            if _const(_kw(node, "weights_only")) is not True:
                out.append(f"{line}: torch.load without weights_only=True (unpickles arbitrary objects)")
        if name in (
            "pickle.load",
            "pickle.loads",
            "pickle.Unpickler",
            "cPickle.load",
            "dill.load",
            "dill.loads",
            "joblib.load",
            "marshal.load",
            "marshal.loads",
            "shelve.open",
        ):
            out.append(f"{line}: {name} (unpickling)")
        if last == "load" and name.split(".")[0] in ("np", "numpy") and _const(_kw(node, "allow_pickle")) is True:
            out.append(f"{line}: {name}(allow_pickle=True)")
        if name in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all"):
            out.append(f"{line}: {name} (use yaml.safe_load)")
        if _const(_kw(node, "shell")) is True:
            out.append(f"{line}: {name}(shell=True)")
        if name in (
            "os.system",
            "os.popen",
            "os.spawnlp",
            "os.execlp",
            "subprocess.getoutput",
            "subprocess.getstatusoutput",
        ):
            out.append(f"{line}: {name} (runs a shell)")
        if name.startswith("subprocess.") and last in ("run", "Popen", "call", "check_call", "check_output"):
            first = node.args[0] if node.args else _kw(node, "args")
            if isinstance(first, (ast.JoinedStr, ast.BinOp)) or isinstance(_const(first), str):
                out.append(f"{line}: {name} with one command string (pass a list of arguments)")
        if name in ("eval", "exec", "builtins.eval", "builtins.exec"):
            out.append(f"{line}: {name}()")
        if last in ("bind", "create_server", "HTTPServer", "ThreadingHTTPServer", "TCPServer", "UDPServer"):
            addr = node.args[0] if node.args else _kw(node, "address") or _kw(node, "server_address")
            host = _const(addr.elts[0]) if isinstance(addr, ast.Tuple) and addr.elts else None
            if host not in LOCAL_HOSTS:
                out.append(f"{line}: {name} on {host!r} (bind to 127.0.0.1 unless configured otherwise)")
    return out


def product_files() -> list[Path]:
    files = [p for d in PRODUCT for p in (ROOT / d).rglob("*") if p.is_file()]
    return sorted(p for p in files if p.suffix == ".py" or (p.parent.name == "bench" and not p.suffix))


BAD_SNIPPETS = [
    ("import torch\ntorch.load('m.pt')", "weights_only"),
    ("import torch\ntorch.load('m.pt', weights_only=False)", "weights_only"),
    ("import pickle\npickle.loads(b'')", "unpickling"),
    ("import numpy as np\nnp.load('a.npy', allow_pickle=True)", "allow_pickle"),
    ("import yaml\nyaml.load(open('c.yaml'), Loader=yaml.Loader)", "safe_load"),
    ("import yaml\nyaml.unsafe_load('a: 1')", "safe_load"),
    ("import subprocess\nsubprocess.run('ls ' + d, shell=True)", "shell=True"),
    ("import subprocess\nsubprocess.Popen(f'gst-launch-1.0 {p}')", "one command string"),
    ("import os\nos.system('rm x')", "runs a shell"),
    ("eval(meta['threshold'])", "eval"),
    ("import socket\ns = socket.socket()\ns.bind(('0.0.0.0', 8080))", "bind to 127.0.0.1"),
    ("import socket\ns = socket.socket()\ns.bind(('', 8080))", "bind to 127.0.0.1"),
    ("from http.server import HTTPServer\nHTTPServer(('', 80), H)", "bind to 127.0.0.1"),
]


@pytest.mark.parametrize(("snippet", "what"), BAD_SNIPPETS, ids=[b[1] + str(i) for i, b in enumerate(BAD_SNIPPETS)])
def test_the_checker_finds_each_forbidden_pattern(snippet: str, what: str) -> None:
    found = problems_in(snippet)
    assert found and what in found[0], found


def test_the_checker_accepts_the_safe_forms() -> None:
    safe = (
        "import torch, yaml, subprocess, socket, numpy as np\n"
        "torch.load(p, map_location='cpu', weights_only=True)\nyaml.safe_load(t)\nnp.load('a.npy')\n"
        "subprocess.run(['gst-launch-1.0', '-q', *args])\nsocket.socket().bind(('127.0.0.1', 0))\n"
    )
    assert problems_in(safe) == []


def test_product_has_no_forbidden_pattern() -> None:
    """No unpickling of files, no unsafe YAML, no shell, no eval, no listener beyond localhost."""
    files = product_files()
    assert len(files) > 30, files  # the walk found the product
    found = [p for f in files for p in problems_in(f.read_text(), str(f.relative_to(ROOT)))]
    assert found == []


# --- behaviour ----------------------------------------------------------------------------------------------
def test_yaml_python_tags_are_refused_and_never_run(kit, tmp_path: Path) -> None:
    """A config carrying a !!python/object/apply tag (would run os.mkdir with an unsafe loader): one error
    line, exit 1, and nothing created."""
    marker = tmp_path / "PWNED"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"source:\n  uri: !!python/object/apply:os.mkdir ['{marker}']\n")
    r = run_cli("run", "--config", str(cfg), "--no-display", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("error:")], r.stderr
    assert not marker.exists()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_stream_credentials_never_reach_output(kit, tmp_path: Path) -> None:
    """`inspector -vv run` on an http:// stream whose URL carries a password (served from 127.0.0.1), until
    the stream ends and the capture gives up on it (max_reopen 0): the password appears in no log line, no
    error and no summary; the URL is shown as http://***@host."""
    video = line_video(tmp_path / "line.avi", [(0, False)], 30)
    handler = functools.partial(_Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://admin:s3cr3t@127.0.0.1:{server.server_address[1]}/{video.name}"
        cfg = write_config(tmp_path / "line.yaml", kit, url)
        cfg.write_text(cfg.read_text().replace(f"uri: {url}\n", f"uri: {url}\n  max_reopen: 0\n"))
        r = run_cli("-vv", "run", "--config", str(cfg), "--events", str(tmp_path / "ev.jsonl"), cwd=tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    out = r.stdout + r.stderr + "".join(p.read_text() for p in tmp_path.glob("ev*"))
    assert "127.0.0.1" in out and "***@" in out, out[-3000:]  # it did talk about the stream
    assert "s3cr3t" not in out
    assert "Traceback" not in out, out[-3000:]


def test_the_runtime_listens_on_no_network_port(kit, tmp_path: Path) -> None:
    """While `inspector run --serial sim --log-db` inspects a line, the process has no listening socket."""
    import subprocess
    import sys

    video = line_video(tmp_path / "line.avi", [(0, False), (14, False)], 90)
    cfg = write_config(tmp_path / "line.yaml", kit, str(video), f"log:\n  db: {tmp_path / 'd.db'}\n")
    child = subprocess.Popen(
        [sys.executable, "-m", "inspector", "run", "--config", str(cfg), "--realtime", "--serial", "sim"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        proc = psutil.Process(child.pid)
        seen, deadline = 0, time.monotonic() + 30
        while child.poll() is None and time.monotonic() < deadline:
            conns = proc.net_connections(kind="inet")
            assert not [c for c in conns if c.status == psutil.CONN_LISTEN], conns
            seen += 1
            time.sleep(0.2)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, child.stderr.read()[-2000:]
    assert seen >= 3, "the run ended before it could be watched"


def test_hostile_names_stay_inside_the_log_and_are_inert_in_the_export(tmp_path: Path) -> None:
    """A model whose class names are paths and spreadsheet formulas (its sidecar is untrusted input): the
    crop files stay in the images folder, and `inspector log export` quotes formula cells."""
    from inspector.config import LogConfig
    from inspector.defectlog import open_log
    from inspector.defectlog.query import export
    from inspector.records import Part, Verdict

    db = tmp_path / "log" / "defects.db"
    dlog = open_log(LogConfig(db=str(db)), "m", "c")
    names = ["../../../../tmp/evil", '=HYPERLINK("http://x","y")', "@SUM(A1)", "a/b\\c\x00d"]
    for i, name in enumerate(names, 1):
        p = Part(
            i,
            i,
            time.monotonic_ns(),
            (0, 0, 8, 8),
            Verdict.DEFECT,
            0.9,
            name,
            reason=f"-{name}",
            t_verdict_ns=time.monotonic_ns(),
            crop=np.zeros((8, 8, 3), np.uint8),
        )
        dlog.on_part(p)
    dlog.close()
    images = tmp_path / "log" / "defects_images"
    files = list(tmp_path.rglob("*.jpg"))
    assert len(files) == len(names) and all(images in f.parents for f in files), files
    out = io.StringIO()
    assert export(db, out) == len(names)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    cells = [v for r in rows for v in r.values() if isinstance(v, str)]
    assert not [c for c in cells if c[:1] in ("=", "@", "+") or (c[:1] == "-" and not c[1:2].isdigit())], rows
    assert json.dumps(rows)  # plain text all through
