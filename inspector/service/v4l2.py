"""What a V4L2 camera offers, asked through its ioctls (VIDIOC_QUERYCAP, VIDIOC_ENUM_FMT,
VIDIOC_ENUM_FRAMESIZES) from Python: no v4l2-ctl or other package needed on the line computer.

The struct layouts are those of <linux/videodev2.h>; each struct's size is also encoded in its request number,
which the tests check. Only run against simulated driver answers so far, not a real camera.
"""

from __future__ import annotations

import errno
import fcntl
import struct
from collections.abc import Callable

V4L2_CAP_VIDEO_CAPTURE = 0x1
V4L2_BUF_TYPE_VIDEO_CAPTURE = 1
VIDIOC_QUERYCAP = 0x80685600  # _IOR('V', 0, struct v4l2_capability), 104 bytes
VIDIOC_ENUM_FMT = 0xC0405602  # _IOWR('V', 2, struct v4l2_fmtdesc), 64 bytes
VIDIOC_ENUM_FRAMESIZES = 0xC02C564A  # _IOWR('V', 74, struct v4l2_frmsizeenum), 44 bytes
_CAP = struct.Struct("=16s32s32sIII12x")
_FMTDESC = struct.Struct("=III32sII12x")
_FRMSIZE = struct.Struct("=III24s8x")


def fourcc_str(code: int) -> str:
    return "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip()


def v4l2_formats(fd: int, ioctl: Callable = fcntl.ioctl) -> tuple[str, dict[str, list[str]]]:
    """(card name, {fourcc: ['1280x720', ...]}) of a capture device through VIDIOC_QUERYCAP / ENUM_FMT /
    ENUM_FRAMESIZES. Raises OSError for a node that is not a V4L2 device; an empty dict for a non-capture node
    (UVC cameras also expose a metadata node)."""
    cap = _CAP.unpack(ioctl(fd, VIDIOC_QUERYCAP, bytes(_CAP.size)))
    card, device_caps = cap[1].split(b"\0")[0].decode(errors="replace"), cap[5]
    if not device_caps & V4L2_CAP_VIDEO_CAPTURE:
        return card, {}
    formats: dict[str, list[str]] = {}
    for i in range(64):
        try:
            out = ioctl(fd, VIDIOC_ENUM_FMT, _FMTDESC.pack(i, V4L2_BUF_TYPE_VIDEO_CAPTURE, 0, b"", 0, 0))
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                break  # end of the list
            raise
        pixfmt = _FMTDESC.unpack(out)[4]
        sizes = []
        for j in range(64):
            try:
                fs = _FRMSIZE.unpack(ioctl(fd, VIDIOC_ENUM_FRAMESIZES, _FRMSIZE.pack(j, pixfmt, 0, b"")))
            except OSError:
                break
            kind, u = fs[2], struct.unpack("=6I", fs[3])
            if kind == 1:  # discrete
                sizes.append(f"{u[0]}x{u[1]}")
            else:  # continuous / stepwise: min-max
                sizes.append(f"{u[0]}x{u[2]}..{u[1]}x{u[3]}")
                break
        formats[fourcc_str(pixfmt)] = sizes
    return card, formats
