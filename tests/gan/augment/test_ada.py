"""ADA against independent references: x-flip = torch.flip, quarter turns = torch.rot90, integer translation =
numpy reflect padding + crop, resampled ops = scipy map_coordinates (bilinear, mirror), colour ops = Householder /
Rodrigues / luma-chroma formulas in numpy; p = 0 is the identity exactly, p = 1 applies every op; the p-update
rule moves p towards its target at the documented rate."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
import torch

from gan.augment import AdaController, AdaptiveAugment, ada_p_step, reflect_index

torch.set_num_threads(1)

GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOUR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
LUMA = np.ones(3) / math.sqrt(3)


def only(op: str, p: float = 1.0) -> AdaptiveAugment:
    """A pipeline with one transform switched on."""
    return AdaptiveAugment(p=p, **{name: (1.0 if name == op else 0.0) for name in GEOMETRIC + COLOUR})


def images(n: int = 32, c: int = 3, h: int = 8, w: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


def draw(aug: AdaptiveAugment, x: torch.Tensor, seed: int = 1):
    params = aug.sample_params(x.shape[0], height=x.shape[2], width=x.shape[3],
                               generator=torch.Generator().manual_seed(seed))
    return params, aug.apply(x, params)


def np_translate_reflect(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Content moved dx right and dy down, the uncovered border filled from the reflected image."""
    c, h, w = img.shape
    m = max(abs(dx), abs(dy))
    padded = np.pad(img, ((0, 0), (m, m), (m, m)), mode="reflect")
    return padded[:, m - dy : m - dy + h, m - dx : m - dx + w]


# ----------------------------------------------------------------------------------------- exact geometric ops
def test_p_zero_is_the_identity_exactly():
    x = images()
    for aug in (AdaptiveAugment(), AdaptiveAugment(p=0.0)):
        out = aug(x, generator=torch.Generator().manual_seed(0))
        assert torch.equal(out, x)


def test_xflip_equals_torch_flip_on_the_drawn_samples():
    x = images(n=40)
    params, out = draw(only("xflip"), x)
    flipped = params.xflip
    assert 10 < int(flipped.sum()) < 30  # at p = 1 each sample is flipped with probability 1/2
    for n in range(40):
        ref = torch.flip(x[n], dims=[-1]) if flipped[n] else x[n]
        assert torch.equal(out[n], ref)


def test_rot90_equals_torch_rot90_and_draws_all_four_turns():
    x = images(n=64)
    params, out = draw(only("rotate90"), x)
    assert set(params.rot90.tolist()) == {0, 1, 2, 3}
    for n in range(64):
        assert torch.equal(out[n], torch.rot90(x[n], int(params.rot90[n]), dims=(-2, -1)))


def test_integer_translation_equals_reflect_padding_and_crop():
    x = images(n=48, h=16, w=16)
    params, out = draw(only("xint"), x)
    shifts = params.shift
    assert shifts.abs().max().item() <= round(0.125 * 16) and (shifts != 0).any()
    for n in range(48):
        dx, dy = (int(v) for v in shifts[n])
        np.testing.assert_array_equal(out[n].numpy(), np_translate_reflect(x[n].numpy(), dx, dy))


def test_the_exact_ops_compose_flip_then_rotate_then_translate():
    x = images(n=32, h=12, w=12)
    aug = AdaptiveAugment(p=1.0, **{name: 0.0 for name in GEOMETRIC[3:] + COLOUR})
    params, out = draw(aug, x)
    for n in range(32):
        ref = torch.flip(x[n], dims=[-1]) if params.xflip[n] else x[n]
        ref = torch.rot90(ref, int(params.rot90[n]), dims=(-2, -1)).numpy()
        ref = np_translate_reflect(ref, int(params.shift[n, 0]), int(params.shift[n, 1]))
        np.testing.assert_array_equal(out[n].numpy(), ref)


