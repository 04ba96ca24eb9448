"""The API's verdicts are `inspector evaluate`'s: the same images, engine and preprocessing give the same answer."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.serve.conftest import DEMO, MODEL, ROOT, Client, demo_images

SCORE_TOL = 1e-5  # batched vs single engine calls may differ in the last float bits; verdicts may not


def test_demo_images_one_by_one_equal_evaluate(client: Client, expected) -> None:
    """Every bundled demo image, one request each: verdict, class and score as evaluate's scoring path gives."""
    assert len(expected) == len(demo_images()) == 40
    for path in demo_images():
        r = client.post_image(path.read_bytes())
        assert r.status == 200, r.body
        (res,) = r.json["results"]
        verdict, score, cls = expected[f"{path.parent.name}/{path.name}"]
        assert (res["verdict"], res["class"]) == (verdict, cls), path.name
        assert res["score"] == pytest.approx(score, abs=SCORE_TOL), path.name
        assert res["threshold"] == pytest.approx(0.7925678491592407)
        assert res["model"].startswith("casting_seedcnn@") and len(res["model"].split("@")[1]) == 12
        assert res["latency_ms"] > 0


def test_cli_evaluate_tally_equals_api(client: Client, tmp_path) -> None:
    """The real `inspector evaluate` CLI on demo/: its confusion matrix equals the API's verdicts on the same files
    (sent as two multipart requests of 20 images)."""
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "inspector", "evaluate", "--model", str(MODEL), "--data", str(DEMO)]
    cmd += ["--out", str(out), "--no-gradcam", "--split", "all"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    m = json.loads((out / "metrics.json").read_text())
    paths = demo_images()
    results = []
    for chunk in (paths[:20], paths[20:]):  # 32 images at most per request
        r = client.post_multipart([(p.name, p.read_bytes(), "image/jpeg") for p in chunk])
        assert r.status == 200, r.body
        results += r.json["results"]
    assert [x["name"] for x in results] == [p.name for p in paths]
    cm = np.zeros((2, 2), int)  # rows: true ok/defect; columns: predicted ok/defect (evaluate's layout)
    for p, res in zip(paths, results, strict=True):
        cm[int(p.parent.name == "def_front"), int(res["verdict"] == "defect")] += 1
    assert m["confusion_matrix_labels"] == ["ok", "defect"]
    assert cm.tolist() == m["confusion_matrix"]
    assert m["n_images"] == 40 and m["n_skipped"] == 0


def test_multipart_matches_single_requests(client: Client, expected) -> None:
    """Several images in one request come back in order, each with its own verdict."""
    paths = demo_images()[::3]
    r = client.post_multipart([(p.name, p.read_bytes(), "image/jpeg") for p in paths])
    assert r.status == 200
    for p, res in zip(paths, r.json["results"], strict=True):
        verdict, score, _ = expected[f"{p.parent.name}/{p.name}"]
        assert res["verdict"] == verdict
        assert res["score"] == pytest.approx(score, abs=SCORE_TOL)


def test_png_and_crop(client: Client, onnx_engine) -> None:
    """A PNG body, and a crop box (query and form field): the verdict of the cropped pixels, as evaluate would
    score a file holding just that crop."""
    from engines.preprocess import infer_crops

    meta = onnx_engine.meta
    box = (40, 30, 200, 180)
    x, y, w, h = box
    for path in demo_images():  # the first image whose score the crop really changes (so the test can tell)
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        want_full = float(meta.defect_scores(infer_crops(onnx_engine, [img]))[0])
        want_crop = float(meta.defect_scores(infer_crops(onnx_engine, [img[y : y + h, x : x + w]]))[0])
        if abs(want_full - want_crop) > 0.01:
            break
    else:
        raise AssertionError("no demo image whose score a crop changes")
    ok_png, png = cv2.imencode(".png", img)
    assert ok_png

    r = client.post_image(png.tobytes(), "image/png")
    assert r.status == 200 and r.json["results"][0]["score"] == pytest.approx(want_full, abs=SCORE_TOL)
    r = client.post_image(png.tobytes(), "image/png", query="?crop=40,30,200,180")
    res = r.json["results"][0]
    assert res["crop"] == list(box) and res["score"] == pytest.approx(want_crop, abs=SCORE_TOL)
    r = client.post_multipart(
        [("a.png", png.tobytes(), "image/png"), ("b.png", png.tobytes(), "image/png")],
        [("crop", "40,30,200,180"), ("crop", "")],
    )
    a, b = r.json["results"]
    assert a["score"] == pytest.approx(want_crop, abs=SCORE_TOL) and a["crop"] == list(box)
    assert b["score"] == pytest.approx(want_full, abs=SCORE_TOL) and b["crop"] is None


def test_casting_images_equal_evaluate(client: Client, onnx_engine, shared_data) -> None:
    """200 real casting photos of the model's held-out test split, from the shared data set (skipped without
    it): per-image verdicts equal evaluate's scoring path, sent in multipart requests of 20."""
    from training.data import Item
    from training.evaluate import score_items

    meta = onnx_engine.meta
    root = shared_data / "casting" / "train"
    keys = meta.extra["split"]["test"]
    paths = [root / k for k in keys if k.startswith("def_front/")][:100]
    paths += [root / k for k in keys if k.startswith("ok_front/")][:100]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"{missing[0]} not found: the casting images the model was tested on are needed here")
    items = [Item(f"{p.parent.name}/{p.name}", p, p.parent.name) for p in paths]
    scored = score_items(onnx_engine, items, {c: c for c in meta.classes})
    want = meta.predicted_classes(scored.probs)
    want_scores = meta.defect_scores(scored.probs)
    got_cls, got_scores = [], []
    for a in range(0, len(paths), 20):
        chunk = paths[a : a + 20]
        r = client.post_multipart([(p.name, p.read_bytes(), "image/jpeg") for p in chunk])
        assert r.status == 200, r.body
        got_cls += [x["class"] for x in r.json["results"]]
        got_scores += [x["score"] for x in r.json["results"]]
    assert got_cls == want
    assert np.allclose(got_scores, want_scores, atol=SCORE_TOL)


def test_model_health_metrics_docs(client: Client) -> None:
    m = client.get("/v1/model")
    assert m.status == 200
    d = m.json
    assert d["classes"] == ["def_front", "ok_front"] and d["ok_class"] == "ok_front"
    assert d["input_size"] == 128 and d["channels"] == 1 and d["id"].startswith("casting_seedcnn@")
    assert d["sha256"].startswith(d["id"].split("@")[1]) and "split" not in json.dumps(d)
    assert d["batching"]["max_batch"] == 16
    h = client.get("/healthz")
    assert h.status == 200 and h.json["status"] == "ok"
    client.post_image(demo_images()[0].read_bytes())
    text = client.get("/metrics").body.decode()
    for name in (
        "inspector_api_requests_total",
        "inspector_api_request_seconds_bucket",
        "inspector_api_batch_size_bucket",
        "inspector_api_queue_depth",
        'inspector_api_rejects_total{reason="queue_full"}',
        'inspector_api_images_total{verdict="ok"}',
    ):
        assert name in text, name
    assert 'route="/v1/classify",status="200"' in text
    docs = client.get("/docs")
    assert docs.status == 200 and b"swagger" in docs.body.lower()
    spec = client.get("/openapi.json").json
    assert "/v1/classify" in spec["paths"] and "image/jpeg" in json.dumps(spec["paths"]["/v1/classify"])
