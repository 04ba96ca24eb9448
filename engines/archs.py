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


def load_weights(net: nn.Module, state: dict, meta: ModelMeta, where: str | Path) -> nn.Module:
    """``net.load_state_dict(state)``, or one :class:`UserError` that names the tensor or metadata field that
    differs (architecture, input channels, input size, classes) and what to do; torch's own message is a page
    long and is cut off before it says which."""
    try:
        net.load_state_dict(state)
    except RuntimeError:
        raise UserError(f"{where}: {weights_mismatch(net, state, meta)}") from None
    return net


def weights_mismatch(net: nn.Module, state: dict, meta: ModelMeta) -> str:
    """Why ``state`` does not fit ``net`` (built from ``meta``), in one sentence with the fix."""
    fix = (
        "the weights and the metadata stored with them disagree (a checkpoint from another run, or edited "
        "metadata); use the model.pt `inspector train` wrote with them, or retrain"
    )
    own = net.state_dict()
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        return f"the checkpoint's state_dict is not a dict of tensors; {fix}"
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"{len(missing)} of its tensors are missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} are not its own (e.g. {unexpected[0]})")
        return f"the weights are not a {meta.arch} network (field 'arch'): {' and '.join(detail)}; {fix}"
    diffs = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if not diffs:
        return f"the weights do not load into {meta.arch}; {fix}"
    k = diffs[0]
    got, want = tuple(state[k].shape), tuple(own[k].shape)
    convs = [n for n, v in own.items() if v.dim() == 4]
    linears = [n for n, v in own.items() if v.dim() == 2]
    if convs and k == convs[0] and got[1] != want[1]:
        return (
            f"tensor {k} takes {got[1]} input channel(s) but the metadata says channels={meta.channels} "
            f"(field 'channels': 1 grey, 3 colour); {fix}"
        )
    if meta.arch == "seedcnn" and linears and k == linears[0] and got[0] == want[0] and got[1] != want[1]:
        c = own[convs[-1]].shape[0] if convs else 1
        side = int(round((got[1] / c) ** 0.5))
        trained = f"input size {side * 16}" if side * side * c == got[1] else f"{got[1]} features"
        return (
            f"tensor {k} has {got[1]} inputs, as trained for {trained}, but the metadata says "
            f"input_size={meta.input_size} (field 'input_size', {want[1]} inputs); {fix}"
        )
    if linears and k == linears[-1] and got[0] != want[0]:
        return (
            f"tensor {k} has {got[0]} output(s) but the metadata's {len(meta.classes)} classes need "
            f"{meta.num_outputs} (field 'classes'); {fix}"
        )
    return (
        f"tensor {k} is {list(got)} in the checkpoint but {list(want)} in a {meta.arch} built from its metadata "
        f"(channels={meta.channels}, input_size={meta.input_size}, {len(meta.classes)} classes); {fix}"
    )


def inference_network(net: nn.Module, meta: ModelMeta) -> nn.Module:
    """Logits network + activation: what is exported and what every backend runs."""
    act: nn.Module = nn.Sigmoid() if meta.binary else nn.Softmax(dim=1)
    return nn.Sequential(net, act).eval()
