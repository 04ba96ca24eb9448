"""The review server as a real process (real uvicorn, free localhost port): JSON routes, images by id only
(path traversal is a 4xx), the token beyond localhost, the Host check on localhost, marks over HTTP."""

from __future__ import annotations

import json
import sqlite3

import pytest


def post_mark(server, ids, mark, headers=None, who="tester"):
    body = json.dumps({"ids": ids, "mark": mark, "who": who}).encode()
    return server.request("/api/marks", body, {"Content-Type": "application/json", **(headers or {})}, "POST")


def test_routes_and_marks(demo_log, review_server):
    s = review_server(demo_log)
    code, body, hdr = s.request("/")
    assert code == 200 and b"inspector review" in body and hdr["content-type"].startswith("text/html")
    assert s.request("/static/review.js")[0] == 200
    info = json.loads(s.request("/api/info")[1])
    assert info["writable"] and not info["token_required"]
    page = json.loads(s.request("/api/parts?limit=5")[1])
    assert len(page["rows"]) == 5 and page["next"]
    nxt = json.loads(s.request(f"/api/parts?limit=50&after={page['next']}")[1])
    assert len(nxt["rows"]) == 19 and nxt["next"] is None
    assert {r["id"] for r in page["rows"]}.isdisjoint(r["id"] for r in nxt["rows"])
    first = page["rows"][0]
    code, jpg, hdr = s.request(f"/img/{first['id']}/crop")
    assert code == 200 and jpg[:2] == b"\xff\xd8" and hdr["content-type"] == "image/jpeg"
    assert s.request(f"/img/{first['id']}/map")[0] == 404  # a classifier logs no map
    rejected = [r for r in page["rows"] + nxt["rows"] if r["verdict"] != "ok"]
    code, body, _ = post_mark(s, [rejected[0]["id"]], "defect")
    assert code == 200 and json.loads(body)["marked"] == {str(rejected[0]["id"]): "confirm_defect"}
    code, body, _ = post_mark(s, [rejected[0]["id"]], "missed")
    assert code == 400 and "verdict is ok" in json.loads(body)["error"]
    assert post_mark(s, [123456], "defect")[0] == 404
    assert post_mark(s, [], "defect")[0] == 422
    assert json.loads(s.request("/api/count?reviewed=yes")[1]) == {"count": 1}
    for bad in (
        "/api/parts?verdict=good",
        "/api/parts?since=someday",
        "/api/parts?after=x",
        "/api/parts?reviewed=maybe",
    ):
        code, body, _ = s.request(bad)
        assert code == 400 and json.loads(body)["error"], bad
    # a form-encoded POST (what a page on another site can send without a preflight) is not a mark
    code, _, _ = s.request(
        "/api/marks", b"ids=1&mark=defect", {"Content-Type": "application/x-www-form-urlencoded"}, "POST"
    )
    assert code == 422
    con = sqlite3.connect(demo_log)
    assert con.execute("SELECT part, mark, who, source FROM review_marks").fetchall() == [
        (rejected[0]["id"], "confirm_defect", "tester", "127.0.0.1")
    ]
    con.close()


TRAVERSALS = [
    "/img/../../etc/passwd",
    "/img/..%2F..%2Fetc%2Fpasswd/crop",
    "/img/%2Fetc%2Fpasswd/crop",
    "/img//etc/passwd/crop",
    "/img/1/..%2F..%2F..%2Fetc%2Fpasswd",
    "/img/1/../../../etc/passwd",
    "/img/-1/crop",
    "/img/1.5/crop",
    "/static/../store.py",
    "/static/..%2Fstore.py",
    "/static/%2e%2e/%2e%2e/defectlog/writer.py",
    "/static//etc/passwd",
    "/api/parts/..%2F..%2Fetc%2Fpasswd",
]


def test_path_traversal_is_a_4xx(demo_log, review_server):
    con = sqlite3.connect(demo_log)  # and rows that name files outside the images folder
    con.execute("UPDATE parts SET image='../../../../../../etc/passwd' WHERE id=1")
    con.execute("UPDATE parts SET image='/etc/passwd' WHERE id=2")
    con.commit()
    con.close()
    s = review_server(demo_log)
    for path in [*TRAVERSALS, "/img/1/crop", "/img/2/crop", "/img/1/map"]:
        code, body, _ = s.request(path)
        assert 400 <= code < 500, (path, code)
        assert json.loads(body)["error"], path  # one-line JSON error, whatever refused it
        assert b"root:" not in body and b"SCHEMA" not in body and b"def " not in body, path
    assert s.request("/img/3/crop")[0] == 200  # a normal row still works


