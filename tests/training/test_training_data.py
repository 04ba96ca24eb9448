"""Dataset layouts and every bad-data case: a logged skip with a count, or one clear UserError."""

from __future__ import annotations

import logging
import shutil

import cv2
import numpy as np
import pytest

from engines.errors import UserError
from training.data import index_dataset, load_images, prefix_class


def test_folders_layout_and_default_ok_class(tiny_dataset):
    root = tiny_dataset({"ok": 5, "defect": 7})
    idx = index_dataset(root)
    assert idx.layout == "folders" and idx.classes == ["defect", "ok"] and idx.ok_class == "ok"
    assert idx.counts() == {"defect": 7, "ok": 5}
    loaded = load_images(idx, 32)
    assert loaded.images.shape == (12, 32, 32, 1)  # gray content stored as BGR -> one channel
    assert loaded.hashes.shape == (12, 8, 4)


def test_ok_class_option(tiny_dataset):
    root = tiny_dataset({"good": 3, "scratch": 3})
    assert index_dataset(root, ok_class="scratch").ok_class == "scratch"
    with pytest.raises(UserError, match="--ok-class 'nope'"):
        index_dataset(root, ok_class="nope")


def test_colour_data_gives_three_channels(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("ok", "bad"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            cv2.imwrite(str(tmp_path / cls / f"{i}.png"), rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
    assert load_images(index_dataset(tmp_path), 16).channels == 3


@pytest.mark.parametrize("name", ["crazing_12.jpg", "rolled-in_scale_3.jpg", "pitted_surface_300.jpg"])
def test_prefix_class_names(name):
    assert prefix_class(name) == name.rsplit("_", 1)[0]


def test_prefix_layout_auto_and_forced(tiny_dataset, tmp_path):
    src = tiny_dataset({"crazing": 4, "rolled-in_scale": 4})
    flat = tmp_path / "neu" / "IMAGES"
    flat.mkdir(parents=True)
    (tmp_path / "neu" / "ANNOTATIONS").mkdir()
    (tmp_path / "neu" / "ANNOTATIONS" / "crazing_1.xml").write_text("<annotation/>")
    for i, f in enumerate(sorted(src.rglob("*.png"))):
        shutil.copy(f, flat / f"{f.parent.name}_{i}.png")
    for given, layout in ((tmp_path / "neu", "auto"), (flat, "auto"), (tmp_path / "neu", "prefix")):
        idx = index_dataset(given, layout=layout)
        assert idx.layout == "prefix" and idx.classes == ["crazing", "rolled-in_scale"]
        assert idx.counts() == {"crazing": 4, "rolled-in_scale": 4} and idx.ok_class is None


def test_manifest_layout(tiny_dataset):
    root = tiny_dataset({"ok": 3, "defect": 3})
    rows = ["path,label"] + [
        f"{p.relative_to(root)},{'bad' if 'defect' in p.name else 'good'}" for p in sorted(root.rglob("*.png"))
    ]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    idx = index_dataset(root / "labels.csv")
    assert idx.layout == "manifest" and idx.classes == ["bad", "good"] and idx.ok_class == "good"
    assert len(load_images(idx, 16).items) == 6


def test_corrupt_truncated_and_non_images_are_skipped_and_counted(tiny_dataset, caplog):
    root = tiny_dataset({"ok": 4, "defect": 4})
    good = next((root / "ok").glob("*.png"))
    ok_img = cv2.imread(str(good))
    jpg = cv2.imencode(".jpg", ok_img)[1].tobytes()
    (root / "ok" / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (root / "ok" / "cut_end.jpg").write_bytes(jpg[:-2])  # decodes, but the end-of-image marker is gone
    (root / "ok" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (root / "defect" / "notes.txt").write_text("not an image")
    (root / "defect" / "empty.jpg").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        loaded = load_images(index_dataset(root), 32)
    assert len(loaded.items) == 8
    reasons = dict(loaded.skipped)
    assert set(reasons) == {
        "ok/truncated.jpg",
        "ok/cut_end.jpg",
        "ok/corrupt.png",
        "defect/notes.txt",
        "defect/empty.jpg",
    }
    # OpenCV 5 refuses a cut JPEG itself; older versions decode it grey-filled and the marker check catches it
    assert reasons["ok/cut_end.jpg"] in ("not a decodable image", "truncated JPEG (no end-of-image marker)")
    assert reasons["defect/empty.jpg"] == "empty file"
    assert reasons["defect/notes.txt"] == "not a decodable image"
    assert "5 of 13 file(s) skipped" in caplog.text


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda r: None, "no images found"),
        (lambda r: [(r / c).mkdir() for c in ("ok", "bad")], "hold no files"),
        (
            lambda r: ((r / "ok").mkdir(), (r / "ok" / "a.png").write_bytes(b"x"), (r / "bad").mkdir()),
            "bad hold no files",
        ),
        (
            lambda r: ((r / "ok").mkdir(), cv2.imwrite(str(r / "ok" / "a.png"), np.zeros((8, 8), np.uint8))),
            "only one class",
        ),
    ],
    ids=["no-images", "empty-folders", "one-empty-folder", "one-class"],
)
def test_unusable_datasets_are_one_clear_error(tmp_path, make, match):
    root = tmp_path / "d"
    root.mkdir()
    make(root)
    with pytest.raises(UserError, match=match):
        index_dataset(root)


def test_missing_dir_and_all_unreadable(tmp_path):
    with pytest.raises(UserError, match="dataset not found"):
        index_dataset(tmp_path / "missing")
    for cls in ("ok", "bad"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="none of the 2 file"):
        load_images(index_dataset(tmp_path), 16)


def test_only_one_class_readable(tmp_path, tiny_dataset):
    root = tiny_dataset({"ok": 3, "bad": 1})
    (next((root / "bad").glob("*.png"))).write_bytes(b"broken")
    with pytest.raises(UserError, match="only class \\['ok'\\] has images"):
        load_images(index_dataset(root), 16)
