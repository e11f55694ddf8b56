"""Pretrained weights files: locate, checksum and load them; the one place that does, and it never downloads.

Every pretrained file the project reads is described once, by a :class:`WeightsFile` constant:

* :data:`FID_INCEPTION`: pytorch-fid's FID Inception-v3 (``pt_inception-2015-12-05-6726825d.pth``);
* :data:`TORCHVISION_INCEPTION`: torchvision's ImageNet Inception-v3;
* :data:`ALEXNET`, :data:`VGG16`, :data:`SQUEEZENET1_1`: torchvision's ImageNet backbones of LPIPS (``VGG16``
  with :data:`LPIPS_HEADS_VGG` is also the LPIPS-VGG distance that StyleGAN2's projector uses);
* :data:`LPIPS_HEADS_ALEX`, :data:`LPIPS_HEADS_VGG`, :data:`LPIPS_HEADS_SQUEEZE`: the calibrated linear heads
  (v0.1) shipped inside the ``lpips`` package.

:func:`locate` finds a file: an explicit file, the canonical file name inside an explicit folder, or the file's
default folder (``torch.hub.get_dir()/checkpoints``, which ``TORCH_HOME`` moves; the ``lpips`` package folder for
the heads). A missing file raises ``FileNotFoundError`` naming the exact path to place it at and the address to
download it from on a machine with internet access. :func:`verify` checks the sha256: the prefix carried in the
file name (``<name>-<hex>.<ext>``, the torchvision / torch.hub convention), a required prefix and/or a full
digest. :func:`load_state_dict` reads a state dict with ``torch.load(weights_only=True)`` (no pickled code runs)
and :func:`load` does all three. No Lightning here: nets, losses and metrics all use this module.
"""
from __future__ import annotations

import hashlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch
from torch import Tensor, nn

from data.files import sha256_file

PathLike = Union[str, Path]

__all__ = [
    "ALEXNET",
    "FID_INCEPTION",
    "LPIPS_HEADS_ALEX",
    "LPIPS_HEADS_SQUEEZE",
    "LPIPS_HEADS_VGG",
    "SQUEEZENET1_1",
    "TORCHVISION_INCEPTION",
    "VGG16",
    "LoadedWeights",
    "WeightsFile",
    "hub_checkpoints_dir",
    "load",
    "load_into",
    "load_state_dict",
    "locate",
    "sha256_prefix_in_name",
    "state_dict_sha256",
    "verify",
]

# torchvision / torch.hub convention: "<name>-<first hex digits of the sha256>.<ext>"
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")


@dataclass(frozen=True)
class WeightsFile:
    """A pretrained weights file: its canonical name, where it is published, and how to check it.

    Args:
        filename: canonical file name (looked for inside folders; its hex suffix, if any, is checked).
        url: where the file can be downloaded by hand (quoted in errors; never fetched).
        what: what the file holds, for messages (``"pytorch-fid's FID Inception-v3 weights"``).
        sha256_prefix: required start of the file's sha256 whatever its name; None: only the name's prefix.
        sha256: full expected sha256, or None.
        folder: default folder; None means the torch hub cache, ``torch.hub.get_dir()/checkpoints``.
        fetch_hint: extra words on how to obtain the file (e.g. the torchvision call that saves it).
    """

    filename: str
    url: str
    what: str
    sha256_prefix: str | None = None
    sha256: str | None = None
    folder: Path | None = None
    fetch_hint: str = ""

    def default_path(self) -> Path:
        """Where the file is looked for when no path is given (the hub cache is read at call time)."""
        return (self.folder if self.folder is not None else hub_checkpoints_dir()) / self.filename


@dataclass(frozen=True)
class LoadedWeights:
    """A state dict read from a checked file.

    Args:
        path: the file it came from.
        sha256: the file's full sha256 (recorded with every score made with it).
        state: parameter name -> tensor, on the CPU.
    """

    path: Path
    sha256: str
    state: dict[str, Tensor]


