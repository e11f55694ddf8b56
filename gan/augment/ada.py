"""Adaptive discriminator augmentation (ADA, Karras et al. 2020): the geometric + colour pipeline and its p control.

:class:`AdaptiveAugment` applies, to every image the discriminator sees (reals and fakes alike), each of these
transforms independently with probability ``p`` times the transform's multiplier (default 1), in this order:

========================  ===============================================================================
geometric, exact          x-flip (``torch.flip`` of the columns; at p = 1 half the samples are flipped), quarter
                          turns (``torch.rot90`` by k ~ U{0..3}), integer translation by
                          ``round(U(-0.125, 0.125) * size)`` pixels with reflection padding
geometric, resampled      isotropic scale ``2^N(0, 0.2)``, rotation ``U(-pi, pi)`` (before and after the
                          anisotropic scale, each with probability ``1 - sqrt(1 - p)``), anisotropic scale
                          ``2^N(0, 0.2)`` along x and its inverse along y, fractional translation ``N(0, 0.125)`` of
                          the size
colour                    brightness ``+N(0, 0.2)``, contrast ``x 2^N(0, 0.5)``, luma flip (reflection of the
                          luma axis; half the samples at p = 1), hue rotation about the luma axis by
                          ``U(-pi, pi)``, saturation ``x 2^N(0, 1)`` off the luma axis
========================  ===============================================================================

Images are in [-1, 1] (grey = 0, the luma axis is (1, 1, 1)/sqrt(3)). The ranges are the reference's defaults.
Every operation is differentiable in the images. Two choices differ from the reference, deliberately: the integer
operations are exact index permutations (the reference folds them into one resampling), and the continuous ones
are one bilinear resampling of the reflect-padded image without the reference's 2x wavelet supersampling.

Randomness: :meth:`AdaptiveAugment.sample_params` draws everything from an explicit ``torch.Generator`` (a fixed
number of draws per sample whatever ``p``), so the training module can draw for the global batch and slice by rank
(:meth:`AugmentParams.select`); the same generator state gives the same augmentation.

:class:`AdaController` adjusts ``p``: it accumulates ``sign(D(real))``; every ``interval`` steps
``r_t = E[sign(D(real))]`` and ``p += sign(r_t - target) * batch * interval / (speed_kimg * 1000)``, clamped to
[0, 1] (target 0.6, interval 4, speed 500 kimg as the reference, which clamps at 0 only; p > 1 means nothing).
Its sums are tensors, so under DDP they are all-reduced (SUM) before :meth:`AdaController.update`, and they are
saved in the state dict.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gan.augment.geometry import affine_resample, integer_transform, rotate_matrix, scale_matrix, translate_matrix

_LUMA = torch.tensor([1.0, 1.0, 1.0]) / math.sqrt(3.0)


@dataclass(frozen=True)
class AugmentParams:
    """Per-sample parameters of one ADA draw (every field has the batch first).

    Attributes:
        xflip: (N,) bool, flip the columns.
        rot90: (N,) int64 quarter turns (``torch.rot90`` with ``dims=(-2, -1)``).
        shift: (N, 2) int64 integer translation ``(dx, dy)`` in pixels.
        geometric: (N, 3, 3) output -> input matrix of the resampled part (pixel-centred coordinates).
        geometric_active: (N,) bool, some resampled transform applies.
        color: (N, 4, 4) homogeneous colour matrix (RGB + 1).
        color_active: (N,) bool, some colour transform applies.
    """

    xflip: Tensor
    rot90: Tensor
    shift: Tensor
    geometric: Tensor
    geometric_active: Tensor
    color: Tensor
    color_active: Tensor

    @property
    def batch_size(self) -> int:
        """N."""
        return self.xflip.shape[0]

    def select(self, index: slice | Tensor) -> AugmentParams:
        """The parameters of a subset of the samples (e.g. this rank's slice of the global batch).

        Args:
            index: a slice or an index tensor along the batch.
        """
        return AugmentParams(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})


class AdaptiveAugment(nn.Module):
    """The ADA pipeline (see the module docstring); ``p`` is a buffer (saved, all-reducible, set by the controller).

    Args:
        p: initial augmentation probability.
        xflip: probability multiplier of the x-flip.
        rotate90: multiplier of the quarter turns.
        xint: multiplier of the integer translation.
        scale: multiplier of the isotropic scaling.
        rotate: multiplier of the arbitrary rotation.
        aniso: multiplier of the anisotropic scaling.
        xfrac: multiplier of the fractional translation.
        brightness: multiplier of the brightness shift.
        contrast: multiplier of the contrast scaling.
        lumaflip: multiplier of the luma flip.
        hue: multiplier of the hue rotation.
        saturation: multiplier of the saturation scaling.
        xint_max: range of the integer translation, as a fraction of the size.
        scale_std: std of log2 of the isotropic scale.
        rotate_max: range of the rotation, as a fraction of pi.
        aniso_std: std of log2 of the anisotropic scale.
        xfrac_std: std of the fractional translation, as a fraction of the size.
        brightness_std: std of the brightness shift.
        contrast_std: std of log2 of the contrast factor.
        hue_max: range of the hue rotation, as a fraction of pi.
        saturation_std: std of log2 of the saturation factor.
    """

    def __init__(
        self,
        *,
        p: float = 0.0,
        xflip: float = 1.0,
        rotate90: float = 1.0,
        xint: float = 1.0,
        scale: float = 1.0,
        rotate: float = 1.0,
        aniso: float = 1.0,
        xfrac: float = 1.0,
        brightness: float = 1.0,
        contrast: float = 1.0,
        lumaflip: float = 1.0,
        hue: float = 1.0,
        saturation: float = 1.0,
        xint_max: float = 0.125,
        scale_std: float = 0.2,
        rotate_max: float = 1.0,
        aniso_std: float = 0.2,
        xfrac_std: float = 0.125,
        brightness_std: float = 0.2,
        contrast_std: float = 0.5,
        hue_max: float = 1.0,
        saturation_std: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p!r}")
        self.register_buffer("p", torch.tensor(float(p)))
        self.xflip, self.rotate90, self.xint = xflip, rotate90, xint
        self.scale, self.rotate, self.aniso, self.xfrac = scale, rotate, aniso, xfrac
        self.brightness, self.contrast, self.lumaflip, self.hue, self.saturation = (
            brightness, contrast, lumaflip, hue, saturation,
        )
        self.xint_max, self.scale_std, self.rotate_max, self.aniso_std = xint_max, scale_std, rotate_max, aniso_std
        self.xfrac_std, self.brightness_std, self.contrast_std = xfrac_std, brightness_std, contrast_std
        self.hue_max, self.saturation_std = hue_max, saturation_std

    def extra_repr(self) -> str:
        """The summary shown by ``print(module)``."""
        return f"p={float(self.p):.4f}"

    def forward(self, images: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch (draws the parameters from ``generator``, then :meth:`apply`).

        Args:
            images: (N, C, H, W) images in [-1, 1] (C = 3 for the luma flip, hue and saturation).
            generator: source of the random parameters (None: the global torch RNG).
        """
        n, _, h, w = images.shape
        return self.apply(images, self.sample_params(n, height=h, width=w, generator=generator))

    def sample_params(
        self, batch_size: int, *, height: int, width: int, generator: torch.Generator | None = None
    ) -> AugmentParams:
        """Draw the parameters of ``batch_size`` samples at the current ``p`` (on the generator's device).

        ``p`` is read once (one host read of the buffer); the random draws are the same whatever ``p`` is.

        Args:
            batch_size: number of samples N.
            height: image height (for the translations).
            width: image width.
            generator: source of the random draws (None: the global torch RNG).
        """
        n, p = batch_size, float(self.p)
        d = _Draws(n, generator)
        # exact geometric part
        xflip = d.gate(self.xflip * p) & (d.rand() < 0.5)
        rot90 = torch.where(d.gate(self.rotate90 * p), (d.rand() * 4).floor().long().clamp_max(3), 0)
        t = (d.rand(2) * 2 - 1) * self.xint_max
        size = torch.tensor([width, height], device=d.device, dtype=torch.float32)
        shift = torch.where(d.gate(self.xint * p)[:, None], (t * size).round().long(), 0)
        # resampled geometric part: the output -> input matrix, F_4^-1 @ F_5^-1 @ ... in the forward order
        inv = torch.eye(3, device=d.device).repeat(n, 1, 1)
        active = torch.zeros(n, dtype=torch.bool, device=d.device)
        on, s = d.gate(self.scale * p), torch.exp2(d.randn() * self.scale_std)
        inv, active = inv @ scale_matrix(torch.where(on, 1 / s, 1.0), torch.where(on, 1 / s, 1.0)), active | on
        p_rot = 1 - math.sqrt(1 - min(max(self.rotate * p, 0.0), 1.0))  # two rotations: p overall
        on, theta = d.gate(p_rot), (d.rand() * 2 - 1) * math.pi * self.rotate_max
        inv, active = inv @ rotate_matrix(torch.where(on, -theta, 0.0)), active | on
        on, s = d.gate(self.aniso * p), torch.exp2(d.randn() * self.aniso_std)
        inv, active = inv @ scale_matrix(torch.where(on, 1 / s, 1.0), torch.where(on, s, 1.0)), active | on
        on, theta = d.gate(p_rot), (d.rand() * 2 - 1) * math.pi * self.rotate_max
        inv, active = inv @ rotate_matrix(torch.where(on, -theta, 0.0)), active | on
        on, t = d.gate(self.xfrac * p), d.randn(2) * self.xfrac_std
        tx, ty = torch.where(on, -t[:, 0] * width, 0.0), torch.where(on, -t[:, 1] * height, 0.0)
        inv, active = inv @ translate_matrix(tx, ty), active | on
        color, color_active = self._sample_color(p, d)
        return AugmentParams(
            xflip=xflip, rot90=rot90, shift=shift, geometric=inv, geometric_active=active, color=color,
            color_active=color_active,
        )

    def _sample_color(self, p: float, d: _Draws) -> tuple[Tensor, Tensor]:
        """The (N, 4, 4) colour matrices and their active mask (forward composition: each op multiplies on the left)."""
        n, dev = d.n, d.device
        eye = torch.eye(4, device=dev)
        c = eye.repeat(n, 1, 1)
        active = torch.zeros(n, dtype=torch.bool, device=dev)
        v = _LUMA.to(dev)
        vv = torch.zeros(4, 4, device=dev)
        vv[:3, :3] = torch.outer(v, v)
        on, b = d.gate(self.brightness * p), d.randn() * self.brightness_std
        m = eye.repeat(n, 1, 1)
        m[:, :3, 3] = torch.where(on, b, 0.0)[:, None]
        c, active = m @ c, active | on
        on, k = d.gate(self.contrast * p), torch.exp2(d.randn() * self.contrast_std)
        k = torch.where(on, k, 1.0)
        m = torch.diag_embed(torch.stack([k, k, k, torch.ones_like(k)], dim=1))
        c, active = m @ c, active | on
        on = d.gate(self.lumaflip * p) & (d.rand() < 0.5)
        m = eye - 2 * vv * on.float()[:, None, None]
        c, active = m @ c, active | on
        on, theta = d.gate(self.hue * p), (d.rand() * 2 - 1) * math.pi * self.hue_max
        c, active = _hue_rotation(torch.where(on, theta, 0.0), v) @ c, active | on
        on, s = d.gate(self.saturation * p), torch.exp2(d.randn() * self.saturation_std)
        s = torch.where(on, s, 1.0)[:, None, None]
        m = vv + (eye - vv) * s
        m[:, 3, 3] = 1.0
        c, active = m @ c, active | on
        return c, active

    def apply(self, images: Tensor, params: AugmentParams) -> Tensor:
        """Apply drawn parameters; samples with nothing active are returned unchanged (exactly).

        Args:
            images: (N, C, H, W) images in [-1, 1].
            params: parameters for these N samples (from :meth:`sample_params`, or a slice of a larger draw).
        """
        if params.batch_size != images.shape[0]:
            raise ValueError(f"params are for {params.batch_size} samples, images has {images.shape[0]}")
        out = images
        exact = params.xflip | (params.rot90 != 0) | (params.shift != 0).any(dim=1)
        if (i := _indices(exact)) is not None:
            part = integer_transform(
                _take(out, i), xflip=params.xflip[i], rot90=params.rot90[i], shift=params.shift[i]
            )
            out = _put(out, i, part)
        if (i := _indices(params.geometric_active)) is not None:
            out = _put(out, i, affine_resample(_take(out, i), params.geometric[i]))
        if (i := _indices(params.color_active)) is not None:
            out = _put(out, i, _apply_color(_take(out, i), params.color[i]))
        return out


class _Draws:
    """Random draws for N samples from one generator, on the generator's device (CPU for None)."""

    def __init__(self, n: int, generator: torch.Generator | None) -> None:
        self.n, self.generator = n, generator
        self.device = generator.device if generator is not None else torch.device("cpu")

    def rand(self, *shape: int) -> Tensor:
        return torch.rand((self.n, *shape), generator=self.generator, device=self.device)

    def randn(self, *shape: int) -> Tensor:
        return torch.randn((self.n, *shape), generator=self.generator, device=self.device)

    def gate(self, prob: float) -> Tensor:
        """(N,) bool: True with probability ``prob`` (always one draw per sample, whatever ``prob``)."""
        return self.rand() < prob


def _indices(mask: Tensor) -> Tensor | None:
    """Indices where ``mask`` holds, or None when it holds nowhere."""
    idx = mask.nonzero().flatten()
    return idx if idx.numel() else None


def _take(images: Tensor, idx: Tensor) -> Tensor:
    return images.index_select(0, idx.to(images.device))


def _put(images: Tensor, idx: Tensor, part: Tensor) -> Tensor:
    """``images`` with ``part`` in the rows ``idx`` (out of place, differentiable in both)."""
    return images.index_copy(0, idx.to(images.device), part)


def _hue_rotation(theta: Tensor, v: Tensor) -> Tensor:
    """(N, 4, 4) rotations by ``theta`` about the unit axis ``v`` (Rodrigues), homogeneous."""
    n = theta.shape[0]
    vv = torch.outer(v, v)
    cross = torch.tensor([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]], device=v.device)
    eye3 = torch.eye(3, device=v.device)
    cos, sin = theta.cos()[:, None, None], theta.sin()[:, None, None]
    r = vv + (eye3 - vv) * cos + cross * sin
    m = torch.eye(4, device=v.device).repeat(n, 1, 1)
    m[:, :3, :3] = r
    return m


