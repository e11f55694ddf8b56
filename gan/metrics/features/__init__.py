"""Features for FID/KID, precision/recall and the memorization audit: protocols, the Inception-v3 extractors,
domain (timm/torchvision) and any-module extractors.

* ``protocol``: :class:`FIDProtocol`, the pinned pre-processing and :func:`protocol_record`;
* ``inception``: :class:`FIDInceptionV3` and :class:`TorchvisionInceptionExtractor` (weights through ``gan.weights``);
* ``extractor``: the :class:`FeatureExtractor` base, :class:`ModuleExtractor` and :func:`extract_features`;
* ``domain``: :class:`TimmExtractor` and :class:`TorchvisionExtractor`, any timm / torchvision backbone (e.g. a
  pathology encoder) from a local weights file.
"""
from gan.metrics.features.domain import TimmExtractor, TorchvisionExtractor
from gan.metrics.features.extractor import FeatureExtractor, ModuleExtractor, extract_features
from gan.metrics.features.inception import (
    FID_WEIGHTS_FILENAME,
    FID_WEIGHTS_SHA256_PREFIX,
    FID_WEIGHTS_URL,
    TORCHVISION_INCEPTION_FILENAME,
    TORCHVISION_INCEPTION_SHA256_PREFIX,
    TORCHVISION_INCEPTION_URL,
    FIDInceptionV3,
    TorchvisionInceptionExtractor,
)
from gan.metrics.features.protocol import (
    FIDProtocol,
    preprocess_images,
    protocol_record,
    pytorch_fid_protocol_record,
    quantize_uint8,
    random_weights,
)

__all__ = [
    "FID_WEIGHTS_FILENAME",
    "FID_WEIGHTS_SHA256_PREFIX",
    "FID_WEIGHTS_URL",
    "TORCHVISION_INCEPTION_FILENAME",
    "TORCHVISION_INCEPTION_SHA256_PREFIX",
    "TORCHVISION_INCEPTION_URL",
    "FIDInceptionV3",
    "FIDProtocol",
    "FeatureExtractor",
    "ModuleExtractor",
    "TimmExtractor",
    "TorchvisionExtractor",
    "TorchvisionInceptionExtractor",
    "extract_features",
    "preprocess_images",
    "protocol_record",
    "pytorch_fid_protocol_record",
    "quantize_uint8",
    "random_weights",
]
