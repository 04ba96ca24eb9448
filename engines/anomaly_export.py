"""Anomaly checkpoint -> ONNX: the memory bank as a constant, distances by MatMul + TopK, two outputs.

Outputs ``probs`` (N, 1) and ``anomaly_map`` (N, 1, S, S) with a dynamic batch axis. After export the graph is
run by ONNX Runtime beside the torch network on the same images and the largest score and map differences
and verdict flips are recorded in the sidecar; a flip or a score difference above ``MAX_SCORE_DIFF`` refuses
the export.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engines.errors import UserError
from engines.export import INPUT_NAME, OPSET, OUTPUT_NAME, _export, _name_batch_axis, check_onnx, file_sha256
from engines.meta import ModelMeta, write_sidecar

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

MAP_NAME = "anomaly_map"
MAX_SCORE_DIFF = 1e-3


def parity(net: nn.Module, onnx_path: Path, x: np.ndarray, threshold: float) -> dict:
    """torch vs ONNX Runtime (CPU, one thread) on the batch ``x``: largest differences and verdict flips."""
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
    s_ort, m_ort = [], []
    for a in range(0, len(x), 8):
        s, mp = sess.run(None, {INPUT_NAME: x[a : a + 8]})
        s_ort.append(s)
        m_ort.append(mp)
    with torch.inference_mode():
        s_t, m_t = net(torch.from_numpy(x))
    s_t, m_t = s_t.numpy(), m_t.numpy()
    s_o, m_o = np.concatenate(s_ort), np.concatenate(m_ort)
    if s_o.shape != s_t.shape or m_o.shape != m_t.shape:
        raise UserError(
            f"{onnx_path}: ONNX outputs {s_o.shape}, {m_o.shape} differ from torch's {s_t.shape}, "
            f"{m_t.shape}; re-export"
        )
    return {
        "n": len(x),
        "max_score_diff": float(np.abs(s_o - s_t).max()),
        "max_map_diff": float(np.abs(m_o - m_t).max()),
        "flips": int(((s_o >= threshold) != (s_t >= threshold)).sum()),
    }


def export_anomaly_onnx(
    checkpoint: str | Path,
    out: str | Path,
    *,
    net: nn.Module | None = None,
    meta: ModelMeta | None = None,
    check_images: np.ndarray | None = None,
    opset: int = OPSET,
) -> Path:
    """Export an anomaly checkpoint to ``out`` (.onnx), check the graph and its parity, write ``out.json``.

    ``check_images``: uint8 model images (N, S, S, 3) for the parity check; None uses 8 random images.
    """
    import onnx
    import torch

    from engines.anomaly import build_anomaly_network
    from engines.checkpoint import load_checkpoint
    from engines.preprocess import normalize

    out = Path(out)
    if out.suffix != ".onnx":
        raise UserError(f"{out}: the ONNX output file must end in .onnx")
    if net is None or meta is None:
        meta, state, _ = load_checkpoint(checkpoint)
        net = build_anomaly_network(meta, state)
    net = net.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 3, meta.input_size, meta.input_size)
    exporter = _export(net, example, out, opset, outputs=(OUTPUT_NAME, MAP_NAME))
    model = onnx.load(str(out))
    _name_batch_axis(model)
    onnx.save(model, str(out))
    check_onnx(out)
    ops = {n.op_type for n in model.graph.node}
    if not {"MatMul", "TopK"} <= ops:
        log.warning("%s: expected MatMul and TopK in the graph, found %s", out, sorted(ops))
    if check_images is None or len(check_images) == 0:
        rng = np.random.default_rng(0)
        check_images = rng.integers(0, 256, (8, meta.input_size, meta.input_size, 3), dtype=np.uint8)
        source = "random images"
    else:
        source = "held-out good images"
    x = normalize(np.ascontiguousarray(check_images), meta)
    par = {**parity(net, out, x, meta.threshold), "images": source}
    if par["flips"] or par["max_score_diff"] > MAX_SCORE_DIFF:
        raise UserError(
            f"{out}: ONNX Runtime disagrees with torch (score difference {par['max_score_diff']:.2e}, "
            f"{par['flips']} verdict flips); the export is not usable"
        )
    meta.extra["parity"] = par
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
        outputs=[OUTPUT_NAME, MAP_NAME],
    )
    log.info("exported %s -> %s (%s exporter, opset %d)", checkpoint, out, exporter, opset_used)
    return out
