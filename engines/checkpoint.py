"""Checkpoint files (``model.pt``): a plain dict of tensors and JSON-able metadata.

Saved so that ``torch.load(..., weights_only=True)`` reads it: no pickled classes, so a checkpoint from an
untrusted source cannot run code. A pickled checkpoint is refused with a clear message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engines.errors import UserError
from engines.meta import ModelMeta

FORMAT = "inspector-checkpoint-1"


def save_checkpoint(path: str | Path, state_dict: dict, meta: ModelMeta, **extra: Any) -> None:
    """Write state dict + metadata (as a JSON string) + optional plain extras (optimizer state, epoch)."""
    import torch

    payload = {"format": FORMAT, "meta_json": json.dumps(meta.to_dict()), "state_dict": state_dict, **extra}
    tmp = Path(str(path) + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> tuple[ModelMeta, dict, dict]:
    """-> (metadata, state dict, the whole payload). Every failure is a :class:`UserError`."""
    import pickle
    import re
    import zipfile

    import torch

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: checkpoint not found; train one with `inspector train --data DIR --out RUN_DIR`")
    if not zipfile.is_zipfile(p):
        raise UserError(f"{p}: not a readable PyTorch checkpoint (not a torch.save zip archive); train it again")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(exc))
        first = f"it names {found.group(1)}" if found else "unsupported content"
        raise UserError(
            f"{p}: refused, the checkpoint holds pickled objects that weights_only loading does not allow "
            f"({first[:120]}); re-save it as a plain state dict with `inspector train`"
        ) from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a corrupt zip
        raise UserError(f"{p}: not a readable PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "meta_json" not in payload:
        raise UserError(
            f"{p}: not an inspector checkpoint (expected format {FORMAT!r} with metadata); "
            "train it with `inspector train`"
        )
    try:
        meta = ModelMeta.from_dict(json.loads(payload["meta_json"]), where=str(p))
    except ValueError as exc:
        raise UserError(f"{p}: checkpoint metadata is not valid JSON ({exc})") from None
    return meta, payload["state_dict"], payload


def update_checkpoint_meta(path: str | Path, meta: ModelMeta) -> None:
    """Rewrite a checkpoint with new metadata (e.g. a threshold chosen for a target recall)."""
    import torch

    _, _, payload = load_checkpoint(path)
    payload["meta_json"] = json.dumps(meta.to_dict())
    tmp = Path(str(path) + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
