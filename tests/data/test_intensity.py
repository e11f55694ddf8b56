"""Intensity windows: exact inverse inside the window, values checked against numpy's own interpolation."""
import numpy as np
import pytest
import torch

from data.intensity import CTWindow, MRPercentileWindow, PETWindow, WindowParams, default_window, from_unit, to_unit


def test_ct_window_matches_linear_interpolation_and_round_trips():
    hu = np.linspace(-1024, 3000, 1001).astype(np.float32)
    p = CTWindow().fit()
    y = to_unit(hu, p)
    np.testing.assert_allclose(y, np.interp(hu, [-1024, 3000], [-1, 1]), atol=1e-6)
    np.testing.assert_allclose(from_unit(y, p), hu, atol=3000 * 2e-7 * 4)  # float32 rounding only


def test_ct_window_clips_outside_and_keeps_inside():
    p = CTWindow(-1000, 1000).fit()
    y = to_unit(np.array([-3000.0, -1000.0, 0.0, 1000.0, 5000.0]), p)
    np.testing.assert_allclose(y, [-1, -1, 0, 1, 1])
    unclipped = to_unit(np.array([2000.0]), p, clip=False)
    np.testing.assert_allclose(unclipped, [2.0])
    np.testing.assert_allclose(from_unit(unclipped, p), [2000.0])


def test_pet_log_window_is_log1p_then_linear_and_inverts():
    suv = np.array([0.0, 0.5, 1.0, 2.5, 7.0, 19.9], dtype=np.float64)
    p = PETWindow(0, 20, log=True).fit()
    y = to_unit(suv, p)
    expected = np.log1p(suv) / np.log1p(20.0) * 2 - 1
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    np.testing.assert_allclose(from_unit(y, p), suv, atol=1e-12)


def test_mr_percentiles_travel_with_the_sample_and_invert_exactly():
    rng = np.random.default_rng(0)
    mr = rng.gamma(2.0, 200.0, size=(20, 20, 10))
    p = MRPercentileWindow(1.0, 99.0).fit(mr)
    lo, hi = np.percentile(mr, [1.0, 99.0])
    assert p.low == pytest.approx(lo) and p.high == pytest.approx(hi)
    y = to_unit(mr, p)
    inside = (mr >= lo) & (mr <= hi)
    np.testing.assert_allclose(from_unit(y, p)[inside], mr[inside], rtol=1e-10)
    assert y.min() == -1 and y.max() == 1
    again = WindowParams(**p.as_dict())  # a sample's window dict rebuilds the same mapping
    np.testing.assert_allclose(from_unit(y, again), from_unit(y, p))


def test_torch_and_numpy_agree():
    p = PETWindow(0, 20, log=True).fit()
    x = np.linspace(0, 25, 50)
    np.testing.assert_allclose(to_unit(torch.from_numpy(x), p).numpy(), to_unit(x, p), rtol=1e-12)
    np.testing.assert_allclose(from_unit(torch.from_numpy(x / 25), p).numpy(), from_unit(x / 25, p), rtol=1e-12)


def test_bad_windows_are_refused():
    with pytest.raises(ValueError, match="low < high"):
        CTWindow(100, 100).fit()
    with pytest.raises(ValueError, match="low >= 0"):
        PETWindow(-1, 20, log=True).fit()
    with pytest.raises(ValueError, match="needs the volume"):
        MRPercentileWindow().fit(None)
    with pytest.raises(ValueError, match="no default intensity window"):
        default_window("US")
    assert isinstance(default_window("PT"), PETWindow)