def test_reflect_index_matches_numpy_reflect():
    idx = torch.arange(-20, 25)
    ref = np.pad(np.arange(7), 20, mode="reflect")[:45]
    np.testing.assert_array_equal(reflect_index(idx, 7).numpy(), ref)


def test_quarter_turns_need_square_images_other_ops_do_not():
    x = images(n=8, h=8, w=12)
    with pytest.raises(ValueError, match="square"):
        only("rotate90")(x, generator=torch.Generator().manual_seed(0))
    aug = AdaptiveAugment(p=1.0, rotate90=0.0)
    assert aug(x, generator=torch.Generator().manual_seed(0)).shape == x.shape


# ------------------------------------------------------------------------------------- resampled geometric ops
def _np_affine_reference(img: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Bilinear sampling at inverse @ (pixel-centred output coords), mirror (numpy 'reflect') extension."""
    c, h, w = img.shape
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pts = np.stack([cols + 0.5 - w / 2, rows + 0.5 - h / 2, np.ones_like(rows, dtype=float)]).reshape(3, -1)
    src = inverse @ pts
    coords = [src[1] + h / 2 - 0.5, src[0] + w / 2 - 0.5]
    return np.stack([scipy.ndimage.map_coordinates(img[k], coords, order=1, mode="mirror") for k in range(c)]).reshape(
        c, h, w
    )


@pytest.mark.parametrize("op", ["scale", "rotate", "aniso", "xfrac"])
def test_resampled_ops_equal_bilinear_sampling_with_mirror_padding(op):
    x = images(n=6, h=12, w=12)
    params, out = draw(only(op), x)
    assert params.geometric_active.all()
    for n in range(6):
        ref = _np_affine_reference(x[n].numpy(), params.geometric[n].double().numpy())
        np.testing.assert_allclose(out[n].numpy(), ref, atol=1e-5)


def test_resampling_far_outside_the_image_keeps_reflecting():
    from gan.augment import affine_resample

    x = images(n=2, h=9, w=7)
    inv = torch.tensor([[4.0, 0.5, 3.0], [-0.3, 3.0, -20.0], [0.0, 0.0, 1.0]], dtype=torch.float64).repeat(2, 1, 1)
    for n in range(2):
        ref = _np_affine_reference(x[n].numpy(), inv[n].numpy())
        np.testing.assert_allclose(affine_resample(x, inv)[n].numpy(), ref, atol=1e-10)


def test_resampled_quarter_turn_and_integer_shift_agree_with_the_exact_ops():
    from gan.augment import affine_resample

    x = images(n=2, h=10, w=10)
    quarter = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).repeat(2, 1, 1)  # output -> input
    torch.testing.assert_close(affine_resample(x, quarter), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    shift = torch.tensor([[1.0, 0.0, -3.0], [0.0, 1.0, 2.0], [0.0, 0.0, 1.0]]).repeat(2, 1, 1)  # dx = 3, dy = -2
    ref = np.stack([np_translate_reflect(x[n].numpy(), 3, -2) for n in range(2)])
    np.testing.assert_allclose(affine_resample(x, shift).numpy(), ref, atol=1e-5)
    zoom = torch.diag(torch.tensor([0.5, 0.5, 1.0])).repeat(2, 1, 1)  # 2x magnification about the centre
    big = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(affine_resample(x, zoom), big[..., 5:15, 5:15], atol=1e-5, rtol=0)


def test_resampled_op_parameters_follow_their_distributions():
    n = 4000

    def params(op):
        return only(op).sample_params(n, height=32, width=32, generator=torch.Generator().manual_seed(5)).geometric

    s = params("scale")
    torch.testing.assert_close(s[:, 0, 0], s[:, 1, 1])
    assert torch.log2(1 / s[:, 0, 0]).std().item() == pytest.approx(0.2, abs=0.01)
    a = params("aniso")
    torch.testing.assert_close(a[:, 0, 0] * a[:, 1, 1], torch.ones(n))
    assert torch.log2(1 / a[:, 0, 0]).std().item() == pytest.approx(0.2, abs=0.01)
    r = params("rotate")[:, :2, :2].double()
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(2, dtype=torch.float64).expand(n, 2, 2), atol=1e-6,
                               rtol=0)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(n, dtype=torch.float64), atol=1e-6, rtol=0)
    assert abs(r[:, 0, 0].mean().item()) < 0.05  # angles uniform on the circle: E[cos] = 0
    t = params("xfrac")[:, :2, 2] / 32
    assert t.std(dim=0).tolist() == pytest.approx([0.125, 0.125], abs=0.006)


# --------------------------------------------------------------------------------------------- colour ops
def test_brightness_adds_one_offset_per_sample_with_std_0_2():
    x = images(n=4000, h=2, w=2)
    params, out = draw(only("brightness"), x)
    diff = (out - x).flatten(1)
    torch.testing.assert_close(diff, diff[:, :1].expand_as(diff), atol=1e-6, rtol=0)
    assert diff[:, 0].std().item() == pytest.approx(0.2, abs=0.01)


def test_contrast_scales_by_one_lognormal_factor_per_sample():
    x = images(n=4000, h=2, w=2)
    params, out = draw(only("contrast"), x)
    ratio = (out / x).flatten(1)
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5, rtol=1e-5)
    assert torch.log2(ratio[:, 0]).std().item() == pytest.approx(0.5, abs=0.02)


def test_luma_flip_is_the_householder_reflection_of_the_luma_axis():
    x = images(n=40, h=3, w=3)
    params, out = draw(only("lumaflip"), x)
    rgb = x.permute(0, 2, 3, 1).numpy()
    flipped = rgb - 2 * (rgb @ LUMA)[..., None] * LUMA
    changed = [not torch.allclose(out[n], x[n]) for n in range(40)]
    assert 8 < sum(changed) < 32
    for n in range(40):
        ref = flipped[n] if changed[n] else rgb[n]
        np.testing.assert_allclose(out[n].permute(1, 2, 0).numpy(), ref, atol=1e-6)


def test_hue_rotates_about_the_luma_axis_keeping_luma_and_chroma_norm():
    x = images(n=200, h=3, w=3)
    params, out = draw(only("hue"), x)
    rgb, res = x.permute(0, 2, 3, 1).numpy(), out.permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(res @ LUMA, rgb @ LUMA, atol=1e-6)  # luma unchanged
    chroma = lambda a: a - (a @ LUMA)[..., None] * LUMA  # noqa: E731
    np.testing.assert_allclose(np.linalg.norm(chroma(res), axis=-1), np.linalg.norm(chroma(rgb), axis=-1), atol=1e-6)
    # the angle, measured from the images with numpy, is uniform on (-pi, pi)
    a, b = chroma(rgb)[:, 0, 0], chroma(res)[:, 0, 0]
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    sin = (np.cross(a, b) @ LUMA) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    theta = np.arctan2(sin, cos)
    assert theta.min() < -2.5 and theta.max() > 2.5 and abs(np.cos(theta).mean()) < 0.15
    for n in range(200):  # every pixel of a sample is rotated by the same angle (Rodrigues, numpy)
        k = np.array([[0, -LUMA[2], LUMA[1]], [LUMA[2], 0, -LUMA[0]], [-LUMA[1], LUMA[0], 0]])
        rot = np.outer(LUMA, LUMA) + (np.eye(3) - np.outer(LUMA, LUMA)) * cos[n] + k * sin[n]
        np.testing.assert_allclose(res[n], rgb[n] @ rot.T, atol=1e-5)


def test_saturation_scales_the_chroma_by_one_lognormal_factor():
    x = images(n=3000, h=2, w=2)
    params, out = draw(only("saturation"), x)
    rgb, res = x.permute(0, 2, 3, 1).numpy(), out.permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(res @ LUMA, rgb @ LUMA, atol=1e-6)
    chroma_in = rgb - (rgb @ LUMA)[..., None] * LUMA
    chroma_out = res - (res @ LUMA)[..., None] * LUMA
    s = (chroma_out * chroma_in).sum((1, 2, 3)) / (chroma_in**2).sum((1, 2, 3))
    np.testing.assert_allclose(chroma_out, s[:, None, None, None] * chroma_in, atol=1e-5)
    assert np.log2(s).std() == pytest.approx(1.0, abs=0.04)


def test_single_channel_images_allow_brightness_and_contrast_only():
    x = images(n=8, c=1)
    aug = AdaptiveAugment(p=1.0, lumaflip=0.0, hue=0.0, saturation=0.0)
    assert aug(x, generator=torch.Generator().manual_seed(0)).shape == x.shape
    with pytest.raises(ValueError, match="RGB"):
        AdaptiveAugment(p=1.0)(x, generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------------------------- the pipeline
def test_p_one_applies_every_op_and_changes_the_statistics():
    x = images(n=400, h=16, w=16)
    params, out = draw(AdaptiveAugment(p=1.0), x)
    assert params.geometric_active.all() and params.color_active.all()
    assert params.xflip.float().mean().item() == pytest.approx(0.5, abs=0.08)
    assert (params.rot90 != 0).float().mean().item() == pytest.approx(0.75, abs=0.07)
    # a shift rounds to 0 pixels when |t| < 1/32 (size 16): P(some axis moves) = 1 - (1/4)^2
    assert (params.shift != 0).any(dim=1).float().mean().item() == pytest.approx(1 - 0.25**2, abs=0.04)
    assert all(not torch.allclose(out[n], x[n]) for n in range(400))
    assert abs(out.std().item() - x.std().item()) > 0.05
    assert (out - x).abs().mean().item() > 0.3


def test_each_op_is_applied_with_probability_p():
    aug = AdaptiveAugment(p=0.4)
    params = aug.sample_params(20000, height=32, width=32, generator=torch.Generator().manual_seed(3))
    assert params.xflip.float().mean().item() == pytest.approx(0.2, abs=0.01)  # p * 1/2
    assert (params.rot90 != 0).float().mean().item() == pytest.approx(0.3, abs=0.01)  # p * 3/4
    rot = only("rotate", p=0.4).sample_params(20000, height=32, width=32, generator=torch.Generator().manual_seed(4))
    assert rot.geometric_active.float().mean().item() == pytest.approx(0.4, abs=0.01)  # two rotations, p overall
    b = only("brightness", p=0.4).sample_params(20000, height=32, width=32, generator=torch.Generator().manual_seed(5))
    assert b.color_active.float().mean().item() == pytest.approx(0.4, abs=0.01)


def test_gradients_flow_to_the_input():
    x = images(n=4, h=6, w=6).requires_grad_(True)
    aug = AdaptiveAugment(p=1.0)
    params = aug.sample_params(4, height=6, width=6, generator=torch.Generator().manual_seed(2))
    assert torch.autograd.gradcheck(lambda t: aug.apply(t, params), (x,), eps=1e-6, atol=1e-5)
    aug.apply(x, params).sum().backward()
    assert (x.grad.flatten(1).abs().sum(dim=1) > 0).all()


def test_same_generator_seed_gives_the_same_augmentation_and_slices_match_the_global_batch():
    x = images(n=8, h=16, w=16)
    aug = AdaptiveAugment(p=0.7)
    a = aug(x, generator=torch.Generator().manual_seed(11))
    b = aug(x, generator=torch.Generator().manual_seed(11))
    c = aug(x, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    params = aug.sample_params(8, height=16, width=16, generator=torch.Generator().manual_seed(11))
    for rank in range(2):  # a rank applies its slice of the global draw to its slice of the batch
        part = slice(4 * rank, 4 * rank + 4)
        torch.testing.assert_close(aug.apply(x[part], params.select(part)), a[part], atol=1e-12, rtol=0)


def test_p_is_a_saved_buffer():
    aug = AdaptiveAugment(p=0.25)
    assert "p" in aug.state_dict() and aug.state_dict()["p"].item() == 0.25
    with pytest.raises(ValueError):
        AdaptiveAugment(p=1.5)


# ------------------------------------------------------------------------------------------------ p control
def test_p_step_size_is_batch_times_interval_over_speed_kimg():
    p = torch.tensor(0.3)
    up = ada_p_step(p, torch.tensor(0.9), target=0.6, batch_size=64, interval=4, speed_kimg=500)
    down = ada_p_step(p, torch.tensor(0.1), target=0.6, batch_size=64, interval=4, speed_kimg=500)
    assert up.item() == pytest.approx(0.3 + 64 * 4 / 500_000)
    assert down.item() == pytest.approx(0.3 - 64 * 4 / 500_000)
    assert ada_p_step(torch.tensor(0.0), torch.tensor(0.0), target=0.6, batch_size=64, interval=4,
                      speed_kimg=500).item() == 0.0
    assert ada_p_step(torch.tensor(1.0), torch.tensor(1.0), target=0.6, batch_size=64, interval=4,
                      speed_kimg=500).item() == 1.0


def test_controller_raises_p_when_rt_is_above_target_and_lowers_it_below():
    ctrl = AdaController(target=0.6, interval=4, speed_kimg=500)
    aug = AdaptiveAugment(p=0.2)
    for _ in range(4):
        ctrl.observe(torch.tensor([[1.0], [2.0], [3.0], [-1.0]]))  # r_t = 0.5: below target
    rt = ctrl.update(aug.p, batch_size=4)
    assert rt.item() == pytest.approx(0.5)
    assert aug.p.item() == pytest.approx(0.2 - 4 * 4 / 500_000)
    assert ctrl.count.item() == 0 and ctrl.sign_sum.item() == 0  # reset for the next interval
    for _ in range(4):
        ctrl.observe(torch.ones(4, 1))  # r_t = 1
    ctrl.update(aug.p, batch_size=4)
    assert aug.p.item() == pytest.approx(0.2)
    assert ctrl.update(aug.p, batch_size=4) is None  # nothing observed: p unchanged
    assert set(ctrl.state_dict()) == {"sign_sum", "count"}


def test_summed_controller_states_equal_one_controller_seeing_both_halves():
    """What DDP does: all-reduce sign_sum and count (SUM) before update."""
    logits = torch.randn(16, 1)
    one, a, b = AdaController(), AdaController(), AdaController()
    one.observe(logits)
    a.observe(logits[:8])
    b.observe(logits[8:])
    a.sign_sum += b.sign_sum
    a.count += b.count
    p1, p2 = torch.tensor(0.5), torch.tensor(0.5)
    assert one.update(p1, batch_size=16).item() == a.update(p2, batch_size=16).item()
    assert p1.item() == p2.item()


def test_p_converges_to_where_rt_meets_the_target():
    """A stand-in discriminator whose r_t falls as p rises (r_t = 1 - p) drives p to 0.4 and keeps it there."""
    batch, aug = 100, AdaptiveAugment(p=0.0)
    ctrl = AdaController(target=0.6, interval=4, speed_kimg=20.0)  # step = 100 * 4 / 20000 = 0.02 per adjustment
    history = []
    for _ in range(100):
        rt = 1.0 - float(aug.p)
        n_pos = round(batch * (1 + rt) / 2)
        ctrl.observe(torch.cat([torch.ones(n_pos), -torch.ones(batch - n_pos)]))
        ctrl.update(aug.p, batch_size=batch)
        history.append(float(aug.p))
    assert history[9] == pytest.approx(0.2, abs=1e-6)  # ten adjustments of +0.02
    assert all(abs(p - 0.4) <= 0.021 for p in history[25:])
