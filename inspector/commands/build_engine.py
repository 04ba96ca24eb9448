"""`inspector build-engine`: checkpoint -> checked ONNX (+ TensorRT engine where TensorRT and a GPU exist).

The ONNX export is always verified against PyTorch on real images: an FP32 export that changes a single
verdict exits non-zero. The TensorRT engine is built on the machine that runs it (engines are tied to the
TensorRT version and GPU), so on a PC without TensorRT this command stops after the ONNX, saying so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inspector.commands.argtypes import count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build-engine", help="export a checkpoint to ONNX, verify it, and build a TensorRT engine where possible"
    )
    p.add_argument("--checkpoint", required=True, help="trained model (.pt)")
    p.add_argument("--out", required=True, help="output folder for the .onnx, .engine and their .json sidecars")
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default="fp16",
        help="TensorRT engine precision (the ONNX is always FP32); default fp16",
    )
    p.add_argument("--calib-data", help="INT8: folder of representative images (class folders or flat)")
    p.add_argument("--calib-images", type=count, default=512, help="INT8: at most this many calibration images")
    p.add_argument("--batch", type=int, default=8, help="largest batch the TensorRT engine accepts (default 8)")
    p.add_argument("--workspace", type=int, default=1024, help="TensorRT builder workspace in MB (default 1024)")
    p.add_argument("--images", help="check images (class folders); default: the checkpoint's validation split")
    p.add_argument("--data-root", help="the data set folder on this machine (default: recorded at training)")
    p.add_argument("--check-images", type=count, default=256, help="compare on at most this many images")
    p.add_argument("--opset", type=count, default=18, help="ONNX opset (default 18; 17 for TensorRT 8.6 targets)")
    p.add_argument("--onnx-only", action="store_true", help="stop after the ONNX even where TensorRT exists")
    p.set_defaults(func=run_cleaning_up)


def run_cleaning_up(args: argparse.Namespace) -> int:
    """:func:`run`; a failed run removes the --out folder it created and left empty."""
    from ground.files import output_folder

    with output_folder(args.out):
        return run(args)


def run(args: argparse.Namespace) -> int:
    from engines.base import load_engine
    from engines.export import export_onnx
    from engines.verify import check_images, compare_engines
    from ground.errors import UserError

    if args.batch < 1 or args.workspace < 1:
        raise UserError("--batch and --workspace must be positive")
    if args.precision == "int8" and not args.calib_data:
        raise UserError("--precision int8 needs --calib-data DIR: a folder of a few hundred representative images")
    ckpt, out = Path(args.checkpoint), Path(args.out)
    onnx_path = export_onnx(ckpt, out / f"{ckpt.stem}.onnx", opset=args.opset)
    print(f"exported {onnx_path} (+ {onnx_path.name}.json), ONNX checker passed")

    ref = load_engine(ckpt, device="cpu", fp16=False)
    ort = load_engine(onnx_path, providers=["CPUExecutionProvider"])
    images = check_images(ref.meta, args.images, "val", args.check_images, args.data_root)
    cmp = compare_engines(ref, ort, images)
    print("\n".join(cmp.lines("PyTorch", "ONNX Runtime")))
    if cmp.flips:
        print(f"error: the FP32 ONNX export changes {cmp.flips} verdict(s); do not deploy it", file=sys.stderr)
        return 1

    if args.onnx_only:
        return 0
    from engines.trt_build import probe_tensorrt

    trt_mods, why = probe_tensorrt()
    if trt_mods is None:
        print(
            f"TensorRT engine not built here: {why}. Build the .engine on the target (the Jetson or GPU PC that "
            f"runs the line) with the same command; the .onnx above runs anywhere with ONNX Runtime."
        )
        return 0
    return _build_tensorrt(args, onnx_path, ort, images, trt_mods)


def _build_tensorrt(args: argparse.Namespace, onnx_path: Path, ref, images, trt_mods) -> int:
    from engines.base import load_engine
    from engines.imagesets import folder_images
    from engines.trt_build import build_engine
    from engines.verify import compare_engines

    calib = folder_images(args.calib_data, ref.meta.classes, limit=args.calib_images) if args.calib_data else None
    engine_path = build_engine(
        onnx_path,
        Path(args.out),
        precision=args.precision,
        max_batch=args.batch,
        workspace_mb=args.workspace,
        calib_images=calib,
        modules=trt_mods,
    )
    print(f"built {engine_path} (+ {engine_path.name}.json)")
    with load_engine(engine_path) as trt_engine:
        cmp = compare_engines(ref, trt_engine, images, batch_size=args.batch)
    print("\n".join(cmp.lines("FP32 (ONNX Runtime)", f"TensorRT {args.precision.upper()}")))
    if args.precision == "fp32" and cmp.flips:
        print(f"error: the FP32 engine changes {cmp.flips} verdict(s); do not deploy it", file=sys.stderr)
        return 1
    return 0
