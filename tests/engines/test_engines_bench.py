"""bench-engine: batch parsing, timing rows, and the table the command prints."""

from __future__ import annotations

import pytest

from engines.base import load_engine
from engines.bench import bench_batch, parse_batches
from engines.errors import UserError
from inspector.cli import main


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1,8,32", [1, 8, 32]), ("4", [4]), (" 2, 3 ", [2, 3]), ("1,x", UserError), ("0", UserError), ("", UserError)],
)
def test_parse_batches(text, expected):
    if expected is UserError:
        with pytest.raises(UserError, match="--batch"):
            parse_batches(text)
    else:
        assert parse_batches(text) == expected


def test_bench_batch_rows_are_consistent(tiny_onnx):
    with load_engine(tiny_onnx, threads=1) as engine:
        row = bench_batch(engine, 4, seconds=0.05, min_runs=5)
    assert row.batch == 4 and row.runs >= 5
    assert 0 < row.p50_ms <= row.p99_ms
    assert row.images_per_s > 0
    assert row.per_image_ms == pytest.approx(row.p50_ms / 4)


def test_bench_engine_command_prints_a_table(tiny_onnx, capsys):
    assert main(["bench-engine", str(tiny_onnx), "--batch", "1,2", "--seconds", "0.05", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime-cpu" in out and "p50 ms" in out and "images/s" in out
    assert len([ln for ln in out.splitlines() if ln.strip().startswith("│")]) == 2
