"""LPIPS perceptual loss (2D, and 2.5D for volumes) that never downloads weights.

The ``lpips`` package ships its small linear heads (``lpips/weights/v0.1/<net>.pth``) but fetches the ImageNet
backbone from the internet through torchvision. Here the backbone is always built random
(``lpips.LPIPS(pnet_rand=True)``) and, for ``pretrained=True``, its weights and the heads are located, checksummed
and read by ``gan.weights``: an explicit ``backbone_weights`` file (or folder), or torchvision's file in the torch
hub cache (``torch.hub.get_dir()/checkpoints``). ``net="vgg"`` is also the LPIPS-VGG distance of StyleGAN2's
projector.
"""
from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

import lpips
import torch
from torch import nn

from gan.weights import (
    ALEXNET,
    LPIPS_HEADS_ALEX,
    LPIPS_HEADS_SQUEEZE,
    LPIPS_HEADS_VGG,
    SQUEEZENET1_1,
    VGG16,
    WeightsFile,
    load,
)

LPIPSNet = Literal["alex", "vgg", "squeeze"]
Reduction = Literal["mean", "none"]
_NETS: tuple[str, ...] = get_args(LPIPSNet)

# the weights files behind each LPIPS net: torchvision's ImageNet backbone and the lpips package's linear heads
_BACKBONES: dict[str, WeightsFile] = {"alex": ALEXNET, "vgg": VGG16, "squeeze": SQUEEZENET1_1}
_HEADS: dict[str, WeightsFile] = {"alex": LPIPS_HEADS_ALEX, "vgg": LPIPS_HEADS_VGG, "squeeze": LPIPS_HEADS_SQUEEZE}
# smallest image side each backbone accepts (its last pooling layer needs at least one pixel)
_MIN_SIZE = {"alex": 31, "vgg": 16, "squeeze": 17}
_SLICE_KEY = re.compile(r"^slice\d+\.(\d+\..+)$")


def backbone_file_name(net: LPIPSNet) -> str:
    """File name torchvision gives the ImageNet weights of an LPIPS backbone, e.g. ``alexnet-owt-7be5be79.pth``.

    Args:
        net: ``"alex"``, ``"vgg"`` or ``"squeeze"``.
    """
    _check_net(net)
    return _BACKBONES[net].filename


def default_backbone_path(net: LPIPSNet) -> Path:
    """Where the backbone weights are looked for when no path is given: ``torch.hub.get_dir()/checkpoints/<name>``.

    Args:
        net: ``"alex"``, ``"vgg"`` or ``"squeeze"``.
    """
    _check_net(net)
    return _BACKBONES[net].default_path()


def _check_net(net: str) -> None:
    if net not in _NETS:
        raise ValueError(f"LPIPS net must be one of {_NETS}, got {net!r}")


