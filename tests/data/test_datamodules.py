"""VolumeTranslationDataModule: splits by patient, unpaired sets disjoint, whole volumes for evaluation."""
import json

import pytest
import torch

from data.datamodules import VolumeTranslationDataModule, split_patients
from data.errors import VolumeError


def test_split_patients_is_disjoint_deterministic_and_complete():
    ids = [f"p{i:02d}" for i in range(20)]
    a = split_patients(ids, val_fraction=0.1, test_fraction=0.2, seed=1)
    assert a == split_patients(list(reversed(ids)), val_fraction=0.1, test_fraction=0.2, seed=1)
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (14, 2, 4)
    assert sorted(a["train"] + a["val"] + a["test"]) == ids
    with pytest.raises(ValueError, match="non-empty train"):
        split_patients(ids[:2], val_fraction=0.5, test_fraction=0.5, seed=0)


def test_unpaired_ct_to_mr(phantom_dir):
    dm = VolumeTranslationDataModule(str(phantom_dir), source="ct", target="mr", paired=False, patch_size=(32, 32),
                                     batch_size=4, val_fraction=0.2, test_fraction=0.2, seed=0)
    dm.setup("fit")
    train = dm._datasets["train"]
    ct_patients = {r.patient_id for r in train.a.records}
    mr_patients = {r.patient_id for r in train.b.records}
    assert ct_patients and mr_patients and not ct_patients & mr_patients, "unpaired sets use different patients"
    batch = next(iter(dm.train_dataloader()))
    assert batch["ct"].shape == (4, 1, 32, 32) and batch["mr"].shape == (4, 1, 32, 32)
    assert batch["ct"].min() >= -1 and batch["ct"].max() <= 1
    val = list(dm.val_dataloader())
    held = {b["patient"][0] for b in val}
    assert held and not held & (ct_patients | mr_patients), "validation patients never seen in training"
    assert val[0]["ct"].shape == (1, 1, 64, 56, 24) and val[0]["mr"].shape == (1, 1, 64, 56, 24)
    dm.setup("test")
    test = {b["patient"][0] for b in dm.test_dataloader()}
    assert test and not test & held and not test & (ct_patients | mr_patients)


def test_paired_ct_to_pet_with_lesion_masks_and_splits_file(phantom_dir, tmp_path):
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"train": ["p0", "p1", "p2", "p3"], "val": ["p4"], "test": ["p5"]}))
    dm = VolumeTranslationDataModule(str(phantom_dir), source="ct", target="pet", paired=True, splits=str(splits),
                                     mask_keys=["lesion_mask"], mode="2.5d", slices=3, batch_size=2, augment=True)
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    assert b["ct"].shape[1] == 3 and b["pet"].shape[1] == 3 and b["lesion_mask"].shape[1] == 1
    assert set(b["patient"]) <= {"p0", "p1", "p2", "p3"}
    v = next(iter(dm.val_dataloader()))
    assert v["patient"] == ["p4"] and "lesion_mask" in v and v["pet"].dim() == 5
    assert torch.all((v["lesion_mask"] == 0) | (v["lesion_mask"] == 1))


def test_bad_splits_and_keys(phantom_dir, tmp_path):
    bad = tmp_path / "splits.json"
    bad.write_text(json.dumps({"train": ["p0", "p1"], "val": ["p1"], "test": ["p5"]}))
    with pytest.raises(VolumeError, match=r"splits\.json.*p1 is in both"):
        VolumeTranslationDataModule(str(phantom_dir), splits=str(bad)).setup("fit")
    bad.write_text("{not json")
    with pytest.raises(VolumeError, match=r"splits\.json: cannot read"):
        VolumeTranslationDataModule(str(phantom_dir), splits=str(bad)).setup("fit")
    with pytest.raises(ValueError, match="source/target"):
        VolumeTranslationDataModule(str(phantom_dir), source="xray")
    with pytest.raises(VolumeError, match="no patient folder"):
        VolumeTranslationDataModule(str(tmp_path), source="ct", target="mr").setup("fit")
