"""Domain extractors (gan.metrics.features.domain): a timm or torchvision backbone from a local weights file gives the
features of the network that wrote the file, its record names the model, the file's sha256, input size, normalisation
and resize; a missing file names the exact path to place it at; nothing touches the network.

No pretrained weights can be downloaded here, so "a weights file" is a randomly initialised model saved to disk.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from data.files import sha256_file
from gan.metrics import PrecisionRecallDensityCoverage, TimmExtractor, TorchvisionExtractor
from gan.metrics.features import extract_features, preprocess_images, protocol_record
from gan.metrics.fid import check_comparable
from tests.gan.metrics.helpers import images

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.usefixtures("no_network")

MODEL = "resnet10t"  # a small timm ResNet: fast on CPU
SIZE = 64  # input size used in the tests (the record says so)


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    """A full timm model (classification head included) with random weights, saved as the user's weights file."""
    torch.manual_seed(3)
    net = timm.create_model(MODEL, pretrained=False).eval()
    path = tmp_path_factory.mktemp("weights") / "encoder-v1.pth"
    torch.save(net.state_dict(), path)
    return path, net


@pytest.fixture(scope="module")
def timm_ext(timm_file) -> TimmExtractor:
    return TimmExtractor(MODEL, timm_file[0], input_size=SIZE)


def test_timm_features_equal_the_saved_networks_pooled_features(timm_file, timm_ext) -> None:
    path, net = timm_file
    ext = timm_ext
    x = images(4, 48, seed=1)
    cfg = net.pretrained_cfg
    with torch.no_grad():
        pre = preprocess_images(x, "pytorch-fid", SIZE)
        mean, std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)
        ref = net.forward_head(net.forward_features((pre - mean) / std), pre_logits=True)
    feats = extract_features(x, ext, "pytorch-fid")
    assert feats.shape == (4, ext.dim) and ext.dim == ref.shape[1]
    torch.testing.assert_close(feats, ref, rtol=1e-5, atol=1e-5)
    rec = protocol_record("clean", ext)
    assert rec["extractor"] == f"timm:{MODEL}" and rec["weights_sha256"] == sha256_file(path)
    assert rec["weights"] == "pretrained" and rec["comparable"] is True
    assert rec["input_size"] == SIZE and rec["resize_filter"] == "pil-bicubic-float32-per-channel"
    assert rec["input_normalisation"] == f"(x-{tuple(cfg['mean'])})/{tuple(cfg['std'])}"


def test_safetensors_file_gives_the_same_features(timm_file, timm_ext, tmp_path) -> None:
    from safetensors.torch import save_file

    _, net = timm_file
    st = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(st))
    a, b = timm_ext, TimmExtractor(MODEL, st, input_size=SIZE)
    x = images(2, 32, seed=2)
    torch.testing.assert_close(extract_features(x, a, "pytorch-fid"), extract_features(x, b, "pytorch-fid"))
    assert b.weights_sha256 == sha256_file(st) != a.weights_sha256


def test_scores_of_different_extractors_are_never_compared(timm_ext) -> None:
    a = protocol_record("pytorch-fid", timm_ext)
    b = protocol_record("pytorch-fid", TimmExtractor(MODEL, pretrained=False, seed=0, input_size=SIZE))
    assert b["weights"] == "random(seed=0)" and b["comparable"] is False
    with pytest.raises(ValueError, match="not comparable.*weights"):
        check_comparable(a, b)


def test_missing_weights_name_the_exact_path(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "timm" / f"{MODEL}.pth"
    with pytest.raises(FileNotFoundError, match="weights file not found") as err:
        TimmExtractor(MODEL)
    assert f"place it at {expected}" in str(err.value) and "huggingface.co" in str(err.value)
    folder = tmp_path / "mine"
    folder.mkdir()
    with pytest.raises(FileNotFoundError) as err:
        TimmExtractor(MODEL, folder)
    assert f"place it at {folder / (MODEL + '.pth')}" in str(err.value)
    with pytest.raises(FileNotFoundError) as err:
        TorchvisionExtractor("mobilenet_v3_small")
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth") in str(err.value)


def test_a_file_of_another_network_is_refused_naming_it(tmp_path) -> None:
    bad = tmp_path / "other.pth"
    torch.save(nn.Linear(3, 3).state_dict(), bad)
    with pytest.raises(ValueError, match=f"{bad}: does not hold timm model"):
        TimmExtractor(MODEL, bad, input_size=SIZE)
    with pytest.raises(ValueError, match="does not start with 'deadbeef'"):
        TimmExtractor(MODEL, bad, sha256_prefix="deadbeef")


def test_torchvision_features_equal_the_saved_networks_penultimate_layer(tmp_path) -> None:
    torch.manual_seed(4)
    net = torchvision.models.mobilenet_v3_small(weights=None).eval()
    path = tmp_path / "mobilenet-custom.pth"
    torch.save(net.state_dict(), path)
    ext = TorchvisionExtractor("mobilenet_v3_small", path, input_size=SIZE)
    net.classifier[3] = nn.Identity()  # the last nn.Linear
    x = images(3, 40, seed=5)
    with torch.no_grad():
        pre = preprocess_images(x, "pytorch-fid", SIZE)
        mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
        std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
        ref = net((pre - mean) / std)
    torch.testing.assert_close(extract_features(x, ext, "pytorch-fid"), ref, rtol=1e-5, atol=1e-5)
    assert ext.dim == 1024 and protocol_record("pytorch-fid", ext)["extractor"] == "torchvision:mobilenet_v3_small"


def test_a_domain_extractor_drives_precision_recall_with_its_record() -> None:
    ext = TimmExtractor(MODEL, pretrained=False, seed=1, input_size=SIZE)
    metric = PrecisionRecallDensityCoverage(extractor=ext, k=2)
    metric.update(images(6, 32, seed=6), real=True)
    metric.update(images(6, 32, seed=7), real=False)
    result = metric.compute()
    assert set(result.overall) == {"precision", "recall", "density", "coverage"}
    assert result.protocol["features"]["extractor"] == f"timm:{MODEL}"
    assert result.protocol["features"]["comparable"] is False
