"""The pre-processing of the two FID protocols (gan.metrics.features.protocol), checked against pytorch-fid's
pipeline (PIL, ToTensor, bilinear interpolation) and PIL's bicubic filter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gan.metrics.features import FIDProtocol, preprocess_images

pytestmark = pytest.mark.usefixtures("no_network")


def test_pytorch_fid_preprocessing_matches_its_pipeline_for_grey_images() -> None:
    from torchvision.transforms import ToTensor

    gen = torch.Generator().manual_seed(2)
    grey = torch.randint(0, 256, (2, 1, 57, 83), dtype=torch.uint8, generator=gen)
    # pytorch-fid: PIL convert('RGB'), ToTensor, bilinear interpolate (align_corners=False)
    ref = torch.stack([ToTensor()(Image.fromarray(g[0].numpy(), mode="L").convert("RGB")) for g in grey])
    ref = F.interpolate(ref, size=(41, 41), mode="bilinear", align_corners=False)
    torch.testing.assert_close(preprocess_images(grey, "pytorch-fid", 41), ref, rtol=0, atol=0)


def test_clean_preprocessing_is_pil_bicubic_per_channel() -> None:
    gen = torch.Generator().manual_seed(3)
    u8 = torch.randint(0, 256, (2, 3, 19, 27), dtype=torch.uint8, generator=gen)
    ref = np.empty((2, 3, 37, 37), dtype=np.float32)
    for i in range(2):
        for c in range(3):
            img = Image.fromarray(u8[i, c].numpy().astype(np.float32), mode="F")
            ref[i, c] = np.clip(np.asarray(img.resize((37, 37), Image.BICUBIC)), 0, 255) / 255
    clean = preprocess_images(u8, FIDProtocol.CLEAN, 37)
    np.testing.assert_allclose(clean.numpy(), ref, rtol=0, atol=1e-7)
    bilinear = preprocess_images(u8, FIDProtocol.PYTORCH_FID, 37)
    assert (clean - bilinear).abs().max() > 1e-3  # the protocols really differ
