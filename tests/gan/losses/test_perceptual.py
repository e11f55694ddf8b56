"""LPIPS perceptual loss against the lpips package's own LPIPS (with the same backbone weights); weights files are
local only (missing, wrong hash, unreadable)."""
from __future__ import annotations

import hashlib
import socket
import urllib.request
from pathlib import Path

import lpips
import lpips.pretrained_networks
import numpy as np
import pytest
import torch
import torchvision

from gan.losses import LPIPSLoss, backbone_file_name

torch.set_num_threads(1)


@pytest.fixture()
def no_network(monkeypatch, tmp_path):
    """Any download attempt fails loudly; the torch hub cache points at an empty folder."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:1]}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


@pytest.fixture(scope="module")
def alex_features(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """Random AlexNet trunk weights saved like torchvision's file: `<name>-<sha256 prefix>.pth`."""
    torch.manual_seed(1234)
    features = torchvision.models.alexnet(weights=None).features
    state = {f"features.{k}": v.clone() for k, v in features.state_dict().items()}
    folder = tmp_path_factory.mktemp("weights")
    tmp = folder / "alexnet.tmp"
    torch.save(state, tmp)
    sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = folder / f"alexnet-random-{sha[:8]}.pth"
    tmp.rename(path)
    return path, state


@pytest.fixture()
def reference_lpips(monkeypatch, alex_features):
    """The lpips package's LPIPS with its shipped linear heads and a trunk taken from the same random weights:
    lpips slices torchvision's alexnet itself, so no key mapping of ours is involved."""
    _, state = alex_features
    real_alexnet = torchvision.models.alexnet

    def seeded_alexnet(*args, **kwargs):
        model = real_alexnet(weights=None)
        model.load_state_dict(state, strict=False)
        return model

    with monkeypatch.context() as patch:  # patched only while the reference is built
        patch.setattr(lpips.pretrained_networks.tv, "alexnet", seeded_alexnet)
        return lpips.LPIPS(pretrained=True, net="alex", pnet_rand=False, verbose=False).eval()


def _images(seed: int, shape):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1


@pytest.mark.filterwarnings("ignore::UserWarning")  # torchvision's notice about lpips's `pretrained=` call
def test_lpips_package_builds_without_network(no_network):
    model = lpips.LPIPS(pnet_rand=True, pretrained=True, net="alex", verbose=False)
    assert model(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32)).item() == 0.0


def test_lpips_equals_lpips_package(no_network, alex_features, reference_lpips):
    path, _ = alex_features
    loss = LPIPSLoss(net="alex", pretrained=True, backbone_weights=path, reduction="none")
    a, b = _images(0, (3, 3, 48, 40)), _images(1, (3, 3, 48, 40))
    expected = reference_lpips(a, b).flatten()
    torch.testing.assert_close(loss(a, b), expected, rtol=1e-5, atol=1e-7)
    mean_loss = LPIPSLoss(pretrained=True, backbone_weights=str(path))
    assert mean_loss(a, b).item() == pytest.approx(expected.mean().item(), rel=1e-5)
    assert loss(a, a).abs().max().item() == 0.0
    # the loaded trunk matters: a random trunk with the same heads gives other values
    assert not torch.allclose(LPIPSLoss(pretrained=False, reduction="none")(a, b), expected, rtol=1e-3)


def test_lpips_grey_is_repeated_to_rgb(no_network, alex_features, reference_lpips):
    path, _ = alex_features
    loss = LPIPSLoss(pretrained=True, backbone_weights=path, reduction="none")
    a, b = _images(2, (2, 1, 32, 36)), _images(3, (2, 1, 32, 36))
    expected = reference_lpips(a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)).flatten()
    torch.testing.assert_close(loss(a, b), expected, rtol=1e-5, atol=1e-7)


