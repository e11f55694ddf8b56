"""Style mixing: which ws a layer range names, and the row x column grid of mixed images.

Layer indices are indices into ``num_ws`` (``ws[:, j]``). Two ws belong to each resolution, as in the StyleGAN
papers: index ``j`` is counted at resolution ``2 ** (j // 2 + 2)`` (0, 1: 4 px; 2, 3: 8 px; 4, 5: 16 px; ...), so
an R-pixel generator has ``num_ws = 2 * log2(R) - 2`` and its last two ws are at R px. Presets
(:func:`preset_layers`), with ``top = min(64, R)``:

========  ==========================  ===========  ===========  ===========
preset    resolutions                 R = 1024     R = 256      R = 32
========  ==========================  ===========  ===========  ===========
coarse    4 and 8 px                  0-3          0-3          0-3
middle    16 px up to below ``top``   4-7          4-7          4-5
fine      ``top`` px and above        8-17         8-13         6-7
========  ==========================  ===========  ===========  ===========

For R >= 64 these are the papers' coarse (4-8 px), middle (16-32 px) and fine (64 px and up) styles; smaller
generators have no 64 px layers, so their last resolution is "fine".
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import Tensor

from gan.nets.stylegan2 import Generator, NoiseMode
from gan.style.sampling import Label, sample_w, synthesize

LayerPreset = Literal["coarse", "middle", "fine"]
PRESETS: tuple[str, ...] = get_args(LayerPreset)
#: Value of the blank top-left cell ``[0, 0]`` of a style-mixing grid (black after quantisation).
BLANK = -1.0

__all__ = ["BLANK", "PRESETS", "LayerPreset", "format_layers", "mix_ws", "preset_layers", "style_layers", "style_mix",
           "style_mix_ws", "ws_resolution"]


def ws_resolution(index: int) -> int:
    """The resolution a ws index is counted at: ``2 ** (index // 2 + 2)``.

    Args:
        index: index into num_ws.
    """
    return 2 ** (index // 2 + 2)


def preset_layers(preset: LayerPreset, *, num_ws: int) -> list[int]:
    """The ws indices of a preset (see the table in the module docstring).

    Args:
        preset: ``"coarse"``, ``"middle"`` or ``"fine"``.
        num_ws: the generator's ``num_ws``.

    Raises:
        ValueError: an unknown preset, or one with no layers at this resolution.
    """
    if preset not in PRESETS:
        raise ValueError(f"layer preset must be one of {PRESETS}, got {preset!r}")
    resolution = ws_resolution(num_ws - 1)
    top = min(64, resolution)
    res = [ws_resolution(j) for j in range(num_ws)]
    if preset == "coarse":
        layers = [j for j, r in enumerate(res) if r <= 8]
    elif preset == "middle":
        layers = [j for j, r in enumerate(res) if 16 <= r < top]
    else:
        layers = [j for j, r in enumerate(res) if r >= top]
    if not layers:
        raise ValueError(f"the {preset!r} preset has no layers for a {resolution} px generator; give a range")
    return layers


def style_layers(spec: str | Sequence[int], *, num_ws: int) -> list[int]:
    """Sorted, distinct ws indices from a preset name, a range text (``"0-3"``, ``"4-7,10"``, ``"5"``) or indices.

    Args:
        spec: a preset of :data:`PRESETS`, comma-separated indices and inclusive ranges ``a-b``, or a sequence
            of indices; ``""`` names no layer.
        num_ws: the generator's ``num_ws`` (indices must lie in ``[0, num_ws)``).

    Raises:
        ValueError: a malformed text, an empty or reversed range, or an index outside ``[0, num_ws)``.
    """
    if isinstance(spec, str):
        text = spec.strip()
        if text in PRESETS:
            return preset_layers(text, num_ws=num_ws)  # type: ignore[arg-type]
        indices: list[int] = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, sep, high = part.partition("-")
            if not low.strip().isdigit() or (sep and not high.strip().isdigit()):
                raise ValueError(f"layers {spec!r}: expected a preset {PRESETS}, indices and ranges like 0-3,6")
            a, b = int(low), int(high) if sep else int(low)
            if b < a:
                raise ValueError(f"layers {spec!r}: range {part!r} is reversed")
            indices.extend(range(a, b + 1))
    else:
        indices = [int(j) for j in spec]
    bad = [j for j in indices if not 0 <= j < num_ws]
    if bad:
        raise ValueError(f"layers {bad} outside [0, {num_ws}) (the generator has num_ws={num_ws}: 0-{num_ws - 1})")
    return sorted(set(indices))


def format_layers(layers: Sequence[int]) -> str:
    """Indices as compact range text, e.g. ``[0, 1, 2, 3, 6]`` -> ``"0-3,6"`` (``""`` for none).

    Args:
        layers: ws indices.
    """
    parts, run = [], []
    for j in sorted(set(int(i) for i in layers)):
        if run and j == run[-1] + 1:
            run.append(j)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [j]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts)


def mix_ws(w_rows: Tensor, w_cols: Tensor, layers: Sequence[int]) -> Tensor:
    """Every (row, column) mix of two sets of ws, (rows, cols, num_ws, w_dim): ``[i, j]`` holds ``w_rows[i]`` at
    ``layers`` and ``w_cols[j]`` at every other index.

    Args:
        w_rows: (rows, num_ws, w_dim) ws that give the ``layers``.
        w_cols: (cols, num_ws, w_dim) ws that give every other layer.
        layers: indices into num_ws (checked; may be empty).

    Raises:
        ValueError: ws of different shapes per sample, or an index outside ``[0, num_ws)``.
    """
    if w_rows.ndim != 3 or w_rows.shape[1:] != w_cols.shape[1:] or w_cols.ndim != 3:
        raise ValueError(f"need (rows, num_ws, w_dim) and (cols, num_ws, w_dim) ws, got {tuple(w_rows.shape)} and "
                         f"{tuple(w_cols.shape)}")
    layers = style_layers(layers, num_ws=w_rows.shape[1])
    mixed = w_cols[None].repeat(w_rows.shape[0], 1, 1, 1)
    if layers:
        mixed[:, :, layers] = w_rows[:, None, layers].to(mixed.dtype)
    return mixed


@torch.no_grad()
def style_mix_ws(
    G: Generator,
    w_rows: Tensor,
    w_cols: Tensor,
    layers: Sequence[int],
    *,
    noise_mode: NoiseMode = "const",
    noise: Sequence[Tensor] | None = None,
    batch_size: int = 16,
) -> Tensor:
    """The style-mixing grid of given ws (for example a projected tile's w against seeds' ws); see :func:`style_mix`.

    Args:
        G: the generator.
        w_rows: (rows, num_ws, w_dim) ws that give the ``layers``.
        w_cols: (cols, num_ws, w_dim) ws that give every other layer.
        layers: ws indices taken from the rows (may be empty).
        noise_mode: noise of the synthesis network (when ``noise`` is None).
        noise: explicit noise maps for every image, one per synthesis layer, each broadcastable to (1, 1, r, r)
            (for example :attr:`gan.style.Projection.noise`), instead of ``noise_mode``.
        batch_size: images per synthesis call.
    """
    layers = style_layers(layers, num_ws=G.num_ws)
    rows, cols = w_rows.shape[0], w_cols.shape[0]
    mixed = mix_ws(w_rows, w_cols, layers)
    ws = torch.cat([w_rows, w_cols, mixed.flatten(0, 1)])
    images = synthesize(G, ws, noise_mode=noise_mode, noise=noise, batch_size=batch_size)
    img_rows, img_cols, img_mixed = images.split([rows, cols, rows * cols])
    grid = images.new_full((rows + 1, cols + 1, *images.shape[1:]), BLANK)
    grid[0, 1:] = img_cols
    grid[1:, 0] = img_rows
    grid[1:, 1:] = img_mixed.reshape(rows, cols, *images.shape[1:])
    return grid


@torch.no_grad()
def style_mix(
    G: Generator,
    row_seeds: Sequence[int],
    col_seeds: Sequence[int],
    layers: Sequence[int] | str,
    label: Label = None,
    psi: float = 1.0,
    noise_mode: NoiseMode = "const",
    *,
    batch_size: int = 16,
) -> Tensor:
    """The style-mixing grid, (rows + 1, cols + 1, C, H, W) in [-1, 1].

    ``[0, j + 1]`` is column seed j's image, ``[i + 1, 0]`` row seed i's, and ``[i + 1, j + 1]`` the image whose
    ``layers`` ws come from row seed i and all other ws from column seed j. ``[0, 0]`` is blank, filled with
    :data:`BLANK` (-1). Every image uses the same ``label``, ``psi`` and ``noise_mode`` (``"const"`` by default, so
    the margins equal the seeds' own images; ``"random"`` draws new noise for every cell). Truncation is applied to
    each seed's ws before mixing (the same as truncating the mixed ws: both use the class's centre at every layer).

    Args:
        G: the generator.
        row_seeds: seeds that give the ``layers`` ws.
        col_seeds: seeds that give every other ws.
        layers: ws indices taken from the row seed, or a preset / range text (see :func:`style_layers`); may be
            empty.
        label: None (unconditional) or one class index for the whole grid.
        psi: truncation of every w.
        noise_mode: noise of the synthesis network.
        batch_size: images per synthesis call.

    Raises:
        ValueError: a per-sample label tensor, a bad seed, or a layer outside ``[0, G.num_ws)``.
    """
    if isinstance(label, Tensor):
        raise ValueError("style_mix takes one class for the whole grid: an int index or None")
    layers = style_layers(layers, num_ws=G.num_ws)
    w_rows, w_cols = sample_w(G, list(row_seeds), label, psi), sample_w(G, list(col_seeds), label, psi)
    return style_mix_ws(G, w_rows, w_cols, layers, noise_mode=noise_mode, batch_size=batch_size)
