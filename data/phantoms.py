"""Deterministic synthetic patients (CT in HU, registered T1 MRI, PET in SUV, lesion mask) and the demo data set.

No public CT/MRI/PET data can be downloaded where the project is tested, so it makes its own. One tissue
label map per patient drives all three modalities, so CT, MR and PET are voxel-registered and share one
affine (anisotropic spacing, in-plane rotation, off-centre origin). Anatomy is proportional to the field
of view: abdomen (liver, kidneys, spine) at the bottom, thorax (lungs, heart, ribs, spine) in the middle,
neck and head (skull, brain) at the top. Hot lesions sit in the liver or lungs.

* CT (HU): air -1000, lung about -800, fat about -100, soft tissue about 40, liver about 60, trabecular bone
  about 700, cortical bone 1200-1500; slight blur (partial volume), Gaussian noise, integer HU.
* MR (T1-weighted, a.u.): fat and fatty marrow bright, cortical bone and lung dark, a smooth multiplicative
  bias field and Rician noise.
* PET (SUV): background about 1, liver 2-3, brain high (about 7), lesions 5-20, blurred by a 6 mm PSF.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from data.files import atomic_dir, atomic_write_text
from data.masks import body_mask
from data.slides.phantom import make_phantom_slide
from data.volumes.volume import Volume
from data.volumes.writers import write_dicom_series, write_nifti

# Tissue labels of the phantom's label map.
AIR, LUNG, FAT, SOFT, LIVER, KIDNEY, HEART, BRAIN, MARROW, CORTICAL, LESION = range(11)
TISSUES = ("air", "lung", "fat", "soft", "liver", "kidney", "heart", "brain", "marrow", "cortical", "lesion")

#                  air    lung   fat   soft  liver kidney heart brain marrow cortical lesion
_CT_HU = np.array([-1000, -820, -100, 40, 60, 35, 45, 35, 700, 1350, 30], dtype=np.float32)
_MR_T1 = np.array([0, 25, 1000, 420, 560, 380, 430, 620, 820, 40, 300], dtype=np.float32)
_PET_SUV = np.array([0.0, 0.4, 0.4, 1.0, 2.5, 3.0, 3.5, 7.0, 1.5, 0.6, 10.0], dtype=np.float32)


@dataclass
class PhantomPatient:
    """One synthetic patient: four registered volumes plus the tissue label map.

    Args:
        patient_id: identifier used in file names.
        ct: CT in HU.
        mr: T1-weighted MR in arbitrary units.
        pet: PET in SUV.
        lesion_mask: 1 inside hot lesions, 0 elsewhere (modality SEG).
        labels: tissue label map (uint8, see ``TISSUES``).
        lesion_suv: peak SUV assigned to each lesion.
    """

    patient_id: str
    ct: Volume
    mr: Volume
    pet: Volume
    lesion_mask: Volume
    labels: np.ndarray
    lesion_suv: list[float] = field(default_factory=list)


def phantom_affine(shape: Sequence[int], spacing: Sequence[float], angle_deg: float,
                   shift_mm: Sequence[float]) -> np.ndarray:
    """Voxel-to-RAS affine: spacing, an in-plane rotation about the z axis and an off-centre origin.

    Args:
        shape: volume shape (I, J, K).
        spacing: voxel size in mm.
        angle_deg: rotation about the scanner z axis in degrees.
        shift_mm: offset of the volume centre from the scanner origin.
    """
    t = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(np.asarray(spacing, dtype=np.float64))
    centre = (np.asarray(shape, dtype=np.float64) - 1) / 2
    a[:3, 3] = np.asarray(shift_mm, dtype=np.float64) - a[:3, :3] @ centre
    return a


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0


def _label_map(shape: Sequence[int], spacing: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Tissue labels for one patient; geometry is proportional to the field of view."""
    ni, nj, nk = shape
    sx, sy, _ = spacing
    half_x, half_y = ni * sx / 2, nj * sy / 2
    x = ((np.arange(ni) - (ni - 1) / 2) * sx)[:, None]
    y = ((np.arange(nj) - (nj - 1) / 2) * sy)[None, :]
    labels = np.zeros(shape, dtype=np.uint8)
    j = lambda s: 1.0 + rng.uniform(-s, s)  # noqa: E731 - per-patient jitter factor
    body_ax, body_ay = 0.84 * half_x * j(0.06), 0.66 * half_y * j(0.06)
    fat_mm = max(0.07 * body_ay, 3.0 * max(sx, sy)) * j(0.2)
    lung_dx, lung_ax, lung_ay = 0.42 * body_ax, 0.30 * body_ax * j(0.1), 0.62 * body_ay * j(0.1)
    liver_cx, liver_ax, liver_ay = -0.35 * body_ax, 0.45 * body_ax * j(0.1), 0.62 * body_ay * j(0.1)
    spine_cy, spine_r = -0.55 * body_ay, 0.13 * body_ay
    head_ax, head_ay = 0.50 * half_x * j(0.05), 0.60 * half_y * j(0.05)
    z_neck, z_head = 0.72 + rng.uniform(-0.03, 0.03), 0.80 + rng.uniform(-0.03, 0.03)
    z_thorax = 0.42 + rng.uniform(-0.04, 0.04)
    theta = np.arctan2(y, x)
    for k in range(nk):
        t = k / max(nk - 1, 1)
        sl = labels[:, :, k]
        if t >= z_head:  # head: skull shell around brain, rounded top
            shrink = np.sqrt(max(1.0 - ((t - z_head) / (1.05 - z_head)) ** 2, 0.05))
            ax, ay = head_ax * shrink, head_ay * shrink
            sl[_ellipse(x, y, 0, 0, ax, ay)] = CORTICAL
            sl[_ellipse(x, y, 0, 0, ax - 5, ay - 5)] = BRAIN
            continue
        if t >= z_neck:  # neck: soft tissue around the cervical spine
            sl[_ellipse(x, y, 0, 0, 0.40 * body_ax, 0.55 * body_ay)] = FAT
            sl[_ellipse(x, y, 0, 0, 0.40 * body_ax - fat_mm, 0.55 * body_ay - fat_mm)] = SOFT
            sl[_ellipse(x, y, 0, spine_cy * 0.5, spine_r, spine_r)] = CORTICAL
            sl[_ellipse(x, y, 0, spine_cy * 0.5, spine_r - 2.5, spine_r - 2.5)] = MARROW
            continue
        sl[_ellipse(x, y, 0, 0, body_ax, body_ay)] = FAT
        sl[_ellipse(x, y, 0, 0, body_ax - fat_mm, body_ay - fat_mm)] = SOFT
        if t >= z_thorax:  # thorax
            ring = _ellipse(x, y, 0, 0, body_ax - fat_mm - 2, body_ay - fat_mm - 2) & ~_ellipse(
                x, y, 0, 0, body_ax - fat_mm - 7, body_ay - fat_mm - 7)
            sl[ring & (np.cos(9 * theta) > 0.2)] = CORTICAL  # ribs: ring broken into arcs
            for side in (-1, 1):
                sl[_ellipse(x, y, side * lung_dx, 0.05 * body_ay, lung_ax, lung_ay)] = LUNG
            sl[_ellipse(x, y, 0.12 * body_ax, 0.30 * body_ay, 0.22 * body_ax, 0.28 * body_ay)] = HEART
        else:  # abdomen
            sl[_ellipse(x, y, liver_cx, 0.05 * body_ay, liver_ax, liver_ay)] = LIVER
            for side in (-1, 1):
                sl[_ellipse(x, y, side * 0.33 * body_ax, -0.42 * body_ay, 0.10 * body_ax, 0.16 * body_ay)] = KIDNEY
        sl[_ellipse(x, y, 0, spine_cy, spine_r, spine_r)] = CORTICAL
        sl[_ellipse(x, y, 0, spine_cy, spine_r - 2.5, spine_r - 2.5)] = MARROW
    return labels