def _apply_color(images: Tensor, color: Tensor) -> Tensor:
    """``A x + b`` per pixel with the 4x4 homogeneous colour matrices (scalar form for C != 3)."""
    c = color.to(device=images.device, dtype=images.dtype)
    if images.shape[1] == 3:
        return torch.einsum("nij,njhw->nihw", c[:, :3, :3], images) + c[:, :3, 3, None, None]
    if not torch.allclose(c[:, :3, :3], c[:, :1, :1] * torch.eye(3, device=c.device, dtype=c.dtype), atol=1e-6):
        raise ValueError(
            f"luma flip, hue and saturation need RGB images; got {images.shape[1]} channels (set them to 0)"
        )
    return images * c[:, 0, 0, None, None, None] + c[:, 0, 3, None, None, None]


def ada_p_step(p: Tensor, rt: Tensor, *, target: float, batch_size: int, interval: int, speed_kimg: float) -> Tensor:
    """One ADA adjustment: ``clamp(p + sign(rt - target) * batch_size * interval / (speed_kimg * 1000), 0, 1)``.

    Args:
        p: current probability (scalar tensor).
        rt: ``E[sign(D(real))]`` over the last interval.
        target: the r_t ADA holds (0.6).
        batch_size: images per step (the global batch).
        interval: steps between adjustments (4).
        speed_kimg: thousands of images for p to move by 1 (500).
    """
    step = torch.sign(rt - target) * (batch_size * interval / (speed_kimg * 1000.0))
    return (p + step).clamp(0.0, 1.0)


