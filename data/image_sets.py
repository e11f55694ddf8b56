"""What ``medsynth evaluate`` reads: image sets for the distribution metrics, volume pairs for the paired metrics.

Image sets (FID, KID, memorization audit), resolved by :func:`open_image_set` from folders and files:

* image files (PNG/JPEG/TIFF/BMP, searched recursively, class sub-folders allowed, hidden paths skipped):
  :class:`ImageFiles`, grey and RGBA images converted to RGB as pytorch-fid does;
* whole-slide images (vendor suffixes, or a ``.tif``/``.tiff`` OpenSlide recognises): :class:`SlideTiles`, cut by
  :class:`data.slides.datasets.TileDataset` at one scale (:class:`TileScale`: microns per pixel or magnification);
* a statistics ``.npz`` (FID of a reference set): returned as a :class:`StatsFile` naming the file; the statistics
  themselves are read by ``gan.metrics.FeatureStats`` (``data`` never imports ``gan``).

Every image set reads ONE image at a time as a (3, H, W) uint8 tensor, so a caller streams it in batches.

Volume pairs (MAE, PSNR, SSIM, LPIPS), as :class:`VolumePair` (reference, synthetic, body mask, baseline, source):

* :func:`find_volume_pairs`: folders laid out alike, matched by relative path (``<patient>/<key>.nii.gz`` or
  ``<patient>.nii.gz``);
* :func:`split_volume_pairs`: one split of a data folder (``<data>/<patient>/<key>.nii.gz``, the layout the volume
  datamodule reads, with its ``splits.json``), the synthetic volumes matched by patient id, masks by key;
* :func:`training_volumes`: the training split's targets and masks (the mean-image baseline).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from data.errors import DataError, VolumeError
from data.volumes import nifti_stem

PathLike = Union[str, Path]

__all__ = [
    "IMAGE_SUFFIXES",
    "SLIDE_SUFFIXES",
    "ImageFiles",
    "ImageSet",
    "MaskedVolume",
    "SlideTiles",
    "StatsFile",
    "TileScale",
    "VolumePair",
    "existing_paths",
    "fake_volume",
    "files_under",
    "find_volume_pairs",
    "is_slide",
    "nifti_files",
    "open_image_set",
    "patient_volume",
    "read_splits",
    "split_volume_pairs",
    "training_volumes",
]

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SLIDE_SUFFIXES: tuple[str, ...] = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
STATS_SUFFIX = ".npz"


# ---------------------------------------------------------------------------------------------------- image sets


@dataclass(frozen=True)
class TileScale:
    """How whole-slide images are cut into tiles.

    Args:
        tile_size: tile side in pixels.
        mpp: tile scale in microns per pixel (give this or ``magnification``).
        magnification: nominal magnification, shorthand for ``mpp = 10 / magnification``.
        mpp_override: microns per pixel of slides without MPP metadata.
    """

    tile_size: int = 256
    mpp: float | None = None
    magnification: float | None = None
    mpp_override: float | None = None


@dataclass(frozen=True)
class StatsFile:
    """A statistics ``.npz`` given as an image set (FID reference statistics; read with ``gan.metrics.FeatureStats``).

    Args:
        path: the ``.npz`` file.
    """

    path: Path


class ImageSet:
    """A set of images readable one at a time as (3, H, W) uint8 tensors.

    Args:
        label: how the set is named in messages and reports (e.g. ``"real"``).
        description: the inputs it came from.
    """

    kind = "images"

    def __init__(self, label: str, description: Sequence[str]) -> None:
        self.label = label
        self.description = list(description)

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> torch.Tensor:
        """Image ``index`` as a (3, H, W) uint8 tensor.

        Args:
            index: position in the set.
        """
        raise NotImplementedError

    def name(self, index: int) -> str:
        """Where image ``index`` comes from (a file, or a slide and location).

        Args:
            index: position in the set.
        """
        raise NotImplementedError


class ImageFiles(ImageSet):
    """Image files of any size (grey and RGBA images are converted to RGB, as pytorch-fid does).

    Args:
        label: set name.
        description: the inputs it came from.
        files: the image files, in a fixed order.
    """

    def __init__(self, label: str, description: Sequence[str], files: Sequence[Path]) -> None:
        super().__init__(label, description)
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> torch.Tensor:
        """Image ``index`` decoded with PIL, as (3, H, W) uint8.

        Args:
            index: position in the set.
        """
        f = self.files[index]
        try:
            with Image.open(f) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f, f"cannot decode image ({exc})") from exc
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))

    def name(self, index: int) -> str:
        """The file of image ``index``.

        Args:
            index: position in the set.
        """
        return str(self.files[index])


class SlideTiles(ImageSet):
    """Tiles of whole-slide images at one scale, read as raw uint8 (``TileDataset(uint8=True)``).

    Args:
        label: set name.
        description: the inputs it came from.
        slides: slide files.
        scale: tile size and scale.
        class_names: keep only tiles of these classes (region labels), in this index order; None: every tile.
    """

    kind = "slides"

    def __init__(self, label: str, description: Sequence[str], slides: Sequence[Path], *, scale: TileScale,
                 class_names: Sequence[str] | None = None) -> None:
        super().__init__(label, description)
        from data.slides.datasets import TileDataset

        if (scale.mpp is None) == (scale.magnification is None):
            raise ValueError(f"{label}: whole-slide images {[s.name for s in slides][:3]} need exactly one of --mpp or "
                             "--magnification to set the tile scale")
        classes = {} if class_names is None else {"class_names": list(class_names), "require_all_classes": False}
        self.dataset = TileDataset(list(slides), tile_size=scale.tile_size, mpp=scale.mpp,
                                   magnification=scale.magnification, mpp_override=scale.mpp_override, uint8=True,
                                   **classes)

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, index: int) -> torch.Tensor:
        """Tile ``index`` as (3, H, W) uint8, the pixels the slide stores at that scale.

        Args:
            index: position in the set.
        """
        return self.dataset[index]["image"]

    def name(self, index: int) -> str:
        """Slide and level-0 location of tile ``index``.

        Args:
            index: position in the set.
        """
        spec = self.dataset.tiles[index]
        return f"{spec.slide}@({spec.x},{spec.y})"


def is_slide(path: Path) -> bool:
    """True for a whole-slide image: a vendor suffix, or a ``.tif``/``.tiff`` that OpenSlide recognises (pyramidal).

    Args:
        path: a file.
    """
    suffix = path.suffix.lower()
    if suffix in SLIDE_SUFFIXES:
        return True
    if suffix in (".tif", ".tiff"):
        import openslide

        try:
            return openslide.OpenSlide.detect_format(str(path)) is not None
        except Exception:  # noqa: BLE001 - unreadable files are reported when decoded
            return False
    return False


def files_under(folder: Path) -> list[Path]:
    """Files below ``folder`` in sorted order, skipping hidden files and folders.

    Args:
        folder: the folder to search recursively.
    """
    return sorted(f for f in folder.rglob("*")
                  if f.is_file() and not any(part.startswith(".") for part in f.relative_to(folder).parts))


def existing_paths(paths: Sequence[str | Path], label: str) -> list[Path]:
    """The paths of a command-line argument, each checked to exist.

    Args:
        paths: files and/or folders.
        label: which argument (named in messages as ``--<label>``).

    Raises:
        ValueError: no path.
        DataError: a path that does not exist.
    """
    given = [Path(p) for p in paths]
    if not given:
        raise ValueError(f"--{label}: no path given")
    for p in given:
        if not p.exists():
            raise DataError(p, f"--{label}: no such file or folder")
    return given


def open_image_set(paths: Sequence[PathLike], *, label: str, scale: TileScale = TileScale(),
                   allow_stats: bool = False) -> ImageSet | StatsFile:
    """Resolve image-set arguments (``--real``, ``--fake``, ``--train``, ``--heldout``) into an image set.

    Args:
        paths: folders and/or files.
        label: which argument (named in messages as ``--<label>``).
        scale: tile size and scale for whole-slide images.
        allow_stats: accept a statistics ``.npz`` (then given alone), returned as :class:`StatsFile`.

    Raises:
        DataError: a path is missing, holds no images, or mixes slides and image files.
        ValueError: no path, or a ``.npz`` given beside other paths.
    """
    given = existing_paths(paths, label)
    npz = [p for p in given if p.is_file() and p.suffix.lower() == STATS_SUFFIX]
    if npz:
        if not allow_stats:
            raise DataError(npz[0], f"--{label}: a statistics .npz is accepted only for --real (FID reference)")
        if len(given) != 1:
            raise ValueError(f"--{label}: a statistics .npz must be given alone, got {[str(p) for p in given]}")
        return StatsFile(npz[0])
    files: list[Path] = []
    for p in given:
        files.extend(files_under(p) if p.is_dir() else [p])
    slides = [f for f in files if is_slide(f)]
    slide_set = set(slides)
    images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES and f not in slide_set]
    description = [str(p) for p in given]
    if slides and images:
        raise DataError(given[0], f"--{label}: mixes whole-slide images ({slides[0]}) and image files ({images[0]}); "
                                  "give one kind")
    if slides:
        return SlideTiles(label, description, slides, scale=scale)
    if not images:
        raise DataError(given[0], f"--{label}: holds no images ({', '.join(IMAGE_SUFFIXES)}) and no slides "
                                  f"({', '.join(SLIDE_SUFFIXES)})")
    return ImageFiles(label, description, images)


# -------------------------------------------------------------------------------------------------- volume pairs


@dataclass(frozen=True)
class VolumePair:
    """One patient's reference and synthetic volumes, with the optional body mask, baseline and source volume.

    Args:
        patient: patient id, or the relative path without the NIfTI suffix (``"p01/ct"``, ``"p01"``).
        real: reference volume file.
        fake: synthetic volume file.
        mask: body mask file, or None.
        baseline: a trivial-baseline volume file (e.g. the input copied), or None.
        source: the input volume of the translation (for a baseline made from it), or None.
    """

    patient: str
    real: Path
    fake: Path
    mask: Path | None = None
    baseline: Path | None = None
    source: Path | None = None


@dataclass(frozen=True)
class MaskedVolume:
    """A patient's volume with its optional body mask.

    Args:
        patient: patient id.
        volume: volume file (NIfTI or DICOM folder).
        mask: body mask file, or None (the whole volume).
    """

    patient: str
    volume: Path
    mask: Path | None = None


def nifti_files(folder: Path) -> dict[str, Path]:
    """NIfTI files under ``folder`` by relative path without the suffix (``p01/ct.nii.gz`` -> ``"p01/ct"``).

    Args:
        folder: the folder to search recursively (hidden paths skipped).

    Raises:
        VolumeError: two files share a key (``ct.nii`` beside ``ct.nii.gz``).
    """
    out: dict[str, Path] = {}
    for f in files_under(folder):
        stem = nifti_stem(f)
        if stem is None:
            continue
        key = (f.relative_to(folder).parent / stem).as_posix()
        if key in out:
            raise VolumeError(f, f"both {out[key].name} and {f.name} exist for {key!r}; keep one")
        out[key] = f
    return out


def find_volume_pairs(real_dir: PathLike, fake_dir: PathLike, *, mask_dir: PathLike | None = None,
                      baseline_dir: PathLike | None = None) -> list[VolumePair]:
    """Match reference and synthetic NIfTI volumes (and masks / baselines) by relative path.

    Args:
        real_dir: folder of reference volumes (``<patient>/<key>.nii.gz`` or ``<patient>.nii.gz``).
        fake_dir: folder of synthetic volumes laid out the same way.
        mask_dir: folder of body masks laid out the same way, or None.
        baseline_dir: folder of trivial-baseline volumes laid out the same way, or None.

    Raises:
        VolumeError: a folder is missing or empty, or a volume has no counterpart (naming the files).
    """
    folders = {"real": real_dir, "fake": fake_dir, "mask": mask_dir, "baseline": baseline_dir}
    found: dict[str, dict[str, Path]] = {}
    for name, folder in folders.items():
        if folder is None:
            continue
        path = Path(folder)
        if not path.is_dir():
            raise VolumeError(path, f"--{name if name != 'mask' else 'mask-dir'}: expected a folder of NIfTI volumes")
        found[name] = nifti_files(path)
        if not found[name]:
            raise VolumeError(path, "holds no NIfTI volumes (.nii / .nii.gz)")
    real, fake = found["real"], found["fake"]
    for name in ("fake", "mask", "baseline"):
        other = found.get(name)
        if other is None:
            continue
        missing = sorted(set(real) - set(other))
        if missing:
            folder = Path(folders[name])  # type: ignore[arg-type]
            expected = [str(folder / f"{k}.nii.gz") for k in missing[:3]]
            raise VolumeError(folder, f"{len(missing)} reference volume(s) have no {name} counterpart, e.g. "
                                      f"{real[missing[0]]} -> expected {', '.join(expected)}")
    extra = sorted(set(fake) - set(real))
    if extra:
        raise VolumeError(fake[extra[0]], f"has no reference volume at the same relative path under {real_dir} "
                                          f"({len(extra)} synthetic volume(s) unmatched)")
    return [VolumePair(patient=k, real=real[k], fake=fake[k], mask=found["mask"][k] if "mask" in found else None,
                       baseline=found["baseline"][k] if "baseline" in found else None)
            for k in sorted(real)]


def read_splits(path: PathLike) -> dict[str, list[str]]:
    """A splits file: JSON object of split name -> list of patient ids (``train``, ``val``, ``test``, ...).

    Args:
        path: the ``splits.json`` the volume datamodule reads.

    Raises:
        DataError: missing, unreadable, or not an object of string lists.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "--splits: no such file")
    try:
        splits = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(p, f"cannot read the splits file ({exc})") from exc
    if not isinstance(splits, dict) or not all(
            isinstance(v, list) and all(isinstance(i, str) for i in v) for v in splits.values()):
        raise DataError(p, 'expected a JSON object of patient-id lists, e.g. {"train": [...], "test": [...]}')
    return splits


