#!/usr/bin/env python3
"""Seconds per training step of EfficientNet-Lite0 when the stages from ``--from-stage`` on are tuned.

The frozen part (stem and the stages before) runs once, as the recipe's cached trunk does; one step is the
forward and backward pass of the tuned stages, conv_head and the head on a batch of 32, and an AdamW update.
Random inputs: the cost does not depend on the pixels. Say which stages an epoch on this CPU can afford.

    .venv/bin/python bench/tune_step_cost.py --sizes 224,288 --from-stages 0,2,3,4,5,6
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="224,288")
    ap.add_argument("--from-stages", default="0,2,3,4,5,6")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from engines.lite0 import build_lite0, packaged_weights

    torch.set_num_threads(args.threads)
    net = build_lite0(3, 1, packaged_weights())
    blocks = list(net.blocks)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for st in (int(s) for s in args.from_stages.split(",")):
            x = torch.randn(args.batch, 3, size, size).contiguous(memory_format=torch.channels_last)
            net.eval()
            with torch.no_grad():
                f = net.bn1(net.conv_stem(x))
                for b in blocks[:st]:
                    f = b(f)
            f = f.contiguous(memory_format=torch.channels_last)
            net.train()
            mods = [*blocks[st:], net.conv_head, net.bn2, net.get_classifier()]
            opt = torch.optim.AdamW([p for m in mods for p in m.parameters()], 1e-4)
            times = []
            for _ in range(args.steps + 1):
                t = time.perf_counter()
                g = f
                for b in blocks[st:]:
                    g = b(g)
                net.forward_head(net.bn2(net.conv_head(g))).sum().backward()
                opt.step()
                opt.zero_grad()
                times.append(time.perf_counter() - t)
            sec = sorted(times[1:])[len(times[1:]) // 2]
            rows.append({"size": size, "from_stage": st, "input": list(f.shape[1:]), "seconds_per_step": round(sec, 3)})
            print(json.dumps(rows[-1]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