def _torchvision_file(url: str, what: str, builder: str, weights_enum: str) -> WeightsFile:
    """A torchvision ImageNet weights file (its name carries its sha256 prefix).

    Args:
        url: the file's address on download.pytorch.org.
        what: description for messages.
        builder: torchvision builder function (``"alexnet"``).
        weights_enum: the weights enum and member (``"AlexNet_Weights.IMAGENET1K_V1"``).
    """
    member = weights_enum.split(".")[-1]
    return WeightsFile(
        filename=url.rsplit("/", 1)[-1],
        url=url,
        what=what,
        fetch_hint=(f" (torchvision.models.{weights_enum}; `torchvision.models.{builder}(weights='{member}')` saves "
                    "it under <torch.hub.get_dir()>/checkpoints/)"),
    )


def _lpips_heads_dir() -> Path | None:
    """``<lpips package>/weights/v0.1``, found without importing the package (None when it is not installed)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "weights" / "v0.1"


def _lpips_heads(net: str, sha256: str) -> WeightsFile:
    """The lpips package's calibrated linear heads for one backbone.

    Args:
        net: ``"alex"``, ``"vgg"`` or ``"squeeze"`` (the file is ``<net>.pth``).
        sha256: digest of the file shipped with lpips 0.1.4.
    """
    return WeightsFile(
        filename=f"{net}.pth",
        url=f"https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/{net}.pth",
        what=f"the lpips package's linear-head weights (v0.1) for the {net!r} backbone",
        sha256=sha256,
        folder=_lpips_heads_dir(),
        fetch_hint=" (they ship inside the lpips package: reinstall lpips)",
    )


FID_INCEPTION = WeightsFile(
    filename="pt_inception-2015-12-05-6726825d.pth",
    url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    what="pytorch-fid's FID Inception-v3 weights",
    sha256_prefix="6726825d",
)
TORCHVISION_INCEPTION = WeightsFile(
    filename="inception_v3_google-0cc3c7bd.pth",
    url="https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
    what="torchvision's ImageNet Inception-v3 weights",
    sha256_prefix="0cc3c7bd",
)
ALEXNET = _torchvision_file("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                            "torchvision's ImageNet AlexNet weights (LPIPS 'alex' backbone)", "alexnet",
                            "AlexNet_Weights.IMAGENET1K_V1")
VGG16 = _torchvision_file("https://download.pytorch.org/models/vgg16-397923af.pth",
                          "torchvision's ImageNet VGG16 weights (LPIPS 'vgg' backbone)", "vgg16",
                          "VGG16_Weights.IMAGENET1K_V1")
SQUEEZENET1_1 = _torchvision_file("https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
                                  "torchvision's ImageNet SqueezeNet 1.1 weights (LPIPS 'squeeze' backbone)",
                                  "squeezenet1_1", "SqueezeNet1_1_Weights.IMAGENET1K_V1")
LPIPS_HEADS_ALEX = _lpips_heads("alex", "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0")
LPIPS_HEADS_VGG = _lpips_heads("vgg", "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868")
LPIPS_HEADS_SQUEEZE = _lpips_heads("squeeze", "4a5350f23600cb79923ce65bb07cbf57dca461329894153e05a1346bd531cf76")


def hub_checkpoints_dir() -> Path:
    """The torch hub cache's checkpoint folder, ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/...``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_prefix_in_name(name: str) -> str | None:
    """The sha256 prefix a file name carries by the torchvision convention (``alexnet-owt-7be5be79.pth``), or None.

    Args:
        name: a file name.
    """
    match = _HASH_IN_NAME.search(name)
    return match.group(1) if match else None


