"""YAML loading with line numbers, so a validation error can say file, line and field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ground.errors import UserError

M = TypeVar("M", bound=BaseModel)


def _lines(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map each key path (('gate', 'port'), ...) to its 1-based line in the file."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = key.value
            out[path + (k,)] = key.start_mark.line + 1
            _lines(value, path + (k,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[path + (i,)] = item.start_mark.line + 1
            _lines(item, path + (i,), out)
    return out


def read_yaml(path: str | Path) -> tuple[Any, dict[tuple, int]]:
    """-> (data, line map). Unreadable or malformed YAML is a one-line :class:`UserError` with the line."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise UserError(f"{p}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{p}: cannot read ({exc})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise UserError(f"{p}{line}: malformed YAML: {exc.problem or exc.context}; fix the syntax there") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{p}: malformed YAML: {exc}") from None
    return data, (_lines(node) if node is not None else {})


def line_of(loc: tuple, lines: dict[tuple, int]) -> int | None:
    """The line of the deepest key of ``loc`` that exists in the file (None: not known)."""
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


_SCALAR_TAGS = frozenset({"int", "float", "str", "bool", "none", "bytes"})


def _is_union_tag(part: object) -> bool:
    """pydantic names the member of a union that failed (``int``, ``literal['otsu']``, ``function-after[...]``)
    as a last element of the error's location: not a key of the file, an internal."""
    return isinstance(part, str) and (part in _SCALAR_TAGS or "[" in part)


def _merge_unions(errors: list[dict]) -> list[dict]:
    """One error per field: the failures of each member of a union (``int | 'otsu'``) become one error whose
    message lists what the field accepts ("should be a valid integer or 'otsu'")."""
    out: list[dict] = []
    merged: dict[tuple, dict] = {}
    for err in errors:
        loc = tuple(err["loc"])
        if not loc or not _is_union_tag(loc[-1]) or err["type"] in ("missing", "extra_forbidden"):
            out.append(err)
            continue
        base = loc[:-1]
        want = str(err["msg"]).removeprefix("Value error, ").removeprefix("Input should be ").split(", ")[0]
        if base in merged:
            if want not in merged[base]["_wants"]:
                merged[base]["_wants"].append(want)
            continue
        merged[base] = entry = {**err, "loc": base, "type": "union", "_wants": [want]}
        out.append(entry)
    for entry in merged.values():
        entry["msg"] = "should be " + " or ".join(entry.pop("_wants"))
    return out


def _kind(value: object) -> str:
    if value is None:
        return "nothing (an empty section)"
    return {list: "a list", str: "text", int: "a number", float: "a number", bool: "true/false"}.get(
        type(value), type(value).__name__
    )


def _describe(err: dict, lines: dict[tuple, int], path: Path) -> str:
    loc = tuple(err["loc"])
    kind = err["type"]
    got = err.get("input")
    msg = str(err["msg"]).removeprefix("Value error, ")
    if isinstance(got, dict) and kind not in ("extra_forbidden", "missing"):
        # a whole section failed a cross-field check: point at the first of its keys the message names
        named = [(m.start(), k) for k in got if isinstance(k, str) and (m := re.search(rf"\b{re.escape(k)}\b", msg))]
        if named:
            loc = (*loc, min(named)[1])
    line = line_of(loc, lines)
    field = ".".join(str(x) for x in loc) or "(top level)"
    where = f"{path}:{line}" if line else str(path)
    if kind == "extra_forbidden":
        return f"{where}: unknown key '{field}'; remove it or check its spelling"
    if kind == "missing":
        return f"{where}: missing required field '{field}'"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return (
            f"{where}: field '{field}': expected a section of keys (one 'key: value' per line, indented under "
            f"'{loc[-1] if loc else field}:'), got {_kind(got)}; see configs/default.yaml"
        )
    if isinstance(got, dict):
        return f"{where}: field '{field}': {msg}"
    return f"{where}: field '{field}': {msg} (got {repr(got)[:80]})"


def _validate(model: type[M], path: str | Path) -> tuple[M | None, list[str]]:
    """-> (the validated model, []) or (None, one line per error naming file, line, field, expectation)."""
    p = Path(path)
    data, lines = read_yaml(p)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return None, [f"{p}:1: expected a mapping of keys at the top level, got {type(data).__name__}"]
    try:
        return model.model_validate(data, context={"base_dir": p.parent}), []
    except ValidationError as exc:
        return None, [_describe(e, lines, p) for e in _merge_unions(exc.errors())]


def load_model(model: type[M], path: str | Path) -> M:
    """Read YAML at ``path`` and validate it as ``model``; the first error (and how many more) as a UserError."""
    value, errors = _validate(model, path)
    if errors:
        more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
        raise UserError(errors[0] + more)
    return value


def all_errors(model: type[M], path: str | Path) -> list[str]:
    """Every validation error, one line each (for `inspector check-config`)."""
    return _validate(model, path)[1]