def _add_lesions(labels: np.ndarray, spacing: Sequence[float], rng: np.random.Generator,
                 n: int) -> tuple[np.ndarray, list[float]]:
    """Spherical lesions in liver or lung; returns a per-voxel lesion index (0 = none) and each lesion's SUV."""
    index = np.zeros(labels.shape, dtype=np.int16)
    suvs: list[float] = []
    host = np.argwhere(np.isin(labels, (LIVER, LUNG)))
    if len(host) == 0:
        return index, suvs
    grids = np.indices(labels.shape, sparse=True)
    for _ in range(n):
        centre = host[rng.integers(len(host))]
        radius = rng.uniform(5.0, 11.0)
        d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing))
        sphere = (d2 <= radius**2) & np.isin(labels, (LIVER, LUNG, LESION))
        if sphere.sum() < 4:
            continue
        labels[sphere] = LESION
        suvs.append(float(rng.uniform(5.0, 20.0)))
        index[sphere] = len(suvs)
    return index, suvs


def _bias_field(shape: Sequence[int], rng: np.random.Generator, strength: float = 0.2) -> np.ndarray:
    """Smooth multiplicative field (MR receive-coil inhomogeneity), values in about [1-s, 1+s]."""
    coarse = rng.uniform(-1.0, 1.0, size=(4, 4, 3))
    field = ndimage.zoom(coarse, [s / c for s, c in zip(shape, coarse.shape)], order=3, mode="nearest")
    field = field[: shape[0], : shape[1], : shape[2]]
    return (1.0 + strength * field / max(np.abs(field).max(), 1e-6)).astype(np.float32)


