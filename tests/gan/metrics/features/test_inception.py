"""The Inception-v3 extractors (gan.metrics.features.inception): features equal pytorch-fid's and torchvision's on
the same weights file, and weights files that are missing, wrongly hashed or of the wrong layout are refused.

No pretrained weights can be downloaded here, so "one weights file" is a randomly initialised FID
Inception saved to disk and loaded by both medsynth and pytorch-fid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from gan.metrics.features import (
    FID_WEIGHTS_FILENAME,
    FIDInceptionV3,
    FIDProtocol,
    TorchvisionInceptionExtractor,
    extract_features,
    protocol_record,
    pytorch_fid_protocol_record,
    quantize_uint8,
    random_weights,
)
from gan.metrics.fid import (
    FeatureStats,
    FrechetInceptionDistance,
    KernelInceptionDistance,
    check_comparable,
    fid_from_stats,
)
from gan.metrics.fid_volume import Volume25DFID
from tests.gan.metrics.helpers import images as _images

pytorch_fid_score = pytest.importorskip("pytorch_fid.fid_score")
pytorch_fid_inception = pytest.importorskip("pytorch_fid.inception")

pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(scope="module")
def random_inception() -> FIDInceptionV3:
    """A seeded random FID Inception (what smoke runs use instead of the pytorch-fid file)."""
    return FIDInceptionV3(pretrained=False, seed=7)


@pytest.fixture(scope="module")
def random_fid_weights(tmp_path_factory: pytest.TempPathFactory, random_inception: FIDInceptionV3) -> Path:
    """A randomly initialised FID Inception saved as a state dict (the one weights file for both libraries)."""
    path = tmp_path_factory.mktemp("weights") / "random_fid_inception.pth"
    torch.save(random_inception.state_dict(), path)
    return path


# ---------------------------------------------------------------------------------------------
# features equal pytorch-fid's, on the same weights file and the same images (read from PNGs)


def test_features_and_stats_equal_pytorch_fid(
    random_fid_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchvision.utils import save_image

    images = _images(4, 64, seed=11)  # float in [-1, 1], as a generator outputs them
    files = []
    for i, img in enumerate(images):
        files.append(tmp_path / f"{i}.png")
        save_image(img, files[-1], normalize=True, value_range=(-1, 1))

    def local_weights(*args: object, **kwargs: object) -> dict:
        return torch.load(random_fid_weights, map_location="cpu", weights_only=True)

    monkeypatch.setattr(pytorch_fid_inception, "load_state_dict_from_url", local_weights)
    reference_model = pytorch_fid_inception.InceptionV3([3], use_fid_inception=True)
    ref = pytorch_fid_score.get_activations(files, reference_model, batch_size=4, dims=2048, num_workers=0)

    ours = FIDInceptionV3(random_fid_weights, sha256_prefix=None)
    # the images pytorch-fid read back from PNG are our quantisation of the float images
    read_back = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))) for f in files])
    assert torch.equal(quantize_uint8(images), read_back.permute(0, 3, 1, 2))

    feats = extract_features(images, ours, FIDProtocol.PYTORCH_FID).double().numpy()
    assert feats.std() > 0.1  # non-degenerate features
    np.testing.assert_allclose(feats, ref, rtol=1e-5, atol=1e-5)

    metric = FrechetInceptionDistance(extractor=ours)
    metric.update(images[:3], real=True)
    metric.update(images[3:], real=True)
    stats = metric.real_stats()
    np.testing.assert_allclose(stats.mu, ref.mean(axis=0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stats.sigma, np.cov(ref, rowvar=False), rtol=1e-5, atol=1e-6)
    assert stats.n == 4
    assert stats.protocol["weights_sha256"] == ours.weights_sha256 != "random-init-seed-7"


def test_torchvision_extractor_equals_torchvision_pool_features(tmp_path: Path) -> None:
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False).eval()
    for m in net.modules():  # He init keeps activations of order one through the 94 convolutions
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = tmp_path / "tv_inception.pth"
    torch.save(net.state_dict(), path)
    pooled = {}
    net.avgpool.register_forward_hook(lambda m, i, o: pooled.setdefault("x", o.flatten(1)))
    x01 = _images(2, 299, seed=5).add(1).div(2)
    with torch.no_grad():
        net(x01 * 2 - 1)  # the Google weights expect [-1, 1]
        ours = TorchvisionInceptionExtractor(path, sha256_prefix=None)(x01)
    torch.testing.assert_close(ours, pooled["x"], rtol=1e-5, atol=1e-5)
    assert ours.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# weights files: missing, wrong hash, wrong layout


def test_missing_weights_error_names_file_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError) as err:
        FIDInceptionV3(weights_path=tmp_path)
    assert FID_WEIGHTS_FILENAME in str(err.value) and str(tmp_path) in str(err.value)
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    with pytest.raises(FileNotFoundError) as err:
        FIDInceptionV3()
    assert str(hub / "checkpoints" / FID_WEIGHTS_FILENAME) in str(err.value)
    with pytest.raises(FileNotFoundError, match="inception_v3_google-0cc3c7bd.pth"):
        TorchvisionInceptionExtractor()


def test_weights_with_wrong_sha256_are_refused(random_fid_weights: Path, tmp_path: Path) -> None:
    (tmp_path / FID_WEIGHTS_FILENAME).symlink_to(random_fid_weights)
    with pytest.raises(ValueError, match="sha256 .* does not start with '6726825d'"):
        FIDInceptionV3(weights_path=tmp_path)


def test_weights_with_wrong_layout_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ValueError, match="wrong.pth"):
        FIDInceptionV3(weights_path=path, sha256_prefix=None)


# ---------------------------------------------------------------------------------------------
# random weights: stamped in every record, compared with nothing but themselves


def test_random_weights_are_stamped_and_never_compared_with_pretrained_ones(
    random_inception: FIDInceptionV3, random_fid_weights: Path, tmp_path: Path
) -> None:
    record = protocol_record("pytorch-fid", random_inception)
    assert (record["weights"], record["comparable"], record["weights_sha256"]) == (
        "random(seed=7)", False, "random-init-seed-7")  # fmt: skip
    for metric in (FrechetInceptionDistance(extractor=random_inception),
                   KernelInceptionDistance(extractor=random_inception),
                   Volume25DFID(extractor=random_inception).axis_metrics[0]):  # fmt: skip
        assert metric.protocol_record() == record  # every score and statistics file carries it
    # the same numbers read back from a file count as pretrained weights, identified by the file's hash
    real_record = protocol_record("pytorch-fid", FIDInceptionV3(random_fid_weights, sha256_prefix=None))
    assert (real_record["weights"], real_record["comparable"]) == ("pretrained", True)
    feats = np.random.default_rng(0).standard_normal((6, 16))
    random_stats = FeatureStats.from_features(feats, record)
    saved = FeatureStats.load(random_stats.save(tmp_path / "random.npz"))
    assert saved.protocol == record  # the stamp travels with the statistics file
    check_comparable(saved.protocol, random_stats.protocol)  # the same random network compares with itself
    with pytest.raises(ValueError, match=r"weights: 'random\(seed=7\)' vs 'pretrained'"):
        fid_from_stats(random_stats, FeatureStats.from_features(feats, real_record))
    with pytest.raises(ValueError, match="comparable: False vs True"):
        check_comparable(record, pytorch_fid_protocol_record(2048))
    other_seed = dict(record, weights=random_weights(8), weights_sha256="random-init-seed-8")
    with pytest.raises(ValueError, match=r"random\(seed=8\)"):
        check_comparable(record, other_seed)

