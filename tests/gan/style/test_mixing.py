"""Style mixing: the grid's layout and identities (all layers from the row seed gives the row's tile, none gives the
column's), a mixed cell equals the synthesis of hand-built ws, the layer presets, and the labelled PNG."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gan.style import (
    BLANK,
    format_layers,
    preset_layers,
    sample_images,
    save_grid,
    seed_z,
    style_layers,
    style_mix,
    style_mix_ws,
    to_uint8,
)
from gan.style.grid import GAP, LABEL_WIDTH, LINE, PAD, TITLE_LINES
from tests.gan.style.tiny import tiny_generator

ROWS, COLS = [1, 2], [3, 4, 5]


@pytest.fixture(scope="module")
def G():
    return tiny_generator(3)


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_margins_are_the_seeds_tiles_and_the_corner_is_blank(G):
    grid = style_mix(G, ROWS, COLS, [0, 1], label=1, psi=0.8)
    assert grid.shape == (3, 4, 3, 32, 32)
    _close(grid[0, 1:], sample_images(G, COLS, label=1, psi=0.8))
    _close(grid[1:, 0], sample_images(G, ROWS, label=1, psi=0.8))
    assert torch.all(grid[0, 0] == BLANK)


def test_all_layers_from_the_row_seed_give_the_row_tile(G):
    grid = style_mix(G, ROWS, COLS, list(range(G.num_ws)), label=2)
    for i in range(len(ROWS)):
        for j in range(len(COLS)):
            _close(grid[i + 1, j + 1], grid[i + 1, 0])


def test_no_layer_from_the_row_seed_gives_the_column_tile(G):
    grid = style_mix(G, ROWS, COLS, [], label=2)
    for i in range(len(ROWS)):
        for j in range(len(COLS)):
            _close(grid[i + 1, j + 1], grid[0, j + 1])


def test_a_mixed_cell_is_the_synthesis_of_hand_built_ws(G):
    layers = [0, 1, 2, 3]
    grid = style_mix(G, ROWS, COLS, "0-3", label=0)
    lab = torch.zeros(1, dtype=torch.long)
    w_row = G.mapping(seed_z([ROWS[1]], G.z_dim), lab)
    w_col = G.mapping(seed_z([COLS[2]], G.z_dim), lab)
    ws = w_col.clone()
    ws[:, layers] = w_row[:, layers]
    expected = G.synthesis(ws)[0]
    _close(grid[2, 3], expected)
    assert (expected - grid[2, 0]).abs().mean() > 1e-3 and (expected - grid[0, 3]).abs().mean() > 1e-3


def test_explicit_zero_noise_maps_equal_noise_mode_none(G):
    w = G.mapping(seed_z([1, 2], G.z_dim), torch.tensor([0, 0]))
    zeros = [torch.zeros(1, 1, layer.resolution, layer.resolution) for layer in G.synthesis.noise_layers()]
    _close(style_mix_ws(G, w[:1], w[1:], [0], noise=zeros), style_mix_ws(G, w[:1], w[1:], [0], noise_mode="none"))


def test_style_mix_takes_one_label_for_the_grid(G):
    with pytest.raises(ValueError, match="one class"):
        style_mix(G, ROWS, COLS, [0], label=torch.tensor([0, 1]))


@pytest.mark.parametrize("resolution, coarse, middle, fine", [
    (32, "0-3", "4-5", "6-7"), (256, "0-3", "4-7", "8-13"), (1024, "0-3", "4-7", "8-17")])
def test_presets_follow_the_papers_resolutions(resolution, coarse, middle, fine):
    num_ws = 2 * int(np.log2(resolution)) - 2
    got = [format_layers(preset_layers(p, num_ws=num_ws)) for p in ("coarse", "middle", "fine")]
    assert got == [coarse, middle, fine]
    union = sorted(sum((preset_layers(p, num_ws=num_ws) for p in ("coarse", "middle", "fine")), []))
    assert union == list(range(num_ws)), "the presets split the layers"


def test_layer_text():
    assert style_layers("0-3,6", num_ws=8) == [0, 1, 2, 3, 6]
    assert style_layers(" 5 ", num_ws=8) == [5]
    assert style_layers("", num_ws=8) == []
    assert format_layers([6, 0, 1, 2, 3]) == "0-3,6"
    for bad in ("0-8", "3-1", "a", "1-"):
        with pytest.raises(ValueError):
            style_layers(bad, num_ws=8)


def test_saved_grid_holds_the_quantised_cells_at_the_documented_places(G, tmp_path):
    grid = style_mix(G, ROWS, COLS, "coarse", label=1)
    path = save_grid(grid, tmp_path / "mix.png", row_labels=["1", "2"], col_labels=["3", "4", "5"],
                     title="coarse from rows", provenance={"row_seeds": ROWS})
    image = np.asarray(Image.open(path).convert("RGB"))
    h = w = 32
    assert image.shape == ((TITLE_LINES + 1) * LINE + 3 * h + 2 * GAP + PAD, LABEL_WIDTH + 4 * w + 3 * GAP + PAD, 3)
    cells = to_uint8(grid)
    for i in range(3):
        for j in range(4):
            y, x = (TITLE_LINES + 1) * LINE + i * (h + GAP), LABEL_WIDTH + j * (w + GAP)
            assert np.array_equal(image[y:y + h, x:x + w], cells[i, j]), (i, j)
    assert image[:LINE].min() < 128, "the title is drawn"
    sidecar = json.loads((tmp_path / "mix.json").read_text())
    assert sidecar["provenance"]["row_seeds"] == ROWS