def test_beyond_localhost_marks_need_the_token(demo_log, review_server):
    s = review_server(demo_log, host="0.0.0.0", env={"INSPECTOR_REVIEW_TOKEN": "s3cret-token"})
    assert json.loads(s.request("/api/info")[1])["token_required"]
    assert s.request("/api/parts")[0] == 200  # browsing needs none
    assert post_mark(s, [1], "defect")[0] == 401
    assert post_mark(s, [1], "defect", {"X-Review-Token": "wrong"})[0] == 401
    assert post_mark(s, [1], "defect", {"Authorization": "Bearer s3cret-token-longer"})[0] == 401
    assert post_mark(s, [1], "defect", {"X-Review-Token": "s3cret-token"})[0] == 200
    assert post_mark(s, [1], "clear", {"Authorization": "Bearer s3cret-token"})[0] == 200
    assert "s3cret-token" not in s.close()


def test_localhost_listener_refuses_foreign_host_headers(demo_log, review_server):
    s = review_server(demo_log)
    code, body, _ = s.request("/api/parts", headers={"Host": "attacker.example:80"})
    assert code == 421 and b"Host" in body
    assert s.request("/api/parts", headers={"Host": f"localhost:{s.port}"})[0] == 200


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--web", "0.0.0.0:8799"), {"INSPECTOR_REVIEW_TOKEN": ""}, "needs a token for marking; set the environment"),
        (("--web", "0.0.0.0:8799", "--token-env", "MY_TOKEN"), {}, "set the environment variable MY_TOKEN"),
        (("--web", "localhost:http"), {}, "expected PORT or HOST:PORT"),
        (("--web", "99999"), {}, "expected PORT or HOST:PORT"),
        (
            ("--web", "203.0.113.77:8799"),
            {"INSPECTOR_REVIEW_TOKEN": "t"},
            "cannot listen there (Cannot assign requested",
        ),
    ],
)
def test_web_bad_input_is_one_line(demo_log, args, env, message):
    from tests.review.conftest import inspector

    r = inspector("review", "--db", demo_log, *args, env=env, timeout=60)
    assert r.returncode == 1 and message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_port_in_use_is_one_line(demo_log):
    import socket

    from tests.review.conftest import inspector

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = inspector("review", "--db", demo_log, "--web", str(port), timeout=60)
    assert r.returncode == 1 and "cannot listen there (Address already in use)" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_an_anomaly_models_heat_map_is_served_beside_its_crop(tmp_path, review_server):
    """The real writer saves an anomaly model's map as <crop>_map.png; the page gets it by the part's id."""
    import time

    import cv2
    import numpy as np

    from inspector.config import LogConfig
    from inspector.defectlog import DefectLog
    from inspector.records import Part, Verdict

    writer = DefectLog(LogConfig(db=str(tmp_path / "anomaly.db"), ok_sample_fraction=1.0))
    rng = np.random.default_rng(0)
    for i in range(3):
        now = time.monotonic_ns()
        crop = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
        amap = np.zeros((56, 56), np.float32)
        amap[10:20, 30:40] = 1.0
        writer.on_part(
            Part(
                i,
                i,
                now,
                (0, 0, 80, 64),
                Verdict.DEFECT,
                0.97,
                "anomaly",
                crop=crop,
                anomaly_map=amap,
                t_verdict_ns=now,
            )
        )
    writer.close()
    assert writer.stats["images"] == 3
    s = review_server(tmp_path / "anomaly.db")
    row = json.loads(s.request("/api/parts?limit=1")[1])["rows"][0]
    detail = json.loads(s.request(f"/api/parts/{row['id']}")[1])
    assert detail["has_image"] and detail["has_map"]
    code, png, hdr = s.request(f"/img/{row['id']}/map")
    assert code == 200 and hdr["content-type"] == "image/png"
    heat = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert heat.shape[:2] == (64, 80) and heat.std() > 10  # the crop's size, and a hot region on it
