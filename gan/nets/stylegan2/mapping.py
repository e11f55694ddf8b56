"""StyleGAN2 mapping network z (+ class) -> w, with the tracked average w (global and per class) and truncation.

``w = fc_8(...fc_1(cat(norm(z), norm(embed(label)))))`` where ``norm`` divides by the root mean square and the FC
layers have learning-rate multiplier 0.01; the output is broadcast to the ``num_ws`` layers of the synthesis
network. Truncation pulls w towards a centre, ``w' = c + psi * (w - c)``: the tracked ``w_avg`` for an
unconditional model, the class's own ``class_w_avg`` row for a conditional one (so psi = 0 gives each class its
own mean image rather than the mean over all classes).

The averages are exponential moving averages of w during training, ``avg <- beta * avg + (1 - beta) * mean_batch``
(beta 0.995 as in the reference). The network never updates them by itself: the training module calls
:meth:`MappingNetwork.w_stats` on a batch, sums the statistics over ranks (DDP all-reduce), then calls
:meth:`MappingNetwork.update_w_avg`, so every rank keeps identical buffers.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from gan.nets.stylegan2.layers import EqualLinear, fc_stack, label_weights, normalize_2nd_moment


class MappingNetwork(nn.Module):
    """z (N, z_dim) and optional labels -> ws (N, num_ws, w_dim); see the module docstring.

    Args:
        z_dim: latent width.
        w_dim: width of w (and of the label embedding).
        num_ws: number of copies of w the synthesis network reads.
        num_classes: number of classes (0: unconditional).
        num_layers: number of FC layers.
        lr_mul: learning-rate multiplier of the FC layers (the label embedding has 1).
        w_avg_beta: decay of the tracked averages.
    """

    def __init__(
        self,
        *,
        z_dim: int,
        w_dim: int,
        num_ws: int,
        num_classes: int = 0,
        num_layers: int = 8,
        lr_mul: float = 0.01,
        w_avg_beta: float = 0.995,
    ) -> None:
        super().__init__()
        if z_dim < 1 or w_dim < 1 or num_classes < 0:
            raise ValueError(f"need z_dim >= 1, w_dim >= 1, num_classes >= 0; got {z_dim}, {w_dim}, {num_classes}")
        if not 0.0 <= w_avg_beta < 1.0:
            raise ValueError(f"w_avg_beta must be in [0, 1), got {w_avg_beta!r}")
        self.z_dim, self.w_dim, self.num_ws, self.num_classes = z_dim, w_dim, num_ws, num_classes
        self.w_avg_beta = float(w_avg_beta)
        self.embed = EqualLinear(num_classes, w_dim) if num_classes else None
        self.layers = fc_stack(z_dim + (w_dim if num_classes else 0), w_dim, num_layers, lr_mul=lr_mul)
        self.register_buffer("w_avg", torch.zeros(w_dim))
        if num_classes:
            self.register_buffer("class_w_avg", torch.zeros(num_classes, w_dim))
        else:
            self.class_w_avg = None

    def extra_repr(self) -> str:
        """The summary shown by ``print(module)``."""
        return f"z_dim={self.z_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}, num_classes={self.num_classes}"

    def forward(
        self, z: Tensor, label: Tensor | None = None, *, psi: float = 1.0, truncation_cutoff: int | None = None
    ) -> Tensor:
        """Map latents to ws (N, num_ws, w_dim), truncated when ``psi != 1``.

        Args:
            z: (N, z_dim) latents.
            label: None (unconditional), (N,) class indices or (N, num_classes) float class weights.
            psi: truncation strength (1: none, 0: every w is the centre).
            truncation_cutoff: truncate only the first this many ws (None: all).
        """
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (N, {self.z_dim}), got {tuple(z.shape)}")
        weights = label_weights(label, self.num_classes, batch=z.shape[0], where="Generator.mapping")
        x = normalize_2nd_moment(z)
        if self.embed is not None:
            x = torch.cat([x, normalize_2nd_moment(self.embed(weights.to(z.dtype)))], dim=1)
        w = self.layers(x)
        ws = w[:, None].repeat(1, self.num_ws, 1)  # a copy, so callers may write style-mixing slices into it
        if psi != 1.0:
            ws = self.truncate(ws, psi, label, cutoff=truncation_cutoff)
        return ws

    def centre(self, label: Tensor | None = None, *, batch: int = 1) -> Tensor:
        """Truncation centre per sample, (N, w_dim): ``w_avg``, or the label-weighted mean of ``class_w_avg``.

        Args:
            label: None (unconditional), (N,) class indices or (N, num_classes) float class weights.
            batch: N (used when ``label`` is None).
        """
        if self.num_classes == 0:
            label_weights(label, 0, batch=batch, where="Generator.mapping")
            return self.w_avg[None].expand(batch, -1)
        n = label.shape[0] if label is not None else batch
        weights = label_weights(label, self.num_classes, batch=n, where="Generator.mapping")
        weights = weights.to(self.class_w_avg.dtype)
        return (weights @ self.class_w_avg) / weights.sum(dim=1, keepdim=True).clamp_min(1e-8)

    def truncate(self, ws: Tensor, psi: float, label: Tensor | None = None, *, cutoff: int | None = None) -> Tensor:
        """``c + psi * (ws - c)`` with the centre ``c`` of :meth:`centre`.

        Args:
            ws: (N, num_ws, w_dim) or (N, w_dim).
            psi: truncation strength (1: unchanged, 0: the centre).
            label: the samples' labels (required for a conditional model).
            cutoff: with (N, num_ws, w_dim) ws, truncate only the first ``cutoff`` of them (None: all).
        """
        c = self.centre(label, batch=ws.shape[0]).to(ws.dtype)
        if ws.ndim == 2:
            return c.lerp(ws, psi)
        c = c[:, None]
        if cutoff is None:
            return c.lerp(ws, psi)
        head = c.lerp(ws[:, :cutoff], psi)
        return torch.cat([head, ws[:, cutoff:]], dim=1)

    @torch.no_grad()
    def w_stats(self, ws: Tensor, label: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Sums and counts of a batch of (untruncated) w, the input of :meth:`update_w_avg`.

        Row 0 is over the whole batch; row ``1 + k`` over the samples of class ``k`` (label-weighted for float
        labels). Under DDP all-reduce both tensors with SUM before :meth:`update_w_avg`.

        Args:
            ws: (N, w_dim) or (N, num_ws, w_dim) (the first w is used) mapping outputs, without truncation.
            label: the batch's labels (required for a conditional model).

        Returns:
            sums (1 + num_classes, w_dim) and counts (1 + num_classes,), float32.
        """
        w = (ws[:, 0] if ws.ndim == 3 else ws).detach().float()
        rows = [w.sum(dim=0, keepdim=True)]
        counts = [torch.full((1,), float(w.shape[0]), device=w.device)]
        if self.num_classes:
            weights = label_weights(label, self.num_classes, batch=w.shape[0], where="Generator.mapping").float()
            rows.append(weights.t() @ w)
            counts.append(weights.sum(dim=0))
        return torch.cat(rows), torch.cat(counts)

    @torch.no_grad()
    def update_w_avg(self, sums: Tensor, counts: Tensor, *, beta: float | None = None) -> None:
        """One EMA step of ``w_avg`` (and of every ``class_w_avg`` row whose class has a non-zero count).

        ``avg <- beta * avg + (1 - beta) * sums / counts``, row by row, from :meth:`w_stats` (summed over ranks).

        Args:
            sums: (1 + num_classes, w_dim) sums.
            counts: (1 + num_classes,) counts.
            beta: decay (None: the constructor's ``w_avg_beta``).
        """
        beta = self.w_avg_beta if beta is None else float(beta)
        rows = 1 + self.num_classes
        if sums.shape != (rows, self.w_dim) or counts.shape != (rows,):
            raise ValueError(
                f"update_w_avg expects sums ({rows}, {self.w_dim}) and counts ({rows},), got "
                f"{tuple(sums.shape)} and {tuple(counts.shape)}"
            )
        sums = sums.to(self.w_avg)
        counts = counts.to(self.w_avg)
        means = sums / counts.clamp_min(1e-8)[:, None]
        present = (counts > 0)[:, None]
        avgs = self.w_avg[None] if self.class_w_avg is None else torch.cat([self.w_avg[None], self.class_w_avg])
        new = torch.where(present, means.lerp(avgs, beta), avgs)
        self.w_avg.copy_(new[0])
        if self.class_w_avg is not None:
            self.class_w_avg.copy_(new[1:])
