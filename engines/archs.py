"""Network definitions, built from metadata. Imports torch: only the PyTorch backend and training use it.

Every network here returns logits; :func:`inference_network` appends the activation so exported files and
all backends return probabilities (see :mod:`engines.meta` for the output convention).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from engines.errors import UserError
from engines.meta import ModelMeta

ARCHS = ("seedcnn", "efficientnet_lite0", "resnet18", "mobilenet_v3_small", "efficientnet_b0")
PRETRAINED_ARCHS = ARCHS[1:]


class SeedCNN(nn.Module):
    """The seed design: Conv+ReLU blocks with max pooling, then Flatten + Dense + Dropout + output.

    BatchNorm after each convolution speeds training on a CPU and folds into the convolution on export.
    """

    def __init__(
        self, channels: int, num_outputs: int, input_size: int, widths: tuple[int, ...] = (16, 32, 64, 128)
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            layers += [nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        side = input_size // (2 ** len(widths))
        if side < 1:
            raise UserError(f"seedcnn: input size {input_size} is too small; use at least {2 ** len(widths)}")
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * side * side, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(128, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _torchvision(arch: str, channels: int, num_outputs: int, weights_path: Path | None) -> nn.Module:
    import torchvision.models as tvm

    net = getattr(tvm, arch)(weights=None)
    if weights_path is not None:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    if arch == "resnet18":
        if channels != 3:
            net.conv1 = nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
        net.fc = nn.Linear(net.fc.in_features, num_outputs)
    else:  # mobilenet_v3_small and efficientnet_b0 share the stem and classifier layout
        if channels != 3:
            old = net.features[0][0]
            net.features[0][0] = nn.Conv2d(channels, old.out_channels, 3, 2, 1, bias=False)
        net.classifier[-1] = nn.Linear(net.classifier[-1].in_features, num_outputs)
    return net


def build_network(meta: ModelMeta, weights_path: Path | None = None) -> nn.Module:
    """The logits network for ``meta.arch``; ``weights_path`` is an ImageNet state dict for a backbone."""
    if meta.arch == "seedcnn":
        return SeedCNN(meta.channels, meta.num_outputs, meta.input_size)
    if meta.arch == "efficientnet_lite0":
        from engines.lite0 import build_lite0

        return build_lite0(meta.channels, meta.num_outputs, weights_path)
    if meta.arch in ARCHS:
        return _torchvision(meta.arch, meta.channels, meta.num_outputs, weights_path)
    raise UserError(f"unknown architecture {meta.arch!r}; supported: {', '.join(ARCHS)}")


def inference_network(net: nn.Module, meta: ModelMeta) -> nn.Module:
    """Logits network + activation: what is exported and what every backend runs."""
    act: nn.Module = nn.Sigmoid() if meta.binary else nn.Softmax(dim=1)
    return nn.Sequential(net, act).eval()
