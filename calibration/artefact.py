"""Calibration artefacts on disk: small YAML files, validated on load, written atomically.

Every artefact names its ``kind`` so a camera calibration given where an ROI is expected is refused, and
records the frame size it was made for so the runtime can refuse a calibration made for another resolution.
Errors are one-line :class:`UserError` messages naming the file, the field and what was expected.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ground.errors import UserError
from ground.yamlconf import line_of, read_yaml

M = TypeVar("M", bound="Artefact")


class Artefact(BaseModel):
    """Common header: what the file is, when it was made, for which frame size (w, h)."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="artefact type; checked on load")
    version: int = Field(1, description="file format version")
    created: str = Field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        description="UTC time the calibration was made",
    )
    frame_size: tuple[int, int] = Field(description="width, height in px of the frames it was made from")

    @field_validator("frame_size")
    @classmethod
    def _positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] <= 0 or v[1] <= 0:
            raise ValueError(f"expected a positive [width, height], got {list(v)}")
        return v


def _where(path: Path, loc: tuple, lines: dict[tuple, int]) -> str:
    """``path:line`` of the deepest key of ``loc`` in the file (``path`` alone when unknown)."""
    line = line_of(loc, lines)
    return f"{path}:{line}" if line else str(path)


def _describe(err: dict[str, Any], path: Path, lines: dict[tuple, int]) -> str:
    field = ".".join(str(x) for x in err["loc"]) or "(top level)"
    where = _where(path, tuple(err["loc"]), lines)
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown field '{field}'; remove it or recreate the file with `inspector calibrate`"
    if err["type"] == "missing":
        return f"{where}: missing field '{field}'; recreate the file with `inspector calibrate`"
    got = err.get("input")
    got_s = "a mapping" if isinstance(got, dict) else repr(got)
    return f"{where}: field '{field}': {err['msg']} (got {got_s[:80]})"


def load_artefact(model: type[M], path: str | Path) -> M:
    """Read and validate one artefact; every failure is a one-line :class:`UserError`."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: calibration file not found; make it with `inspector calibrate`")
    data, lines = read_yaml(p)  # unreadable or malformed: one line with the line number
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of calibration fields, got {type(data).__name__}")
    expected = model.model_fields["kind"].default
    if data.get("kind") != expected:
        raise UserError(
            f"{_where(p, ('kind',), lines)}: field 'kind': expected {expected!r}, got {data.get('kind')!r}; "
            "is this the right calibration file?"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
        raise UserError(_describe(errors[0], p, lines) + more) from None


def save_artefact(artefact: Artefact, path: str | Path, comment: str = "") -> Path:
    """Write as YAML (plain lists, no Python tags) via a temporary file, so a crash never leaves half a file."""
    p = Path(path)
    _check_not_foreign(p, artefact.kind)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = artefact.model_dump(mode="json")
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    text = head + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(p)
    return p


def _check_not_foreign(p: Path, kind: str) -> None:
    """Recalibrating overwrites the artefact of the same kind; any other existing file (the line's configuration,
    another artefact) is never overwritten."""
    if not p.exists():
        return
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        data = None
    if isinstance(data, dict) and data.get("kind") == kind:
        return
    what = f"a {data['kind']} artefact" if isinstance(data, dict) and "kind" in data else "not a calibration file"
    raise UserError(
        f"--out {p}: already exists and is {what}; it is not overwritten (only an earlier {kind} file is) - "
        "give --out another path"
    )


def check_frame_size(artefact: Artefact, frame_size: tuple[int, int] | None, path: str | Path, what: str) -> None:
    """Refuse an artefact made for another resolution: its pixels would mean something else."""
    if frame_size is None:
        return
    w, h = (int(v) for v in frame_size)
    aw, ah = artefact.frame_size
    if (w, h) != (aw, ah):
        raise UserError(
            f"{path}: {what} was made for {aw}x{ah} frames but the source gives {w}x{h}; "
            f"set source width/height to {aw}x{ah} or recalibrate at {w}x{h} with `inspector calibrate`"
        )
