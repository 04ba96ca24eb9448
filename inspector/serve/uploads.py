"""What a client sends, checked before any of it reaches the engine: content type, bytes, pixels, crop box.

Every refusal is an :class:`ApiError`: an HTTP status, one line that says what was wrong and what to do, and a
short ``reason`` (the label of the ``inspector_api_rejects_total`` counter).
"""

from __future__ import annotations

import numpy as np

from engines.decode import BadImage, decode_image, image_format, image_size
from inspector.serve.classifier import Crop

IMAGE_TYPES = {"image/jpeg": "jpeg", "image/jpg": "jpeg", "image/png": "png"}
MULTIPART = "multipart/form-data"
DEFAULT_MAX_PIXELS = 40_000_000  # 40 MP: a large line-scan frame; more is refused before decoding


class ApiError(Exception):
    """A request the API refuses: ``status`` (4xx, or 503), a one-line ``message``, a metrics ``reason``."""

    def __init__(self, status: int, message: str, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers


def media_type(content_type: str | None) -> str:
    """``image/jpeg; charset=x`` -> ``image/jpeg`` (lower case); '' when absent."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_type(content_type: str | None, where: str = "request body") -> str:
    """The upload's declared type must be JPEG or PNG; returns ``jpeg`` or ``png``."""
    mt = media_type(content_type)
    if mt not in IMAGE_TYPES:
        raise ApiError(
            415,
            f"{where}: content type {mt or '(none)'!r} is not accepted; send image/jpeg or image/png "
            f"(or {MULTIPART} with image parts)",
            "bad_type",
        )
    return IMAGE_TYPES[mt]


def parse_crop(text: str | None, where: str = "crop") -> Crop | None:
    """``"x,y,w,h"`` (pixels, integers, w and h at least 1) -> :class:`Crop`; None when absent or empty."""
    if text is None or not text.strip():
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise ApiError(
            422, f"{where} {text!r}: expected four integers x,y,w,h (pixels), e.g. crop=10,20,300,300", "bad_crop"
        ) from None
    if x < 0 or y < 0 or w < 1 or h < 1:
        raise ApiError(422, f"{where} {text!r}: x and y must be >= 0, w and h >= 1", "bad_crop")
    return Crop(x, y, w, h)


def decode_upload(data: bytes, declared: str, where: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Bytes of one upload -> a decoded image, or an :class:`ApiError` naming the upload."""
    if not data:
        raise ApiError(400, f"{where}: empty (0 bytes); send the image's bytes", "empty")
    fmt = image_format(data)
    if fmt is None:
        raise ApiError(
            422, f"{where}: not a JPEG or PNG image (declared {declared}); send the image file itself", "not_image"
        )
    size = image_size(data)
    if size is None:
        raise ApiError(422, f"{where}: {fmt.upper()} header unreadable (truncated or corrupt image)", "bad_image")
    w, h = size
    if w < 1 or h < 1 or w * h > max_pixels:
        raise ApiError(
            413,
            f"{where}: {w}x{h} pixels is over the limit of {max_pixels:,} (--max-pixels); send a smaller image",
            "too_large",
        )
    try:
        return decode_image(data)
    except BadImage as exc:
        raise ApiError(422, f"{where}: {exc}; send a complete JPEG or PNG", "bad_image") from None


def check_crop(crop: Crop | None, image: np.ndarray, where: str) -> None:
    """The box must lie inside the image it cuts."""
    if crop is None:
        return
    h, w = image.shape[:2]
    if crop.x + crop.w > w or crop.y + crop.h > h:
        raise ApiError(
            422,
            f"{where}: crop {crop.x},{crop.y},{crop.w},{crop.h} reaches outside the {w}x{h} image; "
            "give x,y,w,h inside it",
            "bad_crop",
        )
