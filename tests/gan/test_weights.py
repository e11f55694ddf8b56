"""gan.weights: locating a weights file (explicit path, folder, torch hub cache under TORCH_HOME), checking its sha256
(prefix in the name, required prefix, full digest) and loading it without executing pickled code. Every file here is
a small random state dict whose digest the test computes itself; nothing is downloaded."""
from __future__ import annotations

import hashlib
import socket
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from gan.weights import (
    ALEXNET,
    FID_INCEPTION,
    LPIPS_HEADS_ALEX,
    LPIPS_HEADS_SQUEEZE,
    LPIPS_HEADS_VGG,
    SQUEEZENET1_1,
    TORCHVISION_INCEPTION,
    VGG16,
    WeightsFile,
    hub_checkpoints_dir,
    load,
    load_into,
    load_state_dict,
    locate,
    sha256_prefix_in_name,
    state_dict_sha256,
    verify,
)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture()
def torch_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """TORCH_HOME pointing at an empty temporary folder (and no hub folder set in code)."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return home


def _net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))


def _save_named(net: nn.Module, folder: Path, stem: str) -> tuple[Path, str]:
    """Save ``net``'s state dict as ``<stem>-<first 8 hex digits of its sha256>.pth`` (torchvision's convention)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{stem}.tmp"
    torch.save(net.state_dict(), tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = folder / f"{stem}-{digest[:8]}.pth"
    tmp.rename(path)
    return path, digest


def _spec(name: str, **kwargs: object) -> WeightsFile:
    return WeightsFile(filename=name, url=f"https://example.org/weights/{name}", what="the tiny test net", **kwargs)


def test_missing_file_error_names_the_exact_path_and_the_address(torch_home: Path, tmp_path: Path) -> None:
    spec = _spec("tiny-0123abcd.pth")
    expected = torch_home / "hub" / "checkpoints" / "tiny-0123abcd.pth"
    assert spec.default_path() == expected and hub_checkpoints_dir() == expected.parent
    with pytest.raises(FileNotFoundError) as err:
        locate(spec)
    message = str(err.value)
    assert f"place it at {expected}," in message and "https://example.org/weights/tiny-0123abcd.pth" in message
    assert "Nothing is downloaded" in message
    # an explicit folder: the file is expected inside it, under its canonical name
    with pytest.raises(FileNotFoundError, match=f"place it at {tmp_path / 'tiny-0123abcd.pth'} "):
        locate(spec, tmp_path)
    # an explicit file: that exact path, and the default place as the alternative, with the option to pass
    with pytest.raises(FileNotFoundError) as err:
        locate(spec, tmp_path / "mine.pth", option="--weights")
    message = str(err.value)
    assert f"place it at {tmp_path / 'mine.pth'} (or at {expected}, where it is found without --weights)" in message
    assert "pass --weights=<file or folder>" in message


def test_hub_cache_lookup_follows_torch_home(torch_home: Path) -> None:
    path, digest = _save_named(_net(), torch_home / "hub" / "checkpoints", "tiny")
    spec = _spec(path.name)
    assert locate(spec) == path
    loaded = load(spec)
    assert loaded.path == path and loaded.sha256 == digest
    assert FID_INCEPTION.default_path() == torch_home / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
    assert ALEXNET.default_path().name == "alexnet-owt-7be5be79.pth" and VGG16.filename == "vgg16-397923af.pth"


def test_a_correct_file_loads_by_path_folder_and_full_digest(tmp_path: Path) -> None:
    net = _net()
    path, digest = _save_named(net, tmp_path / "w", "tiny")
    for given in (path, path.parent, str(path)):
        loaded = load(_spec(path.name, sha256=digest, sha256_prefix=digest[:12]), given)
        assert loaded.sha256 == digest
        assert loaded.state.keys() == net.state_dict().keys()
        assert all(torch.equal(loaded.state[k], v) for k, v in net.state_dict().items())
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    load_into(other, loaded, what="the tiny test net")
    assert state_dict_sha256(other) == state_dict_sha256(net) != state_dict_sha256(nn.Sequential(*list(net)[:2]))
    with pytest.raises(ValueError, match=rf"{path.name}: does not hold the tiny test net"):
        load_into(nn.Linear(2, 2), loaded, what="the tiny test net")


def test_wrong_sha256_is_refused(tmp_path: Path) -> None:
    path, digest = _save_named(_net(), tmp_path, "tiny")
    assert sha256_prefix_in_name(path.name) == digest[:8] and sha256_prefix_in_name("weights.pth") is None
    # the prefix in the file name (torchvision's convention) does not match the content
    renamed = path.with_name("tiny-deadbeef.pth")
    path.rename(renamed)
    with pytest.raises(ValueError, match=r"tiny-deadbeef\.pth: sha256 .* does not start with 'deadbeef', the prefix"):
        load(_spec("tiny-deadbeef.pth"), renamed)
    # a required prefix (a file published under another name) or a full digest that do not match
    plain = renamed.rename(tmp_path / "weights.pth")
    with pytest.raises(ValueError, match="does not start with '0badc0de', the hash of the tiny test net"):
        load(_spec("weights.pth", sha256_prefix="0badc0de"), plain)
    with pytest.raises(ValueError, match="the full hash of the tiny test net"):
        verify(plain, sha256="0" * 64, what="the tiny test net")
    assert verify(plain, sha256=digest, sha256_prefix=digest[:8]) == digest
    # accepting a custom file on purpose: no required prefix
    assert load(replace(_spec("weights.pth", sha256_prefix="0badc0de"), sha256_prefix=None), plain).sha256 == digest


def test_unreadable_or_foreign_files_are_refused_without_running_code(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pth: cannot be read as a PyTorch state dict"):
        load_state_dict(junk)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], listed)
    with pytest.raises(ValueError, match=r"list\.pth: expected a state dict \(name -> tensor\)"):
        load_state_dict(listed)
    pickled = tmp_path / "pickled.pth"
    torch.save({"weight": torch.zeros(1), "module": nn.Linear(1, 1)}, pickled)  # would need pickled code
    with pytest.raises(ValueError, match=r"weights_only=True"):
        load_state_dict(pickled)


def test_lpips_heads_shipped_with_the_package_match_their_digests() -> None:
    for spec in (LPIPS_HEADS_ALEX, LPIPS_HEADS_VGG, LPIPS_HEADS_SQUEEZE):
        path = locate(spec)
        assert path.parent.name == "v0.1" and path.parent.parent.parent.name == "lpips"
        assert verify(path, sha256=spec.sha256) == spec.sha256


def test_torchvision_files_are_the_ones_torchvision_names() -> None:
    from torchvision import models

    pairs = ((ALEXNET, models.AlexNet_Weights.IMAGENET1K_V1), (VGG16, models.VGG16_Weights.IMAGENET1K_V1),
             (SQUEEZENET1_1, models.SqueezeNet1_1_Weights.IMAGENET1K_V1),
             (TORCHVISION_INCEPTION, models.Inception_V3_Weights.IMAGENET1K_V1))  # fmt: skip
    for spec, weights in pairs:
        assert spec.url == weights.url and spec.filename == weights.url.rsplit("/", 1)[-1]
        assert sha256_prefix_in_name(spec.filename) is not None
    assert sha256_prefix_in_name(FID_INCEPTION.filename) == FID_INCEPTION.sha256_prefix == "6726825d"

