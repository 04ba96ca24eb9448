"""Datasets: find labelled images, decode them once, and cache the model images in memory.

Three layouts name the class of an image:

- ``folders``: ``DIR/<class>/<image>`` (binary or multi-class);
- ``prefix``: the class is the file-name prefix, ``DIR/crazing_12.jpg`` (NEU-DET; also ``DIR/IMAGES/...``),
  read in place, nothing copied;
- ``manifest``: a CSV file ``path,label`` (paths relative to the CSV's folder).

Bad files never stop a run: a corrupt or truncated image, or a file that is not an image, is skipped with a
log line and counted. A dataset that cannot train (no images, an empty class folder, one class only) is one
:class:`UserError`.
"""

from __future__ import annotations

import csv
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engines.decode import BadImage, decode_image
from engines.errors import UserError
from engines.meta import ModelMeta, default_ok_class
from engines.preprocess import model_views

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
LAYOUTS = ("auto", "folders", "prefix", "manifest")
HASH_SIZE = 16  # 256-bit pHash: the 64-bit default calls most castings duplicates (they all look alike)
_PREFIX_RE = re.compile(r"^(?P<cls>.+?)[_\-\s]?\(?\d+\)?$")


@dataclass
class Item:
    """One labelled file. ``key`` is its path relative to the dataset root: how splits name it."""

    key: str
    path: Path
    label: str


@dataclass
class DatasetIndex:
    root: Path
    layout: str
    classes: list[str]
    ok_class: str | None
    items: list[Item]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        c = Counter(it.label for it in self.items)
        return {k: c.get(k, 0) for k in self.classes}

    def summary(self) -> dict:
        return {
            "root": str(self.root),
            "layout": self.layout,
            "classes": self.classes,
            "ok_class": self.ok_class,
            "counts": self.counts(),
            "n_images": len(self.items),
            "n_skipped": len(self.skipped),
        }


def _is_candidate(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".")


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_candidate(p))


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in _files(folder))


def prefix_class(name: str) -> str | None:
    """``rolled-in_scale_12.jpg`` -> ``rolled-in_scale``; None when the stem has no numbered suffix."""
    m = _PREFIX_RE.match(Path(name).stem)
    return m.group("cls") if m else None


def _detect_layout(root: Path) -> tuple[str, Path]:
    if root.is_file() and root.suffix.lower() == ".csv":
        return "manifest", root
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    with_images = [d for d in subdirs if _has_images(d)]
    if len(with_images) >= 2:
        return "folders", root
    if _has_images(root):
        return "prefix", root
    if len(with_images) == 1 and _prefix_named(with_images[0]):
        return "prefix", with_images[0]  # NEU-DET: DIR/IMAGES beside DIR/ANNOTATIONS
    return "folders", root  # errors (one class, empty folders) are reported by the caller


def _prefix_named(folder: Path) -> bool:
    """Files named <class>_<n> with at least two different classes."""
    return len({prefix_class(p.name) for p in _files(folder)} - {None}) >= 2


def index_dataset(
    data: str | Path, layout: str = "auto", ok_class: str | None = None, manifest: str | Path | None = None
) -> DatasetIndex:
    """List the labelled files of a dataset (nothing decoded yet)."""
    root = Path(data)
    if manifest is not None:
        layout, root = "manifest", Path(manifest)
    if not root.exists():
        raise UserError(f"{root}: dataset not found; give a folder of class sub-folders (--data DIR)")
    if layout not in LAYOUTS:
        raise UserError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if layout == "auto":
        layout, root = _detect_layout(root)
    elif layout == "prefix" and root.is_dir() and not _has_images(root):
        subs = [d for d in sorted(root.iterdir()) if d.is_dir() and _has_images(d)]
        root = subs[0] if len(subs) == 1 else root
    items, skipped, empty = _list_items(root, layout)
    if empty:
        raise UserError(f"{root}: class folder(s) {', '.join(empty)} hold no files; add images or remove the folder")
    classes = sorted({it.label for it in items})
    if not items:
        raise UserError(
            f"{root}: no images found (layout {layout}); expected DIR/<class>/<image> folders, "
            "file names <class>_<n>.jpg (--layout prefix) or a manifest CSV path,label"
        )
    if len(classes) < 2:
        raise UserError(
            f"{root}: only one class ({classes[0]!r}) found; training needs at least two "
            "(e.g. ok_front/ and def_front/ sub-folders)"
        )
    if ok_class is None:
        ok_class = default_ok_class(classes)
    elif ok_class not in classes:
        raise UserError(f"--ok-class {ok_class!r} is not one of the dataset's classes {classes}")
    base = root.parent if layout == "manifest" else root
    return DatasetIndex(base, layout, classes, ok_class, items, skipped)