def _load_backbone(model: lpips.LPIPS, net: str, source: dict[str, torch.Tensor], path: Path) -> None:
    """Copy torchvision ``features.<i>.*`` weights (read from ``path``) into the LPIPS trunk, whose keys are
    ``slice<k>.<i>.*``."""
    target = {}
    missing = []
    for key in model.net.state_dict():
        match = _SLICE_KEY.match(key)
        src_key = f"features.{match.group(1)}" if match else key
        if src_key in source:
            target[key] = source[src_key]
        else:
            missing.append(src_key)
    if missing:
        raise ValueError(
            f"{path}: not torchvision weights for the LPIPS {net!r} backbone; missing {len(missing)} keys, "
            f"e.g. {missing[:3]}"
        )
    try:
        model.net.load_state_dict(target, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the LPIPS {net!r} backbone: {exc}") from exc


def _load_linear_heads(model: lpips.LPIPS, net: str) -> None:
    """Load the calibrated linear heads shipped inside the lpips package (v0.1), checked by their sha256."""
    heads_file = load(_HEADS[net])
    state = heads_file.state
    heads = [k for k in model.state_dict() if re.match(r"lin\d+\.", k)]  # `lins.<i>` aliases the same modules
    missing = sorted(set(heads) - set(state))
    if missing:
        raise ValueError(f"{heads_file.path}: linear-head weights lack {missing}")
    model.load_state_dict({k: state[k] for k in heads}, strict=False)


class LPIPSLoss(nn.Module):
    """LPIPS distance between images in [-1, 1], for 2D images or (2.5D) for volumes.

    The network is frozen (``requires_grad=False``) and always in eval mode, whatever ``train()`` is called
    with; gradients flow to the inputs. Grey inputs (1 channel) are repeated to 3 channels. For
    ``spatial_dims=3`` the (N, C, D, H, W) volumes are cut into 2D slices along each of ``slice_axes``
    (0: axial, slices along D; 1: coronal, along H; 2: sagittal, along W); each axis's slices go through LPIPS
    as one batch, and the distance is the mean over slices, then over axes.

    Args:
        net: LPIPS backbone: ``"alex"`` (the usual loss), ``"vgg"`` or ``"squeeze"``.
        pretrained: True loads the ImageNet backbone from a local file and the calibrated linear heads shipped
            with the lpips package; False gives a random backbone and random heads (for tests).
        backbone_weights: torchvision weights file for the backbone, or a folder holding it under torchvision's
            name; default ``torch.hub.get_dir()/checkpoints/<torchvision's file name>`` (e.g.
            ``alexnet-owt-7be5be79.pth``). When the file name carries a sha256 prefix (``-<hex>.pth``, torchvision's
            convention) it is checked.
        spatial_dims: 2 for (N, C, H, W) images, 3 for (N, C, D, H, W) volumes (2.5D LPIPS).
        slice_axes: spatial axes to slice along for ``spatial_dims=3`` (subset of 0, 1, 2).
        max_slices: at most this many evenly spaced slices per axis (None: all), to bound the cost for large
            volumes.
        reduction: ``"mean"`` returns a scalar, ``"none"`` one value per sample (N,).
    """

    def __init__(
        self,
        *,
        net: LPIPSNet = "alex",
        pretrained: bool = True,
        backbone_weights: str | os.PathLike[str] | None = None,
        spatial_dims: int = 2,
        slice_axes: Sequence[int] = (0, 1, 2),
        max_slices: int | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        _check_net(net)
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        axes = tuple(int(a) for a in slice_axes)
        if not axes or len(set(axes)) != len(axes) or not set(axes) <= {0, 1, 2}:
            raise ValueError(f"slice_axes must be distinct values among 0, 1, 2, got {tuple(slice_axes)!r}")
        if max_slices is not None and (isinstance(max_slices, bool) or int(max_slices) < 1):
            raise ValueError(f"max_slices must be None or >= 1, got {max_slices!r}")
        if reduction not in get_args(Reduction):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        self.net_name = net
        self.spatial_dims = spatial_dims
        self.slice_axes = axes
        self.max_slices = None if max_slices is None else int(max_slices)
        self.reduction = reduction

        if pretrained:  # read (and check) the file before building anything, so a missing file fails fast
            backbone = load(_BACKBONES[net], backbone_weights, option="backbone_weights")
        with warnings.catch_warnings():  # torchvision's deprecation notice for lpips's `pretrained=` call
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
        if pretrained:
            _load_backbone(model, net, backbone.state, backbone.path)
            _load_linear_heads(model, net)
        model.requires_grad_(False)
        self.lpips = model.eval()

    def train(self, mode: bool = True) -> LPIPSLoss:
        """Set the training flag of this module; the LPIPS network itself stays in eval mode.

        Args:
            mode: training flag.
        """
        super().train(mode)
        self.lpips.eval()
        return self

    def _distance_2d(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS of (B, 3, h, w) batches, shape (B,), in the network's dtype (a float32 metric network
        measures float64 images, e.g. under precision 64-true)."""
        dtype = next(self.lpips.parameters()).dtype
        return self.lpips(a.to(dtype), b.to(dtype)).flatten()

    def _slice_indices(self, n: int, device: torch.device) -> torch.Tensor | None:
        if self.max_slices is None or self.max_slices >= n:
            return None
        return torch.linspace(0, n - 1, self.max_slices, device=device).round().long()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """LPIPS distance between ``pred`` and ``target``.

        Args:
            pred: (N, C, H, W) or, for ``spatial_dims=3``, (N, C, D, H, W) images in [-1, 1], C = 1 or 3.
            target: the reference images, same shape.

        Returns:
            A scalar (``reduction="mean"``) or one distance per sample (N,).
        """
        if pred.shape != target.shape:
            raise ValueError(
                f"LPIPSLoss: pred shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}"
            )
        if pred.dim() != self.spatial_dims + 2:
            layout = "(N, C, H, W)" if self.spatial_dims == 2 else "(N, C, D, H, W)"
            raise ValueError(
                f"LPIPSLoss(spatial_dims={self.spatial_dims}): expected {layout} inputs, got shape {tuple(pred.shape)}"
            )
        channels = pred.shape[1]
        if channels not in (1, 3):
            raise ValueError(f"LPIPSLoss: inputs must have 1 (grey) or 3 (RGB) channels, got shape {tuple(pred.shape)}")
        if channels == 1:
            repeats = (1, 3) + (1,) * self.spatial_dims
            pred, target = pred.repeat(repeats), target.repeat(repeats)

        if self.spatial_dims == 2:
            self._check_size(tuple(pred.shape[2:]), tuple(pred.shape))
            per_sample = self._distance_2d(pred, target)
        else:
            n = pred.shape[0]
            per_axis = []
            for axis in self.slice_axes:
                dim = axis + 2
                a, b = pred.movedim(dim, 1), target.movedim(dim, 1)  # (N, S, 3, h, w)
                index = self._slice_indices(a.shape[1], a.device)
                if index is not None:
                    a, b = a.index_select(1, index), b.index_select(1, index)
                self._check_size(tuple(a.shape[3:]), tuple(pred.shape))
                s = a.shape[1]
                d = self._distance_2d(a.reshape(n * s, *a.shape[2:]), b.reshape(n * s, *b.shape[2:]))
                per_axis.append(d.reshape(n, s).mean(dim=1))
            per_sample = torch.stack(per_axis, dim=1).mean(dim=1)
        return per_sample.mean() if self.reduction == "mean" else per_sample

    def _check_size(self, plane: tuple[int, ...], shape: tuple[int, ...]) -> None:
        smallest = _MIN_SIZE[self.net_name]
        if min(plane) < smallest:
            raise ValueError(
                f"LPIPSLoss(net={self.net_name!r}): input shape {shape} gives {plane} slices; the backbone needs "
                f"every slice side to be at least {smallest}"
            )
