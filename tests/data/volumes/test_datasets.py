"""Slice/2.5D/3D sampling checked against nibabel reads and the window formula; geometry checks; workers."""
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data.errors import VolumeError
from data.volumes import PatientRecord, UnpairedDataset, VolumeAugment, VolumeDataset, find_patients


def _ref(path):
    return np.asarray(nib.load(str(path)).get_fdata(), dtype=np.float64)


def _ct_unit(hu):  # the CT window written out independently: [-1024, 3000] -> [-1, 1], clipped
    return np.clip((np.clip(hu, -1024, 3000) + 1024) / 4024 * 2 - 1, -1, 1)


def test_find_patients_and_2d_slices_equal_windowed_nibabel(phantom_dir):
    recs = find_patients(phantom_dir, ["ct", "pet"])
    assert [r.patient_id for r in recs] == [f"p{i}" for i in range(6)]
    ds = VolumeDataset(recs[:2], image_keys=["ct", "pet"], mode="2d", min_foreground=0.0)
    assert len(ds) == 2 * 24
    item = ds[30]
    ct = _ref(phantom_dir / "p1" / "ct.nii.gz")
    pet = _ref(phantom_dir / "p1" / "pet.nii.gz")
    assert item["patient"] == "p1" and item["slice"] == 6
    np.testing.assert_allclose(item["ct"][0].numpy(), _ct_unit(ct[:, :, 6]), atol=1e-6)
    np.testing.assert_allclose(item["pet"][0].numpy(), np.clip(pet[:, :, 6], 0, 20) / 10 - 1, atol=1e-6)
    assert item["window"]["ct"] == {"low": -1024.0, "high": 3000.0, "log": False}


def test_2p5d_stacks_neighbours_and_repeats_edges(phantom_dir):
    recs = find_patients(phantom_dir, ["ct", "mr"])[:1]
    ds = VolumeDataset(recs, image_keys=["ct", "mr"], mode="2.5d", slices=5, min_foreground=0.0)
    ct = _ref(phantom_dir / "p0" / "ct.nii.gz")
    item = ds[10]
    assert item["ct"].shape == (5, 64, 56) and item["body_mask"].shape == (1, 64, 56)
    for c, k in enumerate(range(8, 13)):
        np.testing.assert_allclose(item["ct"][c].numpy(), _ct_unit(ct[:, :, k]), atol=1e-6)
    first = ds[0]["ct"]
    np.testing.assert_allclose(first[0].numpy(), _ct_unit(ct[:, :, 0]), atol=1e-6)  # slices -2, -1 repeat slice 0
    np.testing.assert_allclose(first[1].numpy(), _ct_unit(ct[:, :, 0]), atol=1e-6)
    # MR percentiles are fitted on the whole volume and travel with the sample
    mr = _ref(phantom_dir / "p0" / "mr.nii.gz")
    lo, hi = np.percentile(mr.astype(np.float32), [0.5, 99.5])
    assert item["window"]["mr"]["low"] == pytest.approx(lo, rel=1e-5)
    assert item["window"]["mr"]["high"] == pytest.approx(hi, rel=1e-5)


def test_3d_patches_crop_the_same_place_in_every_key_and_pad(phantom_dir):
    recs = find_patients(phantom_dir, ["ct", "pet", "lesion_mask"])[:2]
    ds = VolumeDataset(recs, image_keys=["ct", "pet"], mask_keys=["lesion_mask"], mode="3d", patch_size=(32, 32, 32),
                       samples_per_volume=3, seed=1)
    assert len(ds) == 6
    item = ds[4]
    assert item["ct"].shape == (1, 32, 32, 32)
    ct = _ref(phantom_dir / item["patient"] / "ct.nii.gz")
    pet = _ref(phantom_dir / item["patient"] / "pet.nii.gz")
    # find the crop offset from the CT and check the PET patch comes from the same place
    patch = item["ct"][0].numpy()
    z0 = (32 - 24) // 2  # K=24 < 32: centred padding with -1
    assert np.all(patch[:, :, :z0] == -1) and np.all(patch[:, :, z0 + 24:] == -1)
    hits = [(i, j) for i in range(64 - 32 + 1) for j in range(56 - 32 + 1)
            if np.allclose(patch[:, :, z0:z0 + 24], _ct_unit(ct[i:i + 32, j:j + 32, :]), atol=1e-6)]
    assert len(hits) == 1
    i, j = hits[0]
    pet_ref = np.clip(pet[i:i + 32, j:j + 32], 0, 20) / 10 - 1
    np.testing.assert_allclose(item["pet"][0, :, :, z0:z0 + 24].numpy(), pet_ref, atol=1e-6)


def test_whole_volume_mode_and_body_mask_from_ct(phantom_dir):
    ds = VolumeDataset(find_patients(phantom_dir, ["ct", "mr"])[:1], image_keys=["ct", "mr"], mode="3d")
    item = ds[0]
    assert len(ds) == 1 and item["ct"].shape == (1, 64, 56, 24)
    ct = _ref(phantom_dir / "p0" / "ct.nii.gz")
    body = item["body_mask"][0].numpy() > 0
    assert body[ct > -500].mean() > 0.99 and (ct[~body] < -500).mean() > 0.99  # lungs (-800) are inside