def _list_items(root: Path, layout: str) -> tuple[list[Item], list[tuple[str, str]], list[str]]:
    items: list[Item] = []
    skipped: list[tuple[str, str]] = []
    empty: list[str] = []
    if layout == "folders":
        if not root.is_dir():
            raise UserError(f"{root}: not a folder; give a folder of class sub-folders")
        for d in sorted(x for x in root.iterdir() if x.is_dir() and not x.name.startswith(".")):
            files = _files(d)
            if not files:
                empty.append(d.name)
            items += [Item(f"{d.name}/{f.name}", f, d.name) for f in files]
    elif layout == "prefix":
        for f in _files(root):
            cls = prefix_class(f.name)
            if cls is None or f.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append((f.name, "no <class>_<n> file name"))
                log.warning("skipped %s: not named <class>_<n>.<image suffix>", f)
                continue
            items.append(Item(f.name, f, cls))
    elif layout == "manifest":
        items = _read_manifest(root)
    if skipped:
        log.warning("%d file(s) skipped in %s", len(skipped), root)
    return items, skipped, empty


def _read_manifest(csv_path: Path) -> list[Item]:
    base = csv_path.parent
    items: list[Item] = []
    try:
        with csv_path.open(newline="") as fh:
            for n, row in enumerate(csv.reader(fh), 1):
                if not row or row[0].startswith("#") or (n == 1 and row[0].strip().lower() == "path"):
                    continue
                if len(row) < 2 or not row[1].strip():
                    raise UserError(f"{csv_path}:{n}: expected 'path,label', got {','.join(row)!r}")
                rel = row[0].strip()
                items.append(Item(rel, base / rel, row[1].strip()))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{csv_path}: unreadable manifest ({exc})") from None
    return items


# --- decoding -------------------------------------------------------------------------------------------


def read_image(path: Path) -> np.ndarray:
    """Decode an image file (BGR or gray uint8); :class:`BadImage` for non-images and truncated files.

    The bytes go through :func:`engines.decode.decode_image`, the decoder the classify API uses too.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadImage(f"unreadable ({exc.strerror})") from None
    return decode_image(data)


def is_gray_content(img: np.ndarray, tol: float = 10.0) -> bool:
    """True for single-channel images and colour images whose channels agree on average (gray stored as
    RGB, or sensor noise only): colour then carries no information and one channel trains faster."""
    if img.ndim == 2 or img.shape[2] == 1:
        return True
    small = img[::4, ::4].astype(np.int16)
    return (
        float(np.abs(small[:, :, 0] - small[:, :, 1]).mean()) <= tol
        and float(np.abs(small[:, :, 1] - small[:, :, 2]).mean()) <= tol
    )


@dataclass
class LoadedData:
    """Decoded dataset: per item its model view(s) (uint8 S x S x C), label index and perceptual hash.

    An item has one view, or one per tile when the model tiles long images (``meta.tile_aspect``):
    ``images[first[k]:first[k + 1]]`` are item k's views.
    """

    index: DatasetIndex
    items: list[Item]
    images: np.ndarray  # (T, S, S, C) uint8, in the model's colour: every view of every item, in item order
    labels: np.ndarray  # (N,) int64 index into index.classes
    hashes: np.ndarray  # (N, 8, W) uint64: pHash of the image under each of its 8 rotations/flips
    channels: int
    skipped: list[tuple[str, str]]
    first: np.ndarray | None = None  # (N + 1,) offsets of each item's views; None: one view per item
    sizes: np.ndarray | None = None  # (N, 2) decoded (height, width) per item
    smalls: np.ndarray | None = None  # (N, 64, 64) float32 gray thumbnails for the label-conflict check

    @property
    def tiled(self) -> bool:
        return self.first is not None and len(self.images) != len(self.items)

    def subset(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(views, labels) of items ``idx``; only for one view per item (see :meth:`views`)."""
        if self.tiled:
            raise ValueError("subset() on tiled data; use views()")
        return self.images[idx], self.labels[idx]

    def views(self, idx: np.ndarray) -> tuple[np.ndarray, list[int], np.ndarray]:
        """(every view of items ``idx``, views per item, labels of the items)."""
        idx = np.asarray(idx, dtype=np.int64)
        if not self.tiled:
            return self.images[idx], [1] * len(idx), self.labels[idx]
        assert self.first is not None
        parts = [np.arange(self.first[k], self.first[k + 1]) for k in idx]
        counts = [len(p) for p in parts]
        sel = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return self.images[sel], counts, self.labels[idx]