def make_patient(
    seed: int,
    *,
    shape: Sequence[int] = (128, 112, 48),
    spacing: Sequence[float] = (1.5, 1.5, 2.5),
    n_lesions: tuple[int, int] = (1, 3),
    patient_id: str | None = None,
) -> PhantomPatient:
    """Build one synthetic patient deterministically from ``seed``.

    Args:
        seed: random seed; the same seed gives bit-identical volumes.
        shape: volume shape (I, J, K) in nibabel axis order (K = axial slices).
        spacing: voxel size in mm (anisotropic by default, like a clinical CT).
        n_lesions: inclusive range of the number of hot lesions.
        patient_id: name of the patient (default ``phantom_<seed>``).
    """
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"phantom shape must be 3 sizes >= 8, got {tuple(shape)}")
    rng = np.random.default_rng(seed)
    pid = patient_id or f"phantom_{seed:03d}"
    affine = phantom_affine(shape, spacing, rng.uniform(-8, 8), rng.uniform(-20, 20, size=3))
    labels = _label_map(shape, spacing, rng)
    lesion_index, lesion_suv = _add_lesions(labels, spacing, rng, int(rng.integers(n_lesions[0], n_lesions[1] + 1)))
    sigma_vox = lambda mm: [mm / s for s in spacing]  # noqa: E731

    jitter = rng.uniform(0.95, 1.05, size=len(TISSUES)).astype(np.float32)
    ct = _CT_HU[labels].copy()
    ct[labels == LUNG] += rng.normal(0, 25, size=int((labels == LUNG).sum())).astype(np.float32)
    ct = ndimage.gaussian_filter(ct, sigma_vox(0.7)) + rng.normal(0, 12, size=labels.shape)
    ct = np.clip(np.round(ct), -1024, 3071).astype(np.float32)

    mr_clean = (_MR_T1 * jitter)[labels] * _bias_field(shape, rng)
    mr_clean = ndimage.gaussian_filter(mr_clean, sigma_vox(0.6))
    noise = 15.0
    mr = np.sqrt((mr_clean + rng.normal(0, noise, labels.shape)) ** 2 + rng.normal(0, noise, labels.shape) ** 2)

    pet = (_PET_SUV * jitter)[labels]
    for i, suv in enumerate(lesion_suv, start=1):
        pet[lesion_index == i] = suv
    fwhm_mm = 6.0
    pet = ndimage.gaussian_filter(pet, sigma_vox(fwhm_mm / 2.355))
    pet = np.clip(pet * (1 + rng.normal(0, 0.08, labels.shape)), 0, None)

    def vol(a: np.ndarray, modality: str, name: str) -> Volume:
        return Volume(a.astype(np.float32), affine.copy(), modality=modality, source=f"phantom:{pid}:{name}",
                      meta={"PatientID": pid, "phantom_seed": seed})

    return PhantomPatient(
        patient_id=pid,
        ct=vol(ct, "CT", "ct"),
        mr=vol(mr, "MR", "mr"),
        pet=vol(pet, "PT", "pet"),
        lesion_mask=vol((lesion_index > 0).astype(np.float32), "SEG", "lesion_mask"),
        labels=labels,
        lesion_suv=lesion_suv,
    )


