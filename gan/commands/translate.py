"""``medsynth translate``: translate a volume with a trained CycleGAN / pix2pix checkpoint and write it in physical
units with the input's exact geometry (NIfTI, optionally a DERIVED DICOM series), with a provenance JSON beside it.

The library part, :class:`Translator`, is what ``medsynth generate`` and Python users call: it rebuilds the module
from the checkpoint (``weights_only``), the training windows from the datamodule settings the checkpoint carries,
checks that an input volume is of the modality the direction expects (declared modality and intensities), and
translates through :func:`gan.inference.translate_volume`, the function validation used.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from data.intensity import Window, WindowParams
    from data.volumes import Volume
    from gan.models.checkpoint import LoadedCheckpoint

HELP = "translate a volume with a trained CycleGAN / pix2pix checkpoint"
DESCRIPTION = """Translate one volume (NIfTI file or DICOM series folder) with a checkpoint of `medsynth fit`.

The output has the input's exact affine and spacing (it overlays the input in any viewer), in physical units
(HU, SUV, MR a.u.), with a provenance JSON beside it (checkpoint sha256, direction). --dicom-out also writes a
DICOM series marked DERIVED/synthetic with new UIDs and its own SeriesNumber. The input's modality is checked
(declared modality and intensities) against the checkpoint's direction.

Example:
  medsynth translate --ckpt runs/medsynth/<run>/checkpoints/best.ckpt --input ct.nii.gz --output smr.nii.gz