_HASH_CACHE: dict[tuple[str, int, int], np.ndarray] = {}  # (path, size, mtime_ns) -> pHash: candidates re-decode


def load_images(
    index: DatasetIndex,
    input_size: int,
    channels: int | None = None,
    progress: Callable[[], object] | None = None,
    fit: str = "stretch",
    tile_aspect: float = 0.0,
) -> LoadedData:
    """Decode every file once: the model view(s) (via THE preprocessing) and its pHash; skip bad files.

    ``channels`` None chooses from the data: 1 when every image is gray content, else 3.
    """
    from training.conflicts import small_gray

    kept: list[Item] = []
    views: list[list[np.ndarray]] = []
    hashes: list[np.ndarray] = []
    sizes: list[tuple[int, int]] = []
    smalls: list[np.ndarray] = []
    skipped = list(index.skipped)
    all_gray = True
    metas = {c: _probe_meta(index, input_size, c, fit, tile_aspect) for c in (1, 3)}
    for it in index.items:
        try:
            img = read_image(it.path)
        except BadImage as exc:
            skipped.append((it.key, str(exc)))
            log.warning("skipped %s: %s", it.path, exc)
            if progress:
                progress()
            continue
        gray = is_gray_content(img)
        all_gray &= gray
        c = channels or (1 if gray else 3)
        views.append(model_views(img, metas[c]))
        st = it.path.stat()
        key = (str(it.path), st.st_size, st.st_mtime_ns)
        if key not in _HASH_CACHE:
            _HASH_CACHE[key] = dihedral_phash(img)
        hashes.append(_HASH_CACHE[key])
        sizes.append(img.shape[:2])
        smalls.append(small_gray(img))
        kept.append(it)
        if progress:
            progress()
    n_bad = len(skipped) - len(index.skipped)
    if n_bad:
        log.warning("%d of %d file(s) skipped as unreadable, truncated or not images", n_bad, len(index.items))
    chosen = channels or (1 if all_gray else 3)
    flat = [im if im.shape[2] == chosen else np.repeat(im, 3, axis=2) for vs in views for im in vs]
    classes_left = {it.label for it in kept}
    if not kept:
        raise UserError(f"{index.root}: none of the {len(index.items)} file(s) is a readable image")
    if len(classes_left) < 2:
        raise UserError(
            f"{index.root}: after skipping unreadable files only class {sorted(classes_left)} has images; "
            "training needs at least two classes"
        )
    lookup = {c: i for i, c in enumerate(index.classes)}
    return LoadedData(
        index=index,
        items=kept,
        images=np.stack(flat),
        labels=np.array([lookup[it.label] for it in kept], dtype=np.int64),
        hashes=np.stack(hashes),
        channels=chosen,
        skipped=skipped,
        first=np.concatenate([[0], np.cumsum([len(v) for v in views])]).astype(np.int64),
        sizes=np.array(sizes, dtype=np.int64),
        smalls=np.stack(smalls),
    )


def dihedral_phash(image: np.ndarray, hash_size: int = HASH_SIZE) -> np.ndarray:
    """pHash (imagehash) of the image under its 8 right-angle rotations and flips: (8, bits/64) uint64.

    The casting set was augmented with rotations and flips, so a copy can be a turned version of another.
    Computed on the decoded file (BGR or gray), not the model image, so the split does not depend on
    the model's input size.
    """
    import imagehash
    from PIL import Image

    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    side = hash_size * 4
    gray = cv2.resize(gray, (side, side), interpolation=cv2.INTER_AREA)
    out = []
    for flip in (False, True):
        base = gray[:, ::-1] if flip else gray
        for k in range(4):
            variant = np.ascontiguousarray(np.rot90(base, k))
            bits = imagehash.phash(Image.fromarray(variant), hash_size=hash_size).hash.ravel()
            out.append(np.frombuffer(np.packbits(bits).tobytes(), dtype=">u8").astype(np.uint64))
    return np.stack(out)


def _probe_meta(
    index: DatasetIndex, input_size: int, channels: int, fit: str = "stretch", tile_aspect: float = 0.0
) -> ModelMeta:
    """A metadata record used only for its size/colour/fit/tiles, so decoding uses THE preprocessing."""
    return ModelMeta(
        "seedcnn",
        index.classes,
        index.ok_class,
        input_size,
        channels,
        [0.5] * channels,
        [1.0] * channels,
        fit=fit,
        tile_aspect=tile_aspect,
    )