def test_paired_geometry_mismatch_names_the_file(phantom_dir, tmp_path):
    d = tmp_path / "bad"
    shutil.copytree(phantom_dir / "p0", d)
    img = nib.load(str(d / "pet.nii.gz"))
    aff = img.affine.copy()
    aff[0, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), aff), d / "pet.nii.gz")
    bad = [PatientRecord("bad", {"ct": d / "ct.nii.gz", "pet": d / "pet.nii.gz"})]
    with pytest.raises(VolumeError, match=r"pet\.nii\.gz.*affine differs"):
        VolumeDataset(bad, image_keys=["ct", "pet"])
    nib.save(nib.Nifti1Image(np.zeros((64, 56, 20), np.float32), img.affine), d / "pet.nii.gz")
    with pytest.raises(VolumeError, match=r"pet\.nii\.gz.*shape"):
        VolumeDataset(bad, image_keys=["ct", "pet"])


def test_augmentation_is_identical_for_images_and_masks(phantom_dir):
    recs = find_patients(phantom_dir, ["ct", "pet", "lesion_mask"])[:1]
    plain = VolumeDataset(recs, image_keys=["ct", "pet"], mask_keys=["lesion_mask"], mode="2d")
    aug = VolumeDataset(recs, image_keys=["ct", "pet"], mask_keys=["lesion_mask"], mode="2d",
                        transform=VolumeAugment(image_keys=["ct", "pet"], mask_keys=["body_mask", "lesion_mask"],
                                                flip_prob=1.0, rotate_prob=0.0))
    a, b = plain[5], aug[5]
    for k in ("ct", "pet", "body_mask"):
        np.testing.assert_array_equal(b[k].numpy(), a[k].flip(1).flip(2).numpy())
    rot = VolumeDataset(recs, image_keys=["ct", "pet"], mode="2d",
                        transform=VolumeAugment(image_keys=["ct", "pet"], flip_prob=0.0, rotate_prob=1.0, rotate_deg=20,
                                                elastic_prob=1.0))
    r1, r2 = rot[5], rot[5]
    assert torch.equal(r1["ct"], r2["ct"]), "augmentation is a function of (seed, epoch, index)"
    assert set(np.unique(r1["body_mask"].numpy())) <= {0.0, 1.0}
    # the rotated mask still marks the rotated body: CT above -500 HU (unit -0.236) inside, air outside
    ct_u, body = r1["ct"][0].numpy(), r1["body_mask"][0].numpy() > 0
    thr = _ct_unit(np.array(-500.0))
    assert body[ct_u > thr].mean() > 0.97 and (ct_u[~body] < thr).mean() > 0.95


def test_dataloader_with_two_workers_matches_single_process(phantom_dir):
    recs = find_patients(phantom_dir, ["ct", "mr"])
    a = VolumeDataset(recs[:3], image_keys=["ct"], mode="2d", patch_size=(32, 32),
                      transform=VolumeAugment(image_keys=["ct"], rotate_prob=0.5))
    b = VolumeDataset(recs[3:], image_keys=["mr"], mode="2d", patch_size=(32, 32))
    u = UnpairedDataset(a, b, seed=3)
    multi = list(DataLoader(u, batch_size=8, num_workers=2))
    single = list(DataLoader(u, batch_size=8, num_workers=0))
    assert len(multi) == len(single) == int(np.ceil(len(u) / 8))
    for x, y in zip(multi, single):
        assert torch.equal(x["ct"], y["ct"]) and torch.equal(x["mr"], y["mr"])
        assert x["patient_a"] == y["patient_a"]
    assert {p for batch in single for p in batch["patient_a"]} <= {"p0", "p1", "p2"}
    assert {p for batch in single for p in batch["patient_b"]} <= {"p3", "p4", "p5"}
    u.set_epoch(1)
    assert not torch.equal(next(iter(DataLoader(u, batch_size=8)))["ct"], single[0]["ct"]), "new epoch, new crops"


def test_bad_arguments():
    rec = [PatientRecord("x", {"ct": "missing.nii.gz"})]
    with pytest.raises(ValueError, match="odd number"):
        VolumeDataset(rec, image_keys=["ct"], mode="2.5d", slices=4)
    with pytest.raises(ValueError, match="no known modality"):
        VolumeDataset(rec, image_keys=["us"])
    with pytest.raises(ValueError, match="patch_size"):
        VolumeDataset(rec, image_keys=["ct"], mode="3d", patch_size=(32, 32))


def test_scale_augmentation_zooms_images_and_masks_together(phantom_dir):
    recs = find_patients(phantom_dir, ["ct"])[:1]
    plain = VolumeDataset(recs, image_keys=["ct"], mode="2d")[5]
    areas = []
    for seed in range(6):
        zoom = VolumeDataset(recs, image_keys=["ct"], mode="2d", seed=seed,
                             transform=VolumeAugment(image_keys=["ct"], flip_prob=0.0, rotate_prob=0.0, scale_prob=1.0,
                                                     scale_range=0.2))[5]
        ct_u, body = zoom["ct"][0].numpy(), zoom["body_mask"][0].numpy()
        assert ct_u.shape == plain["ct"][0].shape and set(np.unique(body)) <= {0.0, 1.0}
        thr = _ct_unit(np.array(-500.0))
        assert ((ct_u > thr) == (body > 0)).mean() > 0.97, "mask follows the zoomed image"
        areas.append(body.sum() / plain["body_mask"].sum().item())
    # isotropic zoom by f scales the area by f^2 with f in [0.8, 1.2]
    assert min(areas) >= 0.8 ** 2 - 0.05 and max(areas) <= 1.2 ** 2 + 0.05
    assert max(areas) - min(areas) > 0.05, "different samples get different zooms"
    with pytest.raises(ValueError, match="scale_range"):
        VolumeAugment(image_keys=["ct"], scale_range=1.5)