"""

Direction = Literal["forward", "reverse"]
_CODE = {"ct": "CT", "mr": "MR", "pet": "PT"}


def modality_mismatch(volume: Volume, key: str) -> str | None:
    """Why ``volume`` does not look like modality ``key``, or None when it does.

    The declared modality (NIfTI sidecar or DICOM tag; ``OT`` = unknown) must match, and the intensities must
    fit: CT in HU has air near -1000; PET in SUV has no clearly negative values; MR in arbitrary units is not in
    HU (no air near -1000).

    Args:
        volume: volume in physical units.
        key: expected modality key (``ct``, ``mr``, ``pet``).
    """
    import numpy as np

    code = _CODE[key]
    if volume.modality not in (code, "OT"):
        return f"is declared {volume.modality}"
    a = np.asarray(volume.array, dtype=np.float32)
    lo, hi = (float(v) for v in np.percentile(a, [1.0, 99.9]))
    if key == "ct" and lo > -500.0:
        return f"has no air near -1000 HU (1st percentile {lo:.4g}), so it is not CT in Hounsfield units"
    if key == "pet" and lo < -0.5:
        return f"has negative values (1st percentile {lo:.4g}), so it is not PET in SUV"
    if key == "mr" and lo < -500.0:
        return f"has values near {lo:.4g} like air in HU, so it looks like CT, not MR"
    if key == "pet" and hi > 200.0:
        return f"reaches {hi:.4g} (99.9th percentile), far above any SUV"
    return None


def training_windows(data_hparams: dict[str, Any], path: Path) -> dict[str, Window]:
    """The windows the checkpoint's datamodule trained with, rebuilt from its recorded settings.

    Args:
        data_hparams: ``datamodule_hyper_parameters`` of the checkpoint.
        path: the checkpoint (for the message).
    """
    from data.intensity import modality_windows

    keys = ("ct_window", "pet_window", "pet_log", "mr_percentiles")
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in data_hparams.items() if k in keys}
    if not settings and not data_hparams:
        raise ValueError(f"{path}: the checkpoint records no datamodule settings (trained without a datamodule?), "
                         "so its intensity windows are unknown; train through `medsynth fit` or a LightningDataModule")
    return modality_windows(**settings)


@dataclass
class Translator:
    """A translation checkpoint ready to translate volumes in physical units.

    Args:
        checkpoint: the loaded checkpoint (see :func:`gan.models.checkpoint.load_module`).
        device: torch device for inference.
    """

    checkpoint: LoadedCheckpoint
    device: str = "cpu"

    def __post_init__(self) -> None:
        from gan.models import TranslationModule

        if not isinstance(self.checkpoint.module, TranslationModule):
            raise ValueError(f"{self.checkpoint.path}: a {self.checkpoint.family} checkpoint, not a translation "
                             "model (CycleGAN / Pix2Pix)")
        self.windows = training_windows(self.checkpoint.data_hparams, self.checkpoint.path)
        self.model = self.checkpoint.module.to(self.device)

    @classmethod
    def load(cls, ckpt: str | Path, device: str = "cpu") -> Translator:
        """Load ``ckpt`` (``weights_only``) for translation on ``device``.

        Args:
            ckpt: checkpoint of a CycleGAN or Pix2Pix run.
            device: torch device.
        """
        from gan.models.checkpoint import load_module

        return cls(load_module(ckpt, map_location="cpu"), device=device)

    @property
    def family(self) -> str:
        """``CycleGAN`` or ``Pix2Pix``."""
        return self.checkpoint.family

    def keys(self, direction: Direction = "forward") -> tuple[str, str]:
        """(input key, output key) of a direction.

        Args:
            direction: ``"forward"`` (source -> target) or ``"reverse"`` (CycleGAN only).
        """
        m = self.model
        if direction == "forward":
            return m.source, m.target
        if self.family != "CycleGAN":
            raise ValueError(f"--direction reverse needs a CycleGAN checkpoint; this {self.family} only translates "
                             f"{m.source} -> {m.target}")
        return m.target, m.source

    def check_input(self, volume: Volume, direction: Direction = "forward") -> None:
        """Refuse a volume that is not of the direction's input modality, with a hint that fits.

        Args:
            volume: the input volume.
            direction: the requested direction.
        """
        src, tgt = self.keys(direction)
        why = modality_mismatch(volume, src)
        if why is None:
            return
        hint = ""
        if self.family == "CycleGAN" and modality_mismatch(volume, tgt) is None:
            other = "reverse" if direction == "forward" else "forward"
            hint = f"; it looks like {tgt.upper()}: translate it {tgt} -> {src} with --direction {other}"
        raise ValueError(f"{volume.source}: {why}, but this {self.family} checkpoint translates {src} -> {tgt} "
                         f"(--direction {direction}) and expects {src.upper()} input{hint}")

    def translate(self, volume: Volume, direction: Direction = "forward") -> Volume:
        """Translate ``volume`` (physical units) into the output modality, with the input's affine.

        Args:
            volume: input volume in physical units.
            direction: ``"forward"`` or ``"reverse"`` (CycleGAN's target -> source generator).
        """
        import numpy as np
        import torch

        from data.intensity import from_unit, to_unit
        from data.volumes import Volume

        self.check_input(volume, direction)
        src, tgt = self.keys(direction)
        gen = self.model.generator_ba if direction == "reverse" else None
        arr = np.asarray(volume.array, dtype=np.float32)
        w_src = self.windows[src].fit(arr)
        x = torch.from_numpy(np.asarray(to_unit(arr, w_src), dtype=np.float32))
        y = self.model.translate(x[None, None].to(self.device), generator=gen)[0, 0].cpu().double().numpy()
        w_tgt = self.output_window(tgt)
        out = np.asarray(from_unit(y, w_tgt), dtype=np.float32)
        return Volume(out, volume.affine.copy(), modality=_CODE[tgt], source=f"medsynth:{self.family}:{src}->{tgt}",
                      meta={"reference": volume.meta.get("reference", {})})

    def output_window(self, key: str) -> WindowParams:
        """The window a synthetic ``key`` volume is mapped back to physical units with: the training window for CT
        and PET; for MR (normalised per volume in training) the mean training MR window the datamodule recorded.

        Args:
            key: output modality key.
        """
        from data.intensity import WindowParams

        if key != "mr":
            return self.windows[key].fit()
        mr = self.checkpoint.data_state.get("mr_window")
        if mr is None:
            raise ValueError(f"{self.checkpoint.path}: the checkpoint records no mean training MR window (its "
                             "datamodule state has no 'mr_window'), so a synthetic MR cannot be given MR units")
        return WindowParams(float(mr[0]), float(mr[1]))

    def provenance(self, direction: Direction = "forward") -> dict[str, Any]:
        """What every output made with this checkpoint records about it."""
        src, tgt = self.keys(direction)
        return {"checkpoint": str(self.checkpoint.path), "checkpoint_sha256": self.checkpoint.sha256,
                "model": self.family, "direction": f"{src}->{tgt}", "synthetic": True}


def translate_file(ckpt: str | Path, input: str | Path, output: str | Path, *, dicom_out: str | Path | None = None,
                   direction: Direction = "forward", device: str = "cpu", overwrite: bool = False) -> Path:
    """Read ``input`` (NIfTI or DICOM), translate it, write ``output`` NIfTI (and optionally a DERIVED DICOM series).

    Args:
        ckpt: checkpoint of a CycleGAN or Pix2Pix run.
        input: NIfTI file or DICOM series folder.
        output: NIfTI file to write (atomically, with a provenance JSON beside it).
        dicom_out: folder for a DICOM series marked DERIVED/synthetic with new UIDs.
        direction: CycleGAN direction.
        device: torch device.
        overwrite: replace existing outputs (atomically); otherwise an existing output is refused.
    """
    from data.files import check_overwrite
    from data.volumes import load_volume, write_dicom_series, write_nifti

    check_overwrite(output, overwrite=overwrite, what="output volume")
    if dicom_out is not None:
        check_overwrite(dicom_out, overwrite=overwrite, what="DICOM output folder")
    translator = Translator.load(ckpt, device=device)
    vol = load_volume(input)
    out = translator.translate(vol, direction=direction)
    prov = {**translator.provenance(direction), "input": str(input)}
    path = write_nifti(out, output, provenance=prov)
    if dicom_out is not None:
        ref = vol.meta.get("reference") or {}
        series_number = 1000 + int(translator.checkpoint.sha256[:6], 16) % 9000 + (1 if direction == "reverse" else 0)
        write_dicom_series(out, dicom_out, series_description=f"medsynth {translator.family} {prov['direction']} "
                           "synthetic"[:64], derived=True, reference=dict(ref) or None, provenance=prov,
                           series_number=series_number)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``medsynth translate``."""
    parser.add_argument("--ckpt", required=True, type=Path, help="checkpoint (.ckpt) of a CycleGAN or Pix2Pix run")
    parser.add_argument("--input", required=True, type=Path, help="input volume: NIfTI file or DICOM series folder")
    parser.add_argument("--output", required=True, type=Path, help="output NIfTI file (.nii.gz)")
    parser.add_argument("--dicom-out", type=Path, default=None, help="also write a DICOM series (DERIVED/synthetic)")
    parser.add_argument("--direction", choices=("forward", "reverse"), default="forward",
                        help="CycleGAN only: reverse uses the target -> source generator")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (atomically)")


def run(args: argparse.Namespace) -> int:
    """Run ``medsynth translate``."""
    out = translate_file(args.ckpt, args.input, args.output, dicom_out=args.dicom_out, direction=args.direction,
                         device=args.device, overwrite=args.overwrite)
    print(f"translated {args.input} -> {out}" + (f" and DICOM series {args.dicom_out}" if args.dicom_out else ""))
    return 0
