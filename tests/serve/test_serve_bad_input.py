"""Bad uploads get a 4xx with one line of JSON, every line is documented in docs/errors.md, and the server is
unharmed: after each one it is healthy and still classifies correctly."""

from __future__ import annotations

import socket
import struct
import zlib

import cv2
import numpy as np
import pytest

from tests.serve.conftest import Client, Reply, demo_images, is_documented, multipart, read_reply

LIMIT = 2 * 1024 * 1024  # the module server's max_upload_bytes
JPEG = demo_images()[0].read_bytes()
_IMG = cv2.imread(str(demo_images()[0]), cv2.IMREAD_UNCHANGED)
PNG = cv2.imencode(".png", _IMG)[1].tobytes()


def _png_header(w: int, h: int) -> bytes:
    """A PNG that claims w x h pixels: signature and IHDR only (a decompression bomb's first bytes)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00" * 64


def _noise_png(n: int) -> bytes:
    """A valid PNG of about n bytes (noise does not compress)."""
    side = int((n / 3) ** 0.5) + 1
    img = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return cv2.imencode(".png", img)[1].tobytes()


GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"

# id, how to send it (content type, body, query) or a multipart (files, fields), status, what the one line says
CASES = [
    ("empty-body", ("image/jpeg", b"", ""), 400, "request body: empty (0 bytes)"),
    ("wrong-type-text", ("text/plain", b"hello", ""), 415, "content type 'text/plain' is not accepted"),
    ("wrong-type-json", ("application/json", b"{}", ""), 415, "content type 'application/json' is not accepted"),
    ("no-type", (None, JPEG, ""), 415, "content type '(none)' is not accepted"),
    ("not-an-image", ("image/jpeg", b"this is not an image" * 10, ""), 422, "not a JPEG or PNG image"),
    ("gif-as-png", ("image/png", GIF, ""), 422, "not a JPEG or PNG image (declared image/png)"),
    ("truncated-jpeg", ("image/jpeg", JPEG[: len(JPEG) * 2 // 3], ""), 422, ("truncated JPEG", "not a decodable")),
    ("jpeg-header-only", ("image/jpeg", JPEG[:20], ""), 422, "JPEG header unreadable"),
    ("truncated-png", ("image/png", PNG[: len(PNG) // 2], ""), 422, ("truncated PNG", "not a decodable")),
    ("png-bomb", ("image/png", _png_header(100_000, 100_000), ""), 413, "100000x100000 pixels is over"),
    ("crop-words", ("image/jpeg", JPEG, "?crop=left,top"), 422, "expected four integers x,y,w,h"),
    ("crop-negative", ("image/jpeg", JPEG, "?crop=-1,0,10,10"), 422, "x and y must be >= 0"),
    ("crop-outside", ("image/jpeg", JPEG, "?crop=250,250,100,100"), 422, "reaches outside the 300x300 image"),
    ("multipart-no-file", ([], [("crop", "1,1,5,5")]), 400, "multipart body has no image file part"),
    (
        "multipart-unknown-field",
        ([("a.jpg", JPEG, "image/jpeg")], [("path", "/etc/passwd")]),
        400,
        "'path' is not known",
    ),
    ("multipart-part-type", ([("a.txt", b"hi", "text/plain")], []), 415, "part 0 (a.txt): content type 'text/plain'"),
    ("multipart-part-empty", ([("a.jpg", b"", "image/jpeg")], []), 400, "part 0 (a.jpg): empty (0 bytes)"),
    ("multipart-crops", ([("a.jpg", JPEG, "image/jpeg")] * 3, [("crop", "0,0,5,5")] * 2), 422, "2 crop fields for 3"),
    ("multipart-too-many", ([("a.jpg", JPEG[:10], "image/jpeg")] * 33, []), 400, "Too many files"),
]


def _send(client: Client, how):
    if len(how) == 3:
        ctype, body, query = how
        headers = {"Content-Type": ctype} if ctype else {}
        return client.request("POST", "/v1/classify" + query, body, headers)
    files, fields = how
    return client.post_multipart(files, fields)


def check_one_line(r, status: int) -> str:
    assert r.status == status, (r.status, r.body)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json
    assert list(body) == ["error"] and "\n" not in body["error"] and body["error"]
    assert "Traceback" not in body["error"]
    assert is_documented(r.status, body["error"]), f"not in docs/errors.md: {r.status} {body['error']}"
    return body["error"]


def assert_unharmed(client: Client, expected) -> None:
    fresh = Client(client.port)
    try:
        assert fresh.get("/healthz").status == 200
        path = demo_images()[-1]
        r = fresh.post_image(path.read_bytes())
        assert r.status == 200 and r.json["results"][0]["verdict"] == expected[f"{path.parent.name}/{path.name}"][0]
    finally:
        fresh.close()


@pytest.mark.parametrize(("case", "how", "status", "says"), CASES, ids=[c[0] for c in CASES])
def test_bad_upload(client: Client, expected, case, how, status, says) -> None:
    r = _send(client, how)
    line = check_one_line(r, status)
    assert any(s in line for s in ((says,) if isinstance(says, str) else says)), line  # OpenCV may catch it first
    assert_unharmed(client, expected)


def test_too_large_by_content_length(server, expected) -> None:
    """A declared body over the limit is refused before a byte of it is read."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            + f"Content-Length: {LIMIT + 1}\r\n\r\n".encode()
        )
        reply = read_reply(s)
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:80]
    assert b"(Content-Length), the limit is 2 MB" in reply
    assert b"Retry-After" not in reply
    assert_unharmed(Client(server.port), expected)


