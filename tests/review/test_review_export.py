"""`inspector review export` on the demo line's real log: class folders and manifest, read by training's own
data loader (folders and manifest layouts), and a short real training run on the export."""

from __future__ import annotations

import csv
import json

import pytest

from inspector.review.store import Filters, ReviewStore
from tests.review.conftest import inspector


def _mark_some(db):
    store = ReviewStore(db)
    rows = store.page(Filters(), limit=100)["rows"]
    ok = [r for r in rows if r["verdict"] == "ok"]
    bad = [r for r in rows if r["verdict"] != "ok"]
    store.mark([bad[0]["id"]], "defect", who="ana")  # confirm_defect -> defect
    store.mark([bad[1]["id"]], "ok", who="ana")  # false_reject -> ok
    store.mark([ok[0]["id"]], "missed", who="ben")  # missed -> defect
    store.mark([ok[1]["id"]], "ok", who="ben")  # confirm_ok -> ok
    store.close()
    return {
        bad[0]["id"]: ("confirm_defect", "defect", bad[0]),
        bad[1]["id"]: ("false_reject", "ok", bad[1]),
        ok[0]["id"]: ("missed", "defect", ok[0]),
        ok[1]["id"]: ("confirm_ok", "ok", ok[1]),
    }


def test_export_writes_class_folders_and_a_manifest_training_reads(demo_log, tmp_path):
    from training.data import index_dataset

    want = _mark_some(demo_log)
    out = tmp_path / "relabel"
    r = inspector("review", "export", "--db", demo_log, "--out", out, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "4 crop(s) written" in r.stdout and "defect 2, ok 2" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["defect", "manifest.csv", "ok"]
    with (out / "manifest.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [*rows[0]][:2] == ["path", "label"]
    assert len(rows) == 4
    images = demo_log.parent / "log_images"
    for row in rows:
        mark, label, part = want[int(row["source_id"])]
        assert (row["mark"], row["label"], row["verdict"]) == (mark, label, part["verdict"])
        assert row["who"] in ("ana", "ben") and row["marked_at"] and row["path"].startswith(label + "/")
        assert float(row["score"]) == pytest.approx(part["score"])
        src = next(images.rglob(f"*_{part['part_id']:08d}_*.jpg"))
        assert (out / row["path"]).read_bytes() == src.read_bytes(), "crops are copied unchanged"
    idx = index_dataset(out)  # what `inspector train --data DIR` does first
    assert (idx.layout, idx.classes, idx.ok_class) == ("folders", ["defect", "ok"], "ok")
    assert idx.counts() == {"defect": 2, "ok": 2}
    man = index_dataset(out / "manifest.csv")  # the manifest alone is a training set too
    assert sorted((i.key, i.label) for i in man.items) == sorted((i.key, i.label) for i in idx.items)

    # the model's own class names
    out2 = tmp_path / "relabel_model"
    r = inspector("review", "export", "--db", demo_log, "--out", out2, "--classes", "model", timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out2.iterdir() if p.is_dir()) == ["def_front", "ok_front"]
    assert index_dataset(out2).counts() == {"def_front": 2, "ok_front": 2}

    # the summary says what is reviewed
    r = inspector("review", "--db", demo_log, "--json", timeout=60)
    s = json.loads(r.stdout)
    assert r.returncode == 0 and s["exportable"] == 4 and sum(v["reviewed"] for v in s["verdicts"].values()) == 4
    r = inspector("review", "--db", demo_log, timeout=60)
    assert r.returncode == 0 and "4 reviewed crop(s) ready" in r.stdout and "false rejects" in r.stdout


@pytest.mark.slow
def test_a_short_training_run_on_the_export(demo_log, tmp_path):
    torch = pytest.importorskip("torch", reason="training needs the train extra")
    from training.train import TrainOptions, train

    store = ReviewStore(demo_log)
    rows = store.page(Filters(), limit=100)["rows"]
    store.mark([r["id"] for r in rows], "defect", who="bulk")  # the whole demo line, as the line judged it...
    store.mark([r["id"] for r in rows if r["verdict"] == "ok"], "ok", who="bulk")  # ...with its OK parts good
    store.close()
    out = tmp_path / "set"
    r = inspector("review", "export", "--db", demo_log, "--out", out, timeout=120)
    assert r.returncode == 0, r.stderr
    torch.set_num_threads(1)
    opts = TrainOptions(data=out, out=tmp_path / "run", img_size=32, epochs=1, batch_size=8, seed=0, threads=1)
    model = train(opts)
    assert model.is_file() and model.stat().st_size > 0


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("none", ("--out", "{tmp}/o"), "no reviewed parts to export"),
        ("marked", ("--out", "{tmp}/full"), "exists and is not an empty folder"),
        ("marked", ("--out", "/proc/inspector-review/set"), "cannot create the folder (No such file or directory)"),
        ("missing_db", ("--out", "{tmp}/o"), "no such defect log"),
        ("not_a_db", ("--out", "{tmp}/o"), "not a defect log"),
    ],
)
def test_export_bad_input_is_one_line(demo_log, tmp_path, setup, args, message):
    db = demo_log
    if setup == "marked":
        _mark_some(db)
        (tmp_path / "full").mkdir(exist_ok=True)
        (tmp_path / "full" / "old.jpg").write_bytes(b"x")
    elif setup == "missing_db":
        db = tmp_path / "nope.db"
    elif setup == "not_a_db":
        db = tmp_path / "text.db"
        db.write_text("hello, not sqlite\n" * 100)
    r = inspector("review", "export", "--db", db, *(a.format(tmp=tmp_path) for a in args), timeout=60)
    assert r.returncode == 1 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_review_without_db_is_one_line():
    r = inspector("review", timeout=60)
    assert r.returncode == 1 and "give the defect log with --db" in r.stderr and "Traceback" not in r.stderr


NO_WEB = (
    "import sys\n"
    "for m in ('fastapi', 'uvicorn', 'starlette'): sys.modules[m] = None  # an install without the web extra\n"
    "from inspector.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_without_the_web_extra_summary_and_export_work_and_web_says_what_to_install(demo_log, tmp_path):
    import subprocess
    import sys

    def run(*args):
        return subprocess.run(
            [sys.executable, "-c", NO_WEB, *map(str, args)], capture_output=True, text=True, timeout=120
        )

    _mark_some(demo_log)
    r = run("review", "--db", demo_log, "--web", "8799")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "error: inspector review --web needs the web extra: pip install 'inspector[web]'"
    r = run("review", "--db", demo_log)
    assert r.returncode == 0 and "4 reviewed crop(s) ready" in r.stdout, r.stderr
    r = run("review", "export", "--db", demo_log, "--out", tmp_path / "set")
    assert r.returncode == 0 and (tmp_path / "set" / "manifest.csv").is_file(), r.stderr


def test_a_reviewed_part_whose_crop_is_gone_is_skipped_and_counted(demo_log, tmp_path):
    want = _mark_some(demo_log)
    gone = next(iter(want.values()))[2]
    crop = next((demo_log.parent / "log_images").rglob(f"*_{gone['part_id']:08d}_*.jpg"))
    crop.unlink()  # as retention does
    out = tmp_path / "set"
    r = inspector("review", "export", "--db", demo_log, "--out", out, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "3 crop(s) written" in r.stdout
    assert "skipped 1: no crop on disk" in r.stderr
    with (out / "manifest.csv").open() as fh:
        assert {int(row["source_id"]) for row in csv.DictReader(fh)} == set(want) - {gone["id"]}
