"""``medsynth translate``: geometry kept, provenance written, DERIVED DICOM with its own series number, the modality
guard (declared modality and intensities, right hints for both directions), the overwrite policy."""
from __future__ import annotations

import dataclasses
import json
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest

from gan.cli import main
from gan.commands.translate import Translator, modality_mismatch
from gan.models import CycleGAN, Pix2Pix
from tests.helpers import TINY_CYCLEGAN, TINY_PIX2PIX, cpu_trainer, volume_dm


@pytest.fixture(scope="module")
def cyclegan_ckpt(phantom_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cyclegan")
    trainer = cpu_trainer(tmp, limit_val_batches=0)
    trainer.fit(CycleGAN(**TINY_CYCLEGAN), datamodule=volume_dm(phantom_dir))
    ckpt = tmp / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    return ckpt


def test_translate_keeps_geometry_and_writes_provenance(cyclegan_ckpt, phantom_dir, tmp_path):
    out = tmp_path / "out" / "mr.nii.gz"
    src = phantom_dir / "p0" / "ct.nii.gz"
    assert main(["translate", "--ckpt", str(cyclegan_ckpt), "--input", str(src), "--output", str(out)]) == 0
    a, b = nib.load(str(src)), nib.load(str(out))
    np.testing.assert_array_equal(a.affine, b.affine)
    assert a.shape == b.shape and b.get_fdata().std() > 0
    prov = json.loads(out.with_name("mr.json").read_text())
    assert prov["provenance"]["direction"] == "ct->mr" and prov["provenance"]["synthetic"] is True
    assert prov["affine"] == a.affine.tolist()
    # the output equals the module's own whole-volume translation mapped back with the training windows
    t = Translator.load(cyclegan_ckpt)
    from data.volumes import load_volume

    ref = t.translate(load_volume(src))
    np.testing.assert_allclose(b.get_fdata(), ref.array, rtol=1e-6, atol=1e-3)


def test_dicom_output_is_derived_with_its_own_series_number(cyclegan_ckpt, phantom_dir, tmp_path):
    src = phantom_dir / "p0" / "ct.nii.gz"
    dcm = tmp_path / "dcm"
    assert main(["translate", "--ckpt", str(cyclegan_ckpt), "--input", str(src), "--output", str(tmp_path / "o.nii.gz"),
                 "--dicom-out", str(dcm)]) == 0
    first = pydicom.dcmread(sorted(dcm.glob("*.dcm"))[0])
    assert "DERIVED" in first.ImageType and first.Modality == "MR"
    rev = tmp_path / "dcm_rev"
    mr = phantom_dir / "p0" / "mr.nii.gz"
    assert main(["translate", "--ckpt", str(cyclegan_ckpt), "--input", str(mr), "--output", str(tmp_path / "c.nii.gz"),
                 "--dicom-out", str(rev), "--direction", "reverse"]) == 0
    other = pydicom.dcmread(sorted(rev.glob("*.dcm"))[0])
    assert other.Modality == "CT" and other.SeriesNumber != first.SeriesNumber != 1


def test_modality_guard_checks_intensities_and_gives_the_right_hint(cyclegan_ckpt, phantom_dir, tmp_path, capsys):
    # an MR saved under a CT name, no sidecar: the intensities give it away
    mr_as_ct = tmp_path / "ct.nii.gz"
    shutil.copy(phantom_dir / "p0" / "mr.nii.gz", mr_as_ct)
    args = ["translate", "--ckpt", str(cyclegan_ckpt), "--input", str(mr_as_ct), "--output", str(tmp_path / "x.nii.gz")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no air near -1000 HU" in err and "--direction reverse" in err and "translate it mr -> ct" in err
    assert not (tmp_path / "x.nii.gz").exists()
    # a CT into the reverse direction: the hint points forward
    ct = phantom_dir / "p0" / "ct.nii.gz"
    assert main(["translate", "--ckpt", str(cyclegan_ckpt), "--input", str(ct), "--output", str(tmp_path / "y.nii.gz"),
                 "--direction", "reverse"]) == 2
    err = capsys.readouterr().err
    assert "looks like CT" in err and "--direction forward" in err
    # a declared modality that contradicts the direction
    mr_in = tmp_path / "mr_in.nii.gz"
    shutil.copy(phantom_dir / "p0" / "mr.nii.gz", mr_in)
    mr_in.with_name("mr_in.json").write_text(json.dumps({"modality": "MR"}))
    assert main(["translate", "--ckpt", str(cyclegan_ckpt), "--input", str(mr_in), "--output",
                 str(tmp_path / "z.nii.gz")]) == 2
    assert "is declared MR" in capsys.readouterr().err
    assert main(["translate", "--ckpt", str(cyclegan_ckpt), "--input", str(mr_in), "--output",
                 str(tmp_path / "ct_out.nii.gz"), "--direction", "reverse"]) == 0
    with pytest.raises(ValueError, match="translates ct -> mr"):
        main(["--debug", *args])


def test_modality_rules_on_phantom_volumes():
    from data.phantoms import make_patient

    p = make_patient(3, shape=(32, 32, 12))
    assert modality_mismatch(p.ct, "ct") is None and modality_mismatch(p.mr, "mr") is None
    assert modality_mismatch(p.pet, "pet") is None
    assert modality_mismatch(p.mr, "ct") == "is declared MR"
    ct, mr = (dataclasses.replace(v, modality="OT") for v in (p.ct, p.mr))  # undeclared: intensities decide
    assert "not CT" in modality_mismatch(mr, "ct") and "looks like CT" in modality_mismatch(ct, "mr")
    assert "not PET" in modality_mismatch(ct, "pet") and modality_mismatch(ct, "ct") is None


def test_reverse_needs_a_cyclegan(phantom_dir, tmp_path):
    trainer = cpu_trainer(tmp_path, limit_val_batches=0, limit_train_batches=1)
    trainer.fit(Pix2Pix(**TINY_PIX2PIX), datamodule=volume_dm(phantom_dir, target="pet", paired=True))
    ckpt = tmp_path / "p.ckpt"
    trainer.save_checkpoint(ckpt)
    with pytest.raises(ValueError, match="reverse needs a CycleGAN"):
        Translator.load(ckpt).keys("reverse")


def test_existing_output_is_refused_unless_overwrite(cyclegan_ckpt, phantom_dir, tmp_path, capsys):
    src = phantom_dir / "p1" / "ct.nii.gz"
    out = tmp_path / "mr.nii.gz"
    out.write_bytes(b"keep me")
    base = ["translate", "--ckpt", str(cyclegan_ckpt), "--input", str(src), "--output", str(out)]
    assert main(base) == 2
    assert "pass --overwrite" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert main([*base, "--overwrite"]) == 0
    assert nib.load(str(out)).shape == nib.load(str(src)).shape