def test_too_large_while_reading(client: Client, expected) -> None:
    """Chunked (no Content-Length): counted as it arrives, refused once past the limit."""
    big = _noise_png(LIMIT + 200_000)
    assert len(big) > LIMIT
    chunks = (big[i : i + 65536] for i in range(0, len(big), 65536))
    client.conn.request("POST", "/v1/classify", body=chunks, headers={"Content-Type": "image/png"}, encode_chunked=True)
    r = client.conn.getresponse()
    reply = Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    client.conn.close()
    assert "bytes sent, the limit is 2 MB" in check_one_line(reply, 413)
    assert_unharmed(client, expected)


def test_too_large_multipart_while_reading(client: Client, expected) -> None:
    """The same for a multipart body: the limit holds while the form parser reads it."""
    body, ctype = multipart([("a.png", _noise_png(LIMIT // 2 + 100_000), "image/png")] * 2)
    assert len(body) > LIMIT
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
    client.conn.request("POST", "/v1/classify", body=chunks, headers={"Content-Type": ctype}, encode_chunked=True)
    r = client.conn.getresponse()
    reply = Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    client.conn.close()
    assert "bytes sent, the limit is 2 MB" in check_one_line(reply, 413)
    assert_unharmed(client, expected)


def test_large_image_under_the_limit_is_classified(client: Client) -> None:
    """A 1.5 MB PNG (under the 2 MB limit): accepted, so the limit is not refusing everything."""
    big = _noise_png(1_500_000)
    assert 1_000_000 < len(big) < LIMIT
    r = client.post_image(big, "image/png")
    assert r.status == 200 and r.json["results"][0]["verdict"] in ("ok", "defect")


@pytest.mark.parametrize(
    "path",
    [
        "/../../etc/passwd",
        "/etc/passwd",
        "/v1/model/../../../etc/passwd",
        "/v1/classify/..%2F..%2Fetc%2Fpasswd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/v1/model/%2Fetc%2Fpasswd",
        "//etc/passwd",
    ],
)
def test_no_route_takes_a_path(client: Client, expected, path: str) -> None:
    """Routes take no file names: traversal and absolute paths are unknown routes, nothing is read from disk."""
    for method in ("GET", "POST"):
        r = client.request(method, path, b"" if method == "POST" else None)
        assert b"root:" not in r.body
        check_one_line(r, 404)
    assert_unharmed(client, expected)


def test_path_in_query_is_not_read(client: Client) -> None:
    r = client.get("/v1/model?path=/etc/passwd&file=../../etc/passwd")
    assert r.status == 200 and b"root:" not in r.body
    r = client.request("POST", "/v1/classify?path=/etc/passwd", b"", {"Content-Type": "image/jpeg"})
    assert b"root:" not in r.body
    check_one_line(r, 400)


def test_wrong_method(client: Client) -> None:
    assert "GET is not allowed on /v1/classify" in check_one_line(client.get("/v1/classify"), 405)


def test_rejects_are_counted(client: Client) -> None:
    before = _metric(client, 'inspector_api_rejects_total{reason="bad_type"}')
    check_one_line(client.post_image(b"x", "text/plain"), 415)
    assert _metric(client, 'inspector_api_rejects_total{reason="bad_type"}') == before + 1


def _metric(client: Client, name: str) -> float:
    for line in client.get("/metrics").body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")