class AdaController(nn.Module):
    """Collects ``sign(D(real))`` and moves ADA's ``p`` towards the target r_t (see the module docstring).

    Usage per training step: ``controller.observe(real_logits)``; every ``interval`` steps (all-reduce
    ``sign_sum`` and ``count`` with SUM under DDP, then) ``rt = controller.update(augment.p, batch_size=batch)``.

    Args:
        target: the r_t to hold (0.6).
        interval: steps between adjustments (4); the caller decides when, this sets the step size.
        speed_kimg: thousands of real images for p to move by 1 (500).
    """

    def __init__(self, *, target: float = 0.6, interval: int = 4, speed_kimg: float = 500.0) -> None:
        super().__init__()
        if interval < 1 or speed_kimg <= 0:
            raise ValueError(f"need interval >= 1 and speed_kimg > 0, got {interval!r}, {speed_kimg!r}")
        self.target, self.interval, self.speed_kimg = float(target), int(interval), float(speed_kimg)
        self.register_buffer("sign_sum", torch.zeros(()))
        self.register_buffer("count", torch.zeros(()))

    def extra_repr(self) -> str:
        """The summary shown by ``print(module)``."""
        return f"target={self.target}, interval={self.interval}, speed_kimg={self.speed_kimg}"

    @torch.no_grad()
    def observe(self, real_logits: Tensor) -> None:
        """Add a batch of discriminator logits on (augmented) reals.

        Args:
            real_logits: any shape; every element counts once.
        """
        self.sign_sum += real_logits.detach().sign().sum().to(self.sign_sum)
        self.count += real_logits.numel()

    @torch.no_grad()
    def update(self, p: Tensor, *, batch_size: int) -> Tensor | None:
        """Adjust ``p`` in place from the collected signs, reset the sums; returns r_t (None if nothing collected).

        Args:
            p: the augment pipeline's ``p`` buffer (modified in place).
            batch_size: images per step (the global batch).
        """
        if float(self.count) == 0:
            return None
        rt = self.sign_sum / self.count
        p.copy_(ada_p_step(p, rt.to(p), target=self.target, batch_size=batch_size, interval=self.interval,
                           speed_kimg=self.speed_kimg))
        self.sign_sum.zero_()
        self.count.zero_()
        return rt
