"""Translate a volume with a trained checkpoint and write it in physical units with the input's exact geometry."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from data.intensity import MRPercentileWindow, WindowParams, from_unit, to_unit
from data.volumes import Volume, load_volume
from data.writers import write_dicom_series, write_nifti
from gan.metrics.features import sha256_file
from gan.models import CycleGAN, Pix2Pix, TranslationModule

FAMILIES: dict[str, type[TranslationModule]] = {"CycleGAN": CycleGAN, "Pix2Pix": Pix2Pix}
MODALITY = {"ct": "CT", "mr": "MR", "pet": "PT"}


def load_translation_model(ckpt: str | Path, map_location: str = "cpu") -> TranslationModule:
    """Rebuild a CycleGAN/Pix2Pix from a checkpoint without executing pickled code (``weights_only=True``).

    Args:
        ckpt: Lightning checkpoint written by ``medsynth fit``.
        map_location: device to load the weights onto.
    """
    path = Path(ckpt)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling/format failure gets the same clear message
        raise ValueError(f"{path}: not a loadable checkpoint ({type(e).__name__}: {e})") from e
    meta = state.get("medsynth") if isinstance(state, dict) else None
    if not meta or meta.get("family") not in FAMILIES:
        raise ValueError(f"{path}: not a medsynth translation checkpoint (no CycleGAN/Pix2Pix metadata); "
                         "use a checkpoint written by `medsynth fit` with one of those models")
    # LightningCLI adds bookkeeping keys such as "_class_path" to the hyperparameters
    hparams = {k: v for k, v in state["hyper_parameters"].items() if not k.startswith("_")}
    model = FAMILIES[meta["family"]](**hparams)
    model.load_state_dict(state["state_dict"])
    model.apply_memory_format()
    model.eval()
    return model


def training_window(volume: Volume, key: str, windows: dict[str, tuple[float, float, bool]]) -> WindowParams:
    """The window a checkpoint was trained with for modality ``key``, for ``volume``: MR gets its own percentile
    window (as the data layer normalises every MR volume), CT/PET the recorded mean training window.

    Args:
        volume: volume in physical units.
        key: modality key (``ct``, ``mr``, ``pet``).
        windows: :meth:`TranslationModule.training_windows` of the checkpoint.
    """
    if key == "mr":
        return MRPercentileWindow().fit(np.asarray(volume.array))
    if key not in windows:
        raise ValueError(f"checkpoint has no record of its {key!r} training window (trained for 0 steps?)")
    return WindowParams(*windows[key])


def translate_volume(
    model: TranslationModule, volume: Volume, *, direction: Literal["forward", "reverse"] = "forward",
    device: str = "cpu",
) -> Volume:
    """Translate ``volume`` (physical units) and return the output volume with the same affine.

    Args:
        model: a trained translation module.
        volume: input in physical units.
        direction: ``"reverse"`` uses a CycleGAN's target -> source generator.
        device: torch device.
    """
    src, tgt = model.source, model.target
    gen = None
    if direction == "reverse":
        if not isinstance(model, CycleGAN):
            raise ValueError(f"--direction reverse needs a CycleGAN checkpoint; this is a {type(model).__name__} ({src} -> {tgt})")
        src, tgt, gen = tgt, src, model.generator_ba
    expected = MODALITY[src]
    if volume.modality not in (expected, "OT"):
        hint = " (try --direction reverse)" if isinstance(model, CycleGAN) and volume.modality == MODALITY[tgt] else ""
        raise ValueError(f"{volume.source}: is a {volume.modality} volume but the checkpoint translates {src} -> {tgt} "
                         f"and expects {expected} input{hint}")
    windows = model.training_windows()
    if tgt not in windows or (src not in windows and src != "mr"):
        raise ValueError("checkpoint has no record of its training windows (trained for 0 steps?)")
    w_src = training_window(volume, src, windows)
    model = model.to(device)
    x = torch.from_numpy(np.asarray(to_unit(np.asarray(volume.array, dtype=np.float32), w_src), dtype=np.float32))
    y = model.translate_volume(x[None, None].to(device), generator=gen)[0, 0].cpu().numpy()
    out = np.asarray(from_unit(y.astype(np.float64), WindowParams(*windows[tgt])), dtype=np.float32)
    return Volume(out, volume.affine.copy(), modality=MODALITY[tgt], source=f"medsynth:{type(model).__name__}:{src}->{tgt}",
                  meta={"reference": volume.meta.get("reference", {})})


def translate_file(
    ckpt: str | Path, input: str | Path, output: str | Path, *, dicom_out: str | Path | None = None,
    direction: Literal["forward", "reverse"] = "forward", device: str = "cpu",
) -> Path:
    """Read ``input`` (NIfTI or DICOM), translate it, write ``output`` NIfTI (and optionally a DERIVED DICOM series).

    Args:
        ckpt: checkpoint of a CycleGAN or Pix2Pix run.
        input: NIfTI file or DICOM series folder.
        output: NIfTI file to write (atomically, with a provenance JSON beside it).
        dicom_out: folder for a DICOM series marked DERIVED/synthetic with new UIDs.
        direction: CycleGAN direction.
        device: torch device.
    """
    model = load_translation_model(ckpt, map_location="cpu")
    vol = load_volume(input)
    out = translate_volume(model, vol, direction=direction, device=device)
    prov: dict[str, Any] = {"checkpoint": str(ckpt), "checkpoint_sha256": sha256_file(ckpt), "model": type(model).__name__,
                            "direction": f"{model.source}->{model.target}" if direction == "forward" else f"{model.target}->{model.source}",
                            "input": str(input), "synthetic": True}
    path = write_nifti(out, output, provenance=prov)
    if dicom_out is not None:
        ref = vol.meta.get("reference") or {}
        write_dicom_series(out, dicom_out, series_description=f"medsynth {type(model).__name__} {prov['direction']} synthetic"[:64],
                           derived=True, reference={k: v for k, v in ref.items()} or None, provenance=prov)
    return path
