"""Synthetic patients: tissue values in the published ranges, registration, determinism, noise statistics."""
import numpy as np
import pytest
from scipy import ndimage, stats

from data import phantoms as P
from data.masks import body_mask


@pytest.fixture(scope="module")
def patient():
    return P.make_patient(7, shape=(96, 80, 40), spacing=(1.0, 1.0, 2.5), n_lesions=(2, 2))


def _median(vol, labels, tissue):
    """Median inside the tissue, away from its edges (no partial-volume voxels)."""
    core = ndimage.binary_erosion(labels == tissue)
    return float(np.median(vol[core if core.any() else labels == tissue]))


def test_ct_hounsfield_units_per_tissue(patient):
    ct, lab = patient.ct.array, patient.labels
    assert np.all(ct == np.round(ct)), "CT is stored as integer HU"
    assert abs(_median(ct, lab, P.AIR) + 1000) < 30
    assert -850 < _median(ct, lab, P.LUNG) < -750
    assert -150 < _median(ct, lab, P.FAT) < -60  # fat: -150..-50 HU clinically
    assert 20 < _median(ct, lab, P.SOFT) < 60
    assert 700 <= _median(ct, lab, P.CORTICAL) <= 1500
    assert 600 < _median(ct, lab, P.MARROW) < 1100  # trabecular bone, blurred by the cortical shell


def test_mr_t1_contrast_and_rician_background(patient):
    mr, lab = patient.mr.array, patient.labels
    fat, soft, bone, lung = (_median(mr, lab, t) for t in (P.FAT, P.SOFT, P.CORTICAL, P.LUNG))
    assert fat > 1.5 * soft > 4 * bone, "T1: fat bright, cortical bone dark"
    assert lung < 0.2 * soft
    # Background (zero signal) of a Rician magnitude image is Rayleigh distributed with sigma = noise level.
    bg = mr[lab == P.AIR]
    bg = bg[:5000]
    sigma = stats.rayleigh.fit(bg, floc=0)[1]
    assert 13 < sigma < 17
    assert stats.kstest(bg, "rayleigh", args=(0, sigma)).pvalue > 1e-3


def test_pet_suv_values(patient):
    pet, lab = patient.pet.array, patient.labels
    assert 0.7 < _median(pet, lab, P.SOFT) < 1.3, "background about SUV 1"
    assert 2.0 <= _median(pet, lab, P.LIVER) <= 3.0
    assert _median(pet, lab, P.BRAIN) > 2.5 * _median(pet, lab, P.LIVER) * 0.9
    assert all(5 <= s <= 20 for s in patient.lesion_suv) and len(patient.lesion_suv) >= 1
    lesion = patient.lesion_mask.array > 0
    assert lesion.sum() > 0
    assert pet[lesion].max() > 3.0, "lesions are hot after the 6 mm PSF"
    assert pet.min() >= 0


def test_registered_geometry_and_non_identity_affine(patient):
    a = patient.ct.affine
    for v in (patient.mr, patient.pet, patient.lesion_mask):
        assert v.shape == patient.ct.shape
        np.testing.assert_array_equal(v.affine, a)
    assert patient.ct.spacing == pytest.approx((1.0, 1.0, 2.5))
    assert not np.allclose(a[:3, :3], np.diag(np.diag(a[:3, :3]))), "in-plane rotation present"
    assert patient.ct.modality == "CT" and patient.mr.modality == "MR" and patient.pet.modality == "PT"


def test_determinism_and_seed_dependence():
    a = P.make_patient(3, shape=(48, 40, 16))
    b = P.make_patient(3, shape=(48, 40, 16))
    c = P.make_patient(4, shape=(48, 40, 16))
    for k in ("ct", "mr", "pet"):
        np.testing.assert_array_equal(getattr(a, k).array, getattr(b, k).array)
    assert not np.array_equal(a.ct.array, c.ct.array)


def test_body_mask_matches_phantom_anatomy(patient):
    m = body_mask(patient.ct.array)
    truth = patient.labels != P.AIR
    dice = 2 * (m & truth).sum() / (m.sum() + truth.sum())
    assert dice > 0.98
    assert m[patient.labels == P.LUNG].all(), "lungs are inside the body"


def test_demo_splits_are_disjoint():
    ids = [f"p{i}" for i in range(10)]
    s = P.demo_splits(ids)
    assert not set(s["train"]) & set(s["val"]) and not set(s["train"]) & set(s["test"])
    assert not set(s["val"]) & set(s["test"])
    assert set(s["train"]) | set(s["val"]) | set(s["test"]) == set(ids)
    assert not set(s["train_ct"]) & set(s["train_mr"]) and set(s["train_ct"]) | set(s["train_mr"]) == set(s["train"])
    with pytest.raises(ValueError, match="at least 4"):
        P.demo_splits(ids[:3])