def _split_ids(splits: dict[str, list[str]], split: str, splits_file: PathLike) -> list[str]:
    if split not in splits:
        raise DataError(Path(splits_file), f"has no split {split!r}; it has {', '.join(sorted(splits))}")
    if not splits[split]:
        raise DataError(Path(splits_file), f"split {split!r} is empty")
    return list(splits[split])


def patient_volume(data_dir: PathLike, patient: str, key: str) -> Path:
    """The file of ``key`` for one patient of a data folder: ``<key>.nii.gz``, ``<key>.nii`` or a DICOM folder
    ``<key>/`` inside ``<data_dir>/<patient>/`` (the layout the volume datamodule reads).

    Args:
        data_dir: folder of patient folders.
        patient: patient id (its folder name).
        key: volume key (``ct``, ``mr``, ``pet``, ``body_mask``, ...).

    Raises:
        VolumeError: naming the patient folder and the names looked for.
    """
    folder = Path(data_dir) / patient
    for cand in (folder / f"{key}.nii.gz", folder / f"{key}.nii", folder / key):
        if cand.exists():
            return cand
    raise VolumeError(folder, f"patient {patient} has no {key!r} volume ({key}.nii.gz, {key}.nii or a {key}/ DICOM "
                              "folder)")


def fake_volume(fake_dir: PathLike, patient: str, key: str) -> Path:
    """The synthetic volume of one patient: ``<fake>/<patient>/<key>.nii[.gz]`` or ``<fake>/<patient>.nii[.gz]``.

    Args:
        fake_dir: folder of synthetic volumes (e.g. the output of ``medsynth generate``).
        patient: patient id.
        key: the synthetic modality key (``mr`` for a CT -> MR model).

    Raises:
        VolumeError: none or several of those files exist (naming them).
    """
    root = Path(fake_dir)
    cands = [root / patient / f"{key}.nii.gz", root / patient / f"{key}.nii", root / f"{patient}.nii.gz",
             root / f"{patient}.nii"]
    hits = [c for c in cands if c.is_file()]
    if len(hits) > 1:
        raise VolumeError(hits[1], f"patient {patient} has several synthetic volumes ({', '.join(map(str, hits))}); "
                                   "keep one")
    if not hits:
        raise VolumeError(root, f"no synthetic volume of patient {patient}: expected {cands[0]} or {cands[2]}")
    return hits[0]