def test_lpips_25d_is_mean_of_per_axis_slices(no_network, alex_features, reference_lpips):
    path, _ = alex_features
    a, b = _images(4, (2, 1, 32, 33, 34)), _images(5, (2, 1, 32, 33, 34))
    rgb = lambda s: s.repeat(1, 3, 1, 1)  # noqa: E731
    with torch.no_grad():
        axial = [reference_lpips(rgb(a[:, :, i]), rgb(b[:, :, i])).flatten() for i in range(32)]
        coronal = [reference_lpips(rgb(a[:, :, :, i]), rgb(b[:, :, :, i])).flatten() for i in range(33)]
        sagittal = [reference_lpips(rgb(a[..., i]), rgb(b[..., i])).flatten() for i in range(34)]
    per_axis = [torch.stack(v).mean(0) for v in (axial, coronal, sagittal)]  # each (N,)
    expected = torch.stack(per_axis).mean(0)
    loss = LPIPSLoss(pretrained=True, backbone_weights=path, spatial_dims=3, reduction="none")
    torch.testing.assert_close(loss(a, b), expected, rtol=1e-5, atol=1e-7)

    only_axial = LPIPSLoss(pretrained=True, backbone_weights=path, spatial_dims=3, slice_axes=(0,))
    assert only_axial(a, b).item() == pytest.approx(per_axis[0].mean().item(), rel=1e-5)

    # evenly spaced subset: 4 of 32/33/34 slices per axis, positions from numpy
    subset = LPIPSLoss(pretrained=True, backbone_weights=path, spatial_dims=3, max_slices=4, reduction="none")
    picks = [np.rint(np.linspace(0, n - 1, 4)).astype(int) for n in (32, 33, 34)]
    sub_expected = torch.stack(
        [torch.stack([v[i] for i in idx]).mean(0) for v, idx in zip((axial, coronal, sagittal), picks)]
    ).mean(0)
    torch.testing.assert_close(subset(a, b), sub_expected, rtol=1e-5, atol=1e-7)


def test_lpips_is_frozen_eval_and_passes_gradients(no_network, alex_features):
    path, _ = alex_features
    loss = LPIPSLoss(pretrained=True, backbone_weights=path)
    loss.train()
    assert loss.training and not loss.lpips.training
    assert not any(m.training for m in loss.lpips.modules())
    assert not any(p.requires_grad for p in loss.parameters())
    a = _images(6, (1, 3, 32, 32)).requires_grad_(True)
    loss(a, _images(7, (1, 3, 32, 32))).backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_missing_backbone_names_the_file(no_network):
    expected = no_network / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert backbone_file_name("alex") == "alexnet-owt-7be5be79.pth"
    with pytest.raises(FileNotFoundError) as info:
        LPIPSLoss(net="alex", pretrained=True)
    assert str(expected) in str(info.value)
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):
        LPIPSLoss(net="vgg", pretrained=True, backbone_weights=no_network / "nowhere.pth")


def test_sha_mismatch_is_rejected(no_network, alex_features, tmp_path):
    _, state = alex_features
    # torchvision's name in the hub cache, but other content
    cached = no_network / "checkpoints" / "alexnet-owt-7be5be79.pth"
    cached.parent.mkdir()
    torch.save(state, cached)
    with pytest.raises(ValueError, match=r"alexnet-owt-7be5be79\.pth.*7be5be79"):
        LPIPSLoss(pretrained=True)
    wrong = tmp_path / "alexnet-deadbeef.pth"
    torch.save(state, wrong)
    with pytest.raises(ValueError, match="deadbeef"):
        LPIPSLoss(pretrained=True, backbone_weights=wrong)


def test_unreadable_or_foreign_weights_are_rejected(no_network, tmp_path):
    junk = tmp_path / "backbone.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="backbone.pth"):
        LPIPSLoss(pretrained=True, backbone_weights=junk)
    foreign = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, foreign)
    with pytest.raises(ValueError, match=r"other\.pth.*missing"):
        LPIPSLoss(pretrained=True, backbone_weights=foreign)


def test_random_lpips_needs_no_files(no_network):
    loss = LPIPSLoss(pretrained=False, spatial_dims=3, slice_axes=(1, 2), max_slices=2, reduction="none")
    a, b = _images(8, (2, 1, 31, 32, 33)), _images(9, (2, 1, 31, 32, 33))
    v = loss(a, b)
    assert v.shape == (2,) and torch.isfinite(v).all()
    with pytest.raises(ValueError, match=r"at least 31"):
        loss(a[:, :, :, :20], b[:, :, :, :20])
    with pytest.raises(ValueError, match="1 \\(grey\\) or 3"):
        LPIPSLoss(pretrained=False)(torch.zeros(1, 2, 32, 32), torch.zeros(1, 2, 32, 32))
