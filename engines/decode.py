"""Image bytes -> the OpenCV array every consumer preprocesses: one decoder for files and uploads alike.

Evaluation reads files, the classify API reads request bodies; both decode through :func:`decode_image`, so an
image gets the same pixels (and so the same verdict) whichever way it arrives. :func:`image_size` reads the
dimensions from a JPEG or PNG header without decoding, so a caller can refuse a decompression bomb (a small
file that inflates to gigabytes) before any pixel memory is allocated.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
# start-of-frame markers carry the dimensions; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class BadImage(ValueError):
    """Bytes that cannot be used as an image; the message is the reason."""


def image_format(data: bytes) -> str | None:
    """``"jpeg"`` or ``"png"`` from the magic bytes, else None (the content type a client sends may lie)."""
    if data.startswith(JPEG_SOI):
        return "jpeg"
    if data.startswith(PNG_SIGNATURE):
        return "png"
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame or a PNG's IHDR header; None when not found."""
    fmt = image_format(data)
    if fmt == "png":
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if fmt != "jpeg":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None  # lost sync: not a marker where one must be
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF:
            if i + 9 > n:
                return None
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        if marker == 0xDA or length < 2:  # start of scan before any frame header, or a broken length
            return None
        i += 2 + length
    return None


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes -> BGR or gray uint8; :class:`BadImage` for empty, non-image and truncated data.

    Truncation is checked explicitly (a JPEG without its end-of-image marker, a PNG without its IEND chunk):
    OpenCV decodes many cut-short files into an image whose lower part is gray, which would get a verdict.
    """
    if not data:
        raise BadImage("empty file")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise BadImage("not a decodable image")
    fmt = image_format(data)
    if fmt == "jpeg" and b"\xff\xd9" not in data[-4096:]:
        raise BadImage("truncated JPEG (no end-of-image marker)")
    if fmt == "png" and b"IEND" not in data[-64:]:
        raise BadImage("truncated PNG (no IEND chunk)")
    if img.dtype != np.uint8:
        img = cv2.convertScaleAbs(img, alpha=255.0 / max(1.0, float(img.max())))
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img