def split_volume_pairs(*, data_dir: PathLike, splits_file: PathLike, split: str, target: str, fake_dir: PathLike,
                       mask: str | None = None, source: str | None = None) -> list[VolumePair]:
    """The volume pairs of one split of a data folder: reference ``target``, the synthetic volume by patient id,
    the body mask and the source volume by key.

    Args:
        data_dir: folder of patient folders (``<data>/<patient>/<key>.nii.gz``).
        splits_file: the splits JSON (split name -> patient ids).
        split: the split to evaluate (``test``, ``val``).
        target: key of the reference volumes (``mr`` for a CT -> MR model).
        fake_dir: folder of synthetic volumes (see :func:`fake_volume`).
        mask: key of the body masks (``body_mask``), or None for the whole volume.
        source: key of the input volumes (``ct``), needed by a baseline made from the input.

    Raises:
        VolumeError / DataError: a folder, split or volume is missing (naming it).
    """
    if not Path(data_dir).is_dir():
        raise VolumeError(Path(data_dir), "--data: no such folder")
    if not Path(fake_dir).is_dir():
        raise VolumeError(Path(fake_dir), "--fake: expected a folder of synthetic volumes")
    ids = _split_ids(read_splits(splits_file), split, splits_file)
    return [VolumePair(patient=pid, real=patient_volume(data_dir, pid, target), fake=fake_volume(fake_dir, pid, target),
                       mask=None if mask is None else patient_volume(data_dir, pid, mask),
                       source=None if source is None else patient_volume(data_dir, pid, source))
            for pid in ids]


def training_volumes(*, data_dir: PathLike, splits_file: PathLike, target: str,
                     mask: str | None = None) -> list[MaskedVolume]:
    """The training targets of a data folder, with their masks: split ``train_<target>`` when the splits file has it
    (unpaired training draws its targets from there), else ``train``.

    Args:
        data_dir: folder of patient folders.
        splits_file: the splits JSON.
        target: key of the target volumes.
        mask: key of the body masks, or None.
    """
    splits = read_splits(splits_file)
    name = f"train_{target}" if f"train_{target}" in splits else "train"
    return [MaskedVolume(patient=pid, volume=patient_volume(data_dir, pid, target),
                         mask=None if mask is None else patient_volume(data_dir, pid, mask))
            for pid in _split_ids(splits, name, splits_file)]
