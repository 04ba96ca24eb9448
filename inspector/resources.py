"""Where the shipped files are: the default model (`models/`) and the demo sample (`demo/`).

One resolver, so that `inspector demo` and the default `model.path` work from a checkout, an editable install
and a plain `pip install .` alike. A checkout has them at its root; an installed copy has them under the
install's data folder (``<prefix>/share/inspector/``, setup.cfg's ``data_files``).
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

#: the checkout the package was imported from (holds models/ and demo/ when it is a checkout)
CHECKOUT = Path(__file__).resolve().parents[1]


def data_roots() -> list[Path]:
    """Folders that may hold models/ and demo/, in the order they are tried: the checkout, then the install."""
    roots = [CHECKOUT]
    for base in (sysconfig.get_path("data"), sys.prefix):
        cand = Path(base) / "share" / "inspector"
        if cand not in roots:
            roots.append(cand)
    return roots


def shipped(relative: str | Path) -> Path:
    """The first existing ``root / relative`` over :func:`data_roots`; the checkout's path when none exists."""
    for root in data_roots():
        cand = root / relative
        if cand.exists():
            return cand
    return CHECKOUT / relative


def resolve_model(path: str | Path) -> Path:
    """As given (or relative to the cwd); a relative path not found there is tried against the shipped files."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    alt = shipped(p)
    return alt if alt.exists() else p


def demo_dir() -> Path:
    """The bundled demo sample (class folders ok_front/, def_front/)."""
    return shipped("demo")
