"""Dynamic batching: concurrent clients share engine calls and each gets its own answer; a full queue answers
503 with Retry-After instead of growing; a flood leaves the server healthy."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from inspector.serve.batcher import Batcher, QueueFull, Stopped
from tests.serve.conftest import Client, GatedEngine, demo_images, start_server
from tests.waiting import wait_for

SCORE_TOL = 1e-5


def _metric(port: int, name: str) -> float:
    c = Client(port)
    try:
        for line in c.get("/metrics").body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    finally:
        c.close()
    raise AssertionError(f"{name} not in /metrics")


def test_full_queue_answers_503_and_recovers(onnx_engine, expected) -> None:
    """A slowed (gated) real engine, max_batch 1, max_queue 2: one request in the engine, two waiting, the
    fourth is refused at once with 503 + Retry-After; once the engine moves, the three get their verdicts."""
    gated = GatedEngine(onnx_engine)
    srv = start_server(gated, max_batch=1, max_wait_ms=0, max_queue=2, max_images=2)
    paths = demo_images()[::10][:3]
    pool = ThreadPoolExecutor(3)
    try:
        futs = [pool.submit(Client(srv.port).post_image, paths[0].read_bytes())]
        assert gated.entered.wait(10), "the first request never reached the engine"
        futs += [pool.submit(Client(srv.port).post_image, p.read_bytes()) for p in paths[1:]]
        assert wait_for(lambda: _metric(srv.port, "inspector_api_queue_depth") == 2, 10)
        c = Client(srv.port)
        r = c.post_image(paths[0].read_bytes())
        assert r.status == 503 and r.headers["retry-after"] == "1"
        assert r.json["error"].startswith("busy: 2 image(s) already waiting (max_queue 2)")
        assert c.get("/healthz").status == 200  # overloaded is not down
        assert _metric(srv.port, 'inspector_api_rejects_total{reason="queue_full"}') == 1
        gated.gate.set()
        for p, f in zip(paths, futs, strict=True):
            r = f.result(30)
            assert r.status == 200
            assert r.json["results"][0]["verdict"] == expected[f"{p.parent.name}/{p.name}"][0]
        assert gated.sizes == [1, 1, 1]
        assert c.post_image(paths[0].read_bytes()).status == 200  # room again
    finally:
        gated.gate.set()
        pool.shutdown()
        srv.stop()


def test_concurrent_clients_batched_without_mixing(onnx_engine, expected) -> None:
    """16 clients with different images (some cropped) while the engine is held: their images are then judged
    in shared batches, and every client gets the verdict and score of its own image."""
    from engines.preprocess import infer_crops

    gated = GatedEngine(onnx_engine)
    srv = start_server(gated, max_batch=8, max_wait_ms=50, max_queue=64)
    paths = demo_images()[:40:2][:16]
    meta = onnx_engine.meta
    import cv2

    crop = (20, 20, 220, 240)
    want = {}
    for i, p in enumerate(paths):
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if i % 4 == 3:
            x, y, w, h = crop
            img = img[y : y + h, x : x + w]
        want[i] = float(meta.defect_scores(infer_crops(onnx_engine, [img]))[0])

    def one(i: int):
        q = "?crop=" + ",".join(map(str, crop)) if i % 4 == 3 else ""
        c = Client(srv.port)
        try:
            return c.post_image(paths[i].read_bytes(), query=q)
        finally:
            c.close()

    try:
        with ThreadPoolExecutor(16) as pool:
            first = pool.submit(one, 0)
            assert gated.entered.wait(10)
            rest = {i: pool.submit(one, i) for i in range(1, 16)}
            assert wait_for(lambda: _metric(srv.port, "inspector_api_queue_depth") == 15, 15)
            gated.gate.set()
            replies = {0: first.result(30), **{i: f.result(30) for i, f in rest.items()}}
        for i, r in replies.items():
            assert r.status == 200
            res = r.json["results"][0]
            assert res["score"] == pytest.approx(want[i], abs=SCORE_TOL), i
            assert res["verdict"] == ("defect" if want[i] >= meta.threshold else "ok")
        assert gated.sizes[0] == 1 and max(gated.sizes[1:]) == 8  # 15 queued images went in batches of 8 and 7
        assert sum(gated.sizes) == 16
    finally:
        gated.gate.set()
        srv.stop()


def test_flood_leaves_server_healthy(onnx_engine, expected) -> None:
    """A real flood: 24 clients x 8 requests at a queue of 4 images. Every answer is a correct verdict or a
    503 with Retry-After; nothing else; the server is healthy afterwards and its counts add up."""
    srv = start_server(onnx_engine, max_batch=2, max_wait_ms=1, max_queue=4, max_images=4)
    paths = demo_images()
    counts = {"ok": 0, "busy": 0}
    lock = threading.Lock()

    def client_loop(k: int) -> None:
        c = Client(srv.port)
        try:
            for j in range(8):
                p = paths[(k * 8 + j) % len(paths)]
                r = c.post_image(p.read_bytes())
                if r.status == 503:
                    assert r.headers["retry-after"] == "1"
                    with lock:
                        counts["busy"] += 1
                    continue
                assert r.status == 200, r.body
                assert r.json["results"][0]["verdict"] == expected[f"{p.parent.name}/{p.name}"][0]
                with lock:
                    counts["ok"] += 1
        finally:
            c.close()

    try:
        with ThreadPoolExecutor(24) as pool:
            for f in [pool.submit(client_loop, k) for k in range(24)]:
                f.result(120)
        assert counts["ok"] + counts["busy"] == 24 * 8
        assert _metric(srv.port, 'inspector_api_rejects_total{reason="queue_full"}') == counts["busy"]
        assert (
            _metric(srv.port, 'inspector_api_images_total{verdict="ok"}')
            + _metric(srv.port, 'inspector_api_images_total{verdict="defect"}')
            == counts["ok"]
        )
        c = Client(srv.port)
        assert c.get("/healthz").json["queue"] == 0
        c.close()
    finally:
        srv.stop()


# --- the batcher's own logic, with a fake batch function (pure logic) -----------------------------------------


def test_batcher_all_or_nothing_and_order() -> None:
    release = threading.Event()
    seen: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        seen.append(list(items))
        release.wait(10)
        return [x * 10 for x in items]

    b = Batcher(run, max_batch=3, max_wait_ms=0, max_queue=4)
    try:
        first = b.submit([1])
        assert wait_for(lambda: seen == [[1]], 5)
        two = b.submit([2, 3])
        with pytest.raises(QueueFull):
            b.submit([4, 5, 6])  # 2 waiting + 3 > 4: refused whole, nothing of it queued
        assert b.depth == 2 and b.rejected == 1
        more = b.submit([7, 8])
        release.set()
        assert [f.result(5) for f in first + two + more] == [10, 20, 30, 70, 80]
        assert seen[1] == [2, 3, 7]  # oldest first, at most max_batch
    finally:
        release.set()
        b.close()


def test_batcher_skips_cancelled_and_fails_on_close() -> None:
    release = threading.Event()
    ran: list[int] = []

    def run(items: list[int]) -> list[int]:
        ran.extend(items)
        release.wait(10)
        return items

    b = Batcher(run, max_batch=4, max_wait_ms=0, max_queue=8)
    held = b.submit([0])
    assert wait_for(lambda: ran == [0], 5)
    gone, kept = b.submit([1]), b.submit([2])
    assert gone[0].cancel()  # its client went away
    release.set()
    assert kept[0].result(5) == 2 and held[0].result(5) == 0
    assert 1 not in ran
    release.clear()
    busy = b.submit([3])
    assert wait_for(lambda: 3 in ran, 5)
    queued = b.submit([4])
    closing = threading.Thread(target=b.close)
    closing.start()
    assert isinstance(queued[0].exception(5), Stopped)  # queued images fail at close, not hang
    with pytest.raises(Stopped):
        b.submit([5])
    release.set()  # the batch in the engine still completes
    assert busy[0].result(5) == 3
    closing.join(5)
    assert not closing.is_alive() and not b.alive


def test_batcher_waits_only_for_requests_on_their_way() -> None:
    """Announced requests (expect) are waited for, up to max_wait, and join the first one's batch; a lone
    request with none announced is run at once, not after max_wait."""
    batches: list[list[int]] = []
    b = Batcher(lambda xs: (batches.append(list(xs)), xs)[1], max_batch=8, max_wait_ms=20_000, max_queue=8)
    try:
        for _ in range(3):
            b.expect()
        fs = b.submit([1], expected=True)
        fs += b.submit([2], expected=True)
        fs += b.submit([3], expected=True)
        assert [f.result(10) for f in fs] == [1, 2, 3]
        assert batches == [[1, 2, 3]]
        lone = b.submit([4])
        assert lone[0].result(10) == 4  # far sooner than the 20 s max_wait: nothing else was on its way
        b.expect()
        b.submit([5], expected=True)[0].result(10)
        b.expect()
        waiting = b.submit([6])  # one more announced request is still on its way: the batch waits for it
        b.withdraw()  # ... until it gives up (a bad upload)
        assert waiting[0].result(10) == 6
        assert batches[1:] == [[4], [5], [6]]
    finally:
        b.close()


def test_batcher_failure_fails_only_its_batch() -> None:
    def run(xs: list[int]) -> list[int]:
        if 13 in xs:
            raise RuntimeError("engine failed")
        return xs

    b = Batcher(run, max_batch=1, max_wait_ms=0, max_queue=4)
    try:
        bad, good = b.submit([13]), b.submit([1])
        assert isinstance(bad[0].exception(5), RuntimeError)
        assert good[0].result(5) == 1 and b.alive
    finally:
        b.close()
