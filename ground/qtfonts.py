"""OpenCV's Qt build looks for fonts in ``cv2/qt/fonts``, which the wheel does not ship, and says so on every
window ("QFontDatabase: Cannot find font directory"). ``import cv2`` itself sets QT_QPA_FONTDIR to that folder,
so the fix runs after the import and before the first window: a system font folder replaces OpenCV's missing
one. Only that value is replaced (a folder someone set on purpose is left, and Qt still says when it is wrong),
and stderr is never filtered. Standard library only: every layer that opens a window can use it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: system font folders, in order of preference (Debian/Ubuntu, Arch, Fedora, any)
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/TTF", "/usr/share/fonts/dejavu", "/usr/share/fonts")

FONT_SUFFIXES = (".ttf", ".ttc", ".otf", ".pfa", ".pfb")


def quiet_qt_fonts() -> str | None:
    """Point Qt at a system font folder (QT_QPA_FONTDIR) when it is unset or is OpenCV's own missing folder, so
    OpenCV's Qt build does not print "QFontDatabase: Cannot find font directory .../cv2/qt/fonts" on every run.
    Call it after ``import cv2`` and before the first window. -> the folder chosen (None: left as it was)."""
    current = os.environ.get("QT_QPA_FONTDIR")
    if current and (current != _opencv_font_dir() or os.path.isdir(current)):
        return None
    for d in FONT_DIRS:
        try:
            found = any(f.suffix.lower() in FONT_SUFFIXES for f in Path(d).iterdir())
        except OSError:  # absent or unreadable
            continue
        if found:  # Qt's basic font database reads this folder only, not its sub-folders
            os.environ["QT_QPA_FONTDIR"] = d
            return d
    return None


def _opencv_font_dir() -> str | None:
    """The folder ``import cv2`` points Qt at (cv2/config-3.py), or None when cv2 is not loaded."""
    cv2 = sys.modules.get("cv2")
    f = getattr(cv2, "__file__", None)
    return os.path.join(os.path.dirname(os.path.abspath(f)), "qt", "fonts") if f else None