@dataclass
class DemoManifest:
    """What :func:`write_demo_dataset` wrote, with the patient/slide splits (never split by slice or tile).

    Args:
        root: the data set folder.
        patients: patient id -> {"ct", "mr", "pet", "lesion_mask", "body_mask"} file paths (relative to root).
        dicom: patient id -> CT DICOM series folder (relative), for those also written as DICOM.
        splits: named lists of patient ids (``train_ct``/``train_mr`` are disjoint unpaired training sets); also
            written as ``splits.json`` for :class:`data.volumes.VolumeTranslationDataModule`.
        slides: slide file paths (relative); each has a ``<stem>.regions.csv`` beside it.
        seed: the seed everything was generated from.
    """

    root: Path
    patients: dict[str, dict[str, str]]
    dicom: dict[str, str]
    splits: dict[str, list[str]]
    slides: list[str]
    seed: int

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly form (root omitted: paths are relative to the manifest's folder)."""
        return {"seed": self.seed, "patients": self.patients, "dicom": self.dicom, "splits": self.splits,
                "slides": self.slides}

    @classmethod
    def load(cls, root: str | Path) -> DemoManifest:
        """Read ``root/manifest.json`` written by :func:`write_demo_dataset`.

        Args:
            root: the demo data folder.
        """
        root = Path(root)
        path = root / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no demo manifest here; build one with `medsynth demo-data --out {root}`")
        d = json.loads(path.read_text())
        return cls(root=root, patients=d["patients"], dicom=d["dicom"], splits=d["splits"], slides=d["slides"],
                   seed=d["seed"])

    def paths(self, split: str, key: str) -> list[Path]:
        """Absolute paths of file ``key`` (e.g. ``"ct"``) for every patient of ``split``.

        Args:
            split: ``"train"``, ``"val"``, ``"test"``, ``"train_ct"`` or ``"train_mr"``.
            key: file key (``"ct"``, ``"mr"``, ``"pet"``, ``"lesion_mask"``, ``"body_mask"``).
        """
        if split not in self.splits:
            raise KeyError(f"unknown split {split!r}; have {sorted(self.splits)}")
        return [self.root / self.patients[p][key] for p in self.splits[split]]


def demo_splits(patient_ids: Sequence[str]) -> dict[str, list[str]]:
    """Split patients into train/val/test and two disjoint unpaired training sets (CT-only and MR-only).

    Args:
        patient_ids: all patients, in order; needs at least 4.
    """
    ids = list(patient_ids)
    if len(ids) < 4:
        raise ValueError(f"the demo data set needs at least 4 patients, got {len(ids)}")
    n_test = max(1, len(ids) // 5)
    n_val = max(1, len(ids) // 10)
    test, val, train = ids[-n_test:], ids[-n_test - n_val:-n_test], ids[: len(ids) - n_test - n_val]
    return {"train": train, "val": val, "test": test,
            "train_ct": train[0::2], "train_mr": train[1::2] or train[:1]}


def write_demo_dataset(
    out: str | Path,
    *,
    n_patients: int = 10,
    n_slides: int = 3,
    seed: int = 0,
    shape: Sequence[int] = (128, 112, 48),
    spacing: Sequence[float] = (1.5, 1.5, 2.5),
    slide_size: tuple[int, int] = (4096, 3072),
    n_dicom: int = 1,
) -> DemoManifest:
    """Write the demo data set: NIfTI patients, a CT DICOM series, pyramidal slides and a manifest.

    Everything is built in a temporary folder and moved into place at the end, so an interrupted run never
    leaves a half-written data set (and an existing one is only replaced by a complete new one).

    Args:
        out: destination folder.
        n_patients: number of synthetic patients (>= 4).
        n_slides: number of whole-slide images.
        seed: master seed; patient ``i`` uses ``seed * 1000 + i``.
        shape: volume shape (I, J, K).
        spacing: voxel size in mm.
        slide_size: level-0 slide size (width, height) in pixels.
        n_dicom: how many patients' CT are also written as a DICOM series (shuffled file names).
    """
    out = Path(out)
    ids = [f"patient_{i:03d}" for i in range(n_patients)]
    splits = demo_splits(ids)
    patients: dict[str, dict[str, str]] = {}
    dicom: dict[str, str] = {}
    slides: list[str] = []
    with atomic_dir(out) as tmp:
        for i, pid in enumerate(ids):
            p = make_patient(seed * 1000 + i, shape=shape, spacing=spacing, patient_id=pid)
            body = Volume(body_mask(p.ct.array).astype(np.float32), p.ct.affine, modality="SEG",
                          source=f"phantom:{pid}:body")
            entry = {}
            images = (("ct", p.ct), ("mr", p.mr), ("pet", p.pet), ("lesion_mask", p.lesion_mask), ("body_mask", body))
            for key, v in images:
                rel = f"volumes/{pid}/{key}.nii.gz"  # the layout VolumeTranslationDataModule reads
                write_nifti(v, tmp / rel, provenance={"generator": "data.phantoms.make_patient",
                                                      "seed": seed * 1000 + i, "patient": pid, "kind": key})
                entry[key] = rel
            patients[pid] = entry
            if i < n_dicom:
                rel = f"dicom/{pid}_ct"
                write_dicom_series(p.ct, tmp / rel, series_description=f"medsynth phantom CT {pid}", derived=False,
                                   reference={"PatientID": pid, "PatientName": pid}, shuffle_names=True, seed=seed + i,
                                   provenance={"generator": "data.phantoms.make_patient", "seed": seed * 1000 + i})
                dicom[pid] = rel
        for s in range(n_slides):
            rel = f"slides/slide_{s:03d}.svs"
            make_phantom_slide(tmp / rel, width=slide_size[0], height=slide_size[1], seed=seed * 1000 + s)
            slides.append(rel)
        manifest = DemoManifest(root=out, patients=patients, dicom=dicom, splits=splits, slides=slides, seed=seed)
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest.to_json(), indent=2))
        atomic_write_text(tmp / "splits.json", json.dumps(splits, indent=2))
    return manifest
