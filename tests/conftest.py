"""Shared fixtures: small phantom patients on disk (written with nibabel directly, not the project's writers)."""
from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

SMALL_SHAPE = (64, 56, 24)


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six small patients as ``<dir>/<patient>/{ct,mr,pet,lesion_mask}.nii.gz``."""
    from data.phantoms import make_patient

    root = tmp_path_factory.mktemp("phantoms")
    for i in range(6):
        p = make_patient(100 + i, shape=SMALL_SHAPE, patient_id=f"p{i}")
        d = root / p.patient_id
        d.mkdir()
        for key, v in (("ct", p.ct), ("mr", p.mr), ("pet", p.pet), ("lesion_mask", p.lesion_mask)):
            nib.save(nib.Nifti1Image(v.array, v.affine), d / f"{key}.nii.gz")
    return root


@pytest.fixture(scope="session")
def slide_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small phantom slides (0.25 um/px, every region class) with their region CSVs."""
    from data.slides.phantom import make_phantom_slide

    root = tmp_path_factory.mktemp("slides")
    for i in range(3):
        make_phantom_slide(root / f"s{i}.svs", width=2048, height=1536, seed=i)
    return root