def locate(spec: WeightsFile, path: PathLike | None = None, *, option: str = "weights_path") -> Path:
    """Find a weights file: ``path`` itself, ``spec.filename`` inside the folder ``path``, or the default folder.

    Args:
        spec: the file looked for.
        path: an explicit file, a folder holding ``spec.filename``, or None for ``spec.default_path()``.
        option: the argument that takes ``path``, named in the error (``"weights_path"``, ``"--weights"``).

    Raises:
        FileNotFoundError: naming the exact path to place the file at and where to download it from.
    """
    default = spec.default_path()
    if path is None:
        candidate = default
    else:
        given = Path(path).expanduser()
        candidate = given / spec.filename if given.is_dir() else given
    if candidate.is_file():
        return candidate
    elsewhere = "" if candidate == default else f" (or at {default}, where it is found without {option})"
    raise FileNotFoundError(
        f"weights file not found: {candidate} ({spec.what}). Nothing is downloaded at run time: on a machine with "
        f"internet access download {spec.url}{spec.fetch_hint}, then place it at {candidate}{elsewhere}, or pass "
        f"{option}=<file or folder>."
    )


def verify(path: PathLike, *, sha256_prefix: str | None = None, sha256: str | None = None,
           what: str = "the expected weights") -> str:
    """Check a file's sha256 and return it.

    Checked, in order: the required ``sha256_prefix``, the prefix in the file's own name (torchvision convention,
    ``<name>-<hex>.<ext>``) and the full ``sha256``.

    Args:
        path: the file.
        sha256_prefix: required start of the digest, or None.
        sha256: full expected digest, or None.
        what: what the file should hold, for the message.

    Raises:
        ValueError: a check fails (the file is corrupt, truncated or holds another network).
    """
    path = Path(path)
    digest = sha256_file(path)
    name_prefix = sha256_prefix_in_name(path.name)
    checks = (
        (sha256_prefix, f"the hash of {what}",
         " Replace it, or pass sha256_prefix=None to use a custom file on purpose (its hash is then recorded with "
         "every score)."),
        (name_prefix, "the prefix its file name carries (torchvision's convention)",
         " Replace it with the published file, or rename it if the hex part of its name is not a hash."),
        (sha256, f"the full hash of {what}", " Replace it with the published file."),
    )
    for expected, source, hint in checks:
        if expected is not None and not digest.startswith(expected.lower()):
            raise ValueError(
                f"{path}: sha256 {digest[:16]}... does not start with '{expected}', {source}; the file is corrupt, "
                f"truncated or holds another network.{hint}"
            )
    return digest


def load_state_dict(path: PathLike, *, what: str = "a network") -> dict[str, Tensor]:
    """Read a state dict (name -> tensor) with ``torch.load(weights_only=True)``, so no pickled code runs.

    Args:
        path: the file.
        what: what the file should hold, for the message.

    Raises:
        ValueError: the file cannot be read that way, or holds something other than a state dict.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable or unsafe files
        raise ValueError(
            f"{path}: cannot be read as a PyTorch state dict of {what} with torch.load(weights_only=True) ({exc})"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict (name -> tensor) of {what}, got {type(state).__name__}")
    return state


def load(spec: WeightsFile, path: PathLike | None = None, *, option: str = "weights_path") -> LoadedWeights:
    """Locate, check and read a weights file (:func:`locate`, :func:`verify`, :func:`load_state_dict`).

    Args:
        spec: the file (use ``dataclasses.replace(spec, sha256_prefix=None)`` to accept a custom file).
        path: explicit file or folder, or None for the default folder.
        option: the argument that takes ``path``, named in errors.
    """
    found = locate(spec, path, option=option)
    digest = verify(found, sha256_prefix=spec.sha256_prefix, sha256=spec.sha256, what=spec.what)
    return LoadedWeights(path=found, sha256=digest, state=load_state_dict(found, what=spec.what))


def load_into(module: nn.Module, weights: LoadedWeights, *, what: str) -> None:
    """``module.load_state_dict(weights.state, strict=True)`` with an error that names the file.

    Args:
        module: the network to fill.
        weights: what :func:`load` read.
        what: what the file should hold, for the message.

    Raises:
        ValueError: the state dict does not fit the network.
    """
    try:
        module.load_state_dict(weights.state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{weights.path}: does not hold {what}: {exc}") from exc


def state_dict_sha256(module: nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes and raw bytes, in name order): its weights' identity.

    Args:
        module: the module to fingerprint.
    """
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        t = value.detach().to("cpu").contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
