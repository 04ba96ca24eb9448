"""Checkpoint -> ONNX with a dynamic batch axis, checked, with its metadata sidecar beside it.

The exported graph ends in the activation (probabilities out), like every backend. The sidecar records the
ONNX file's SHA-256 so a TensorRT engine built from it can say which export it came from.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from engines.errors import UserError
from engines.meta import write_sidecar
from ground.files import file_sha256

if TYPE_CHECKING:
    import onnx
    import torch
    from torch import nn

log = logging.getLogger(__name__)

OPSET = 18  # the dynamo exporter's native opset; TensorRT 10 and ONNX Runtime >= 1.14 parse it
INPUT_NAME = "input"
OUTPUT_NAME = "probs"
BATCH_DIM = "batch"


def _name_batch_axis(model: onnx.ModelProto) -> None:
    """Call the dynamic first axis ``batch`` on every input and output (the dynamo exporter says ``s31``)."""
    for value in [*model.graph.input, *model.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        if not dim.HasField("dim_value") or dim.dim_value == 0:
            dim.dim_param = BATCH_DIM


def _export(
    net: nn.Module, example: torch.Tensor, out: Path, opset: int, outputs: tuple[str, ...] = (OUTPUT_NAME,)
) -> str:
    """torch.export-based exporter first; the TorchScript one if that fails (older torch, odd layers)."""
    import torch

    names = dict(input_names=[INPUT_NAME], output_names=list(outputs))
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress; keep the CLI quiet
            torch.onnx.export(
                net,
                (example,),
                str(out),
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
                dynamic_shapes=({0: torch.export.Dim.DYNAMIC},),
                **names,
            )
        return "dynamo"
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; fall back, say why in the log
        log.warning("dynamo ONNX export failed (%s); using the TorchScript exporter", str(exc).splitlines()[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (example,),
            str(out),
            opset_version=min(opset, 17),
            dynamo=False,
            dynamic_axes={k: {0: BATCH_DIM} for k in (INPUT_NAME, *outputs)},
            **names,
        )
    return "torchscript"


def check_onnx(path: str | Path) -> None:
    """The ONNX checker (full shape inference); a failure is a :class:`UserError` naming the file."""
    import onnx

    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises its own and protobuf errors
        raise UserError(f"{path}: ONNX check failed ({str(exc).splitlines()[0][:160]}); re-export it") from None


def export_onnx(checkpoint: str | Path, out: str | Path, opset: int = OPSET) -> Path:
    """Export ``checkpoint`` to ``out`` (a .onnx path), check it and write ``out.json``. Returns ``out``."""
    import onnx
    import torch

    from engines.archs import build_network, inference_network, load_weights
    from engines.checkpoint import load_checkpoint

    out = Path(out)
    if out.suffix != ".onnx":
        raise UserError(f"{out}: the ONNX output file must end in .onnx")
    meta, state, _ = load_checkpoint(checkpoint)
    if meta.kind == "anomaly":  # two outputs (score, map) and a parity check of its own
        from engines.anomaly_export import export_anomaly_onnx

        return export_anomaly_onnx(checkpoint, out, opset=opset)
    net = build_network(meta)
    load_weights(net, state, meta, checkpoint)
    net = inference_network(net, meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, meta.channels, meta.input_size, meta.input_size)  # 2: keeps the batch axis free
    exporter = _export(net, example, out, opset)
    model = onnx.load(str(out))
    _name_batch_axis(model)
    onnx.save(model, str(out))
    check_onnx(out)
    opset_used = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    write_sidecar(
        out,
        meta,
        source=Path(checkpoint).name,
        source_sha256=file_sha256(checkpoint),
        onnx_sha256=file_sha256(out),
        opset=opset_used,
        exporter=exporter,
        torch_version=torch.__version__,
    )
    log.info("exported %s -> %s (%s exporter, opset %d)", checkpoint, out, exporter, opset_used)
    return out
