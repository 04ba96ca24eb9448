"""Copy a small demo sample (unmodified files) from a dataset's held-out TEST split.

    python -m training.sample --data ../shared/data/casting/train --out demo --per-class 20

The split is the one `inspector train` makes with the same --seed and --dup-distance, so the sample never
holds an image the shipped model was trained or tuned on.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import numpy as np

from training.data import index_dataset, load_images
from training.split import group_split

log = logging.getLogger(__name__)


def export_sample(
    data: Path, out: Path, per_class: int = 20, seed: int = 0, dup_distance: int = 20, split: str = "test"
) -> dict[str, list[str]]:
    """Copy ``per_class`` files of each class from ``split`` into ``out/<class>/``; returns the keys."""
    loaded = load_images(index_dataset(data), 32)
    chosen = group_split(loaded.labels, loaded.hashes, seed=seed, max_distance=dup_distance).indices(split)
    rng = np.random.default_rng(seed)
    picked: dict[str, list[str]] = {}
    for ci, cls in enumerate(loaded.index.classes):
        idx = [i for i in chosen if loaded.labels[i] == ci]
        take = sorted(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
        (out / cls).mkdir(parents=True, exist_ok=True)
        for i in take:
            item = loaded.items[i]
            shutil.copyfile(item.path, out / cls / item.path.name)  # byte-for-byte: the licence needs it
        picked[cls] = [loaded.items[i].key for i in take]
    return picked


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dup-distance", type=int, default=20)
    a = p.parse_args()
    for cls, keys in export_sample(a.data, a.out, a.per_class, a.seed, a.dup_distance).items():
        print(f"{cls}: {len(keys)} files")


if __name__ == "__main__":
    main()
