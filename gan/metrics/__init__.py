"""Metrics: functional metrics beside torchmetrics classes, FID/KID on pinned protocols, the memorization audit.

* ``image`` / ``volume`` / ``synthrad``: MAE, PSNR, SSIM in physical units with masks, and the SynthRAD protocols
  (functional); ``patient_average``: their patient-averaged torchmetrics classes (``VolumeMetrics``,
  ``LesionSUVMetrics``);
* ``frechet``: the Fréchet distance and KID math; ``fid``: FID/KID metrics and cached statistics;
  ``features/``: protocols, the Inception extractors and any-module extractors;
* ``fid_volume``: 2.5D FID/KID for volumes and the slice selection; ``fid_per_class``: per-class FID/KID;
* ``prdc``: precision/recall/density/coverage on k-NN feature manifolds (functional and metric, per class);
* ``swd``: the multi-scale sliced Wasserstein distance on Laplacian-pyramid patches (needs no weights);
* ``memorization/``: nearest neighbours, the data-copying test, the report and the audit.
"""
from gan.metrics.features import (
    FIDInceptionV3,
    FIDProtocol,
    ModuleExtractor,
    TimmExtractor,
    TorchvisionExtractor,
    TorchvisionInceptionExtractor,
    extract_features,
)
from gan.metrics.fid import (
    FeatureStats,
    FIDResult,
    FrechetInceptionDistance,
    KernelInceptionDistance,
    KIDResult,
    fid_from_stats,
    fid_is_biased,
)
from gan.metrics.fid_per_class import ClassConditionalFID, ClassConditionalKID
from gan.metrics.fid_volume import Volume25DFID, Volume25DFIDResult, slice_indices, volume_slices
from gan.metrics.frechet import frechet_distance, kid
from gan.metrics.image import local_moments, mae, psnr, ssim, ssim_map
from gan.metrics.memorization import (
    CopyingVerdict,
    MemorizationReport,
    audit,
    calibrate_threshold,
    data_copying_test,
    lpips_nearest,
    nearest_neighbours,
)
from gan.metrics.patient_average import LesionSUVMetrics, VolumeMetrics
from gan.metrics.prdc import PRDCResult, PrecisionRecallDensityCoverage, precision_recall_density_coverage
from gan.metrics.swd import SlicedWassersteinDistance, SWDResult, sliced_wasserstein_distance
from gan.metrics.synthrad import (
    synthrad2023_metrics,
    synthrad2023_ssim,
    synthrad2025_metrics,
    synthrad2025_ms_ssim,
)
from gan.metrics.volume import (
    PROTOCOLS,
    Protocol,
    default_data_range,
    lesion_suv_errors,
    metric_names,
    volume_metric_tensors,
    volume_metrics,
)

__all__ = [
    "CopyingVerdict",
    "MemorizationReport",
    "audit",
    "calibrate_threshold",
    "data_copying_test",
    "lpips_nearest",
    "nearest_neighbours",
    "ClassConditionalFID",
    "ClassConditionalKID",
    "Volume25DFID",
    "Volume25DFIDResult",
    "fid_is_biased",
    "slice_indices",
    "volume_slices",
    "FIDInceptionV3",
    "FIDProtocol",
    "FIDResult",
    "FeatureStats",
    "FrechetInceptionDistance",
    "KIDResult",
    "KernelInceptionDistance",
    "ModuleExtractor",
    "PRDCResult",
    "PrecisionRecallDensityCoverage",
    "SWDResult",
    "SlicedWassersteinDistance",
    "TimmExtractor",
    "TorchvisionExtractor",
    "TorchvisionInceptionExtractor",
    "extract_features",
    "fid_from_stats",
    "frechet_distance",
    "kid",
    "PROTOCOLS",
    "LesionSUVMetrics",
    "Protocol",
    "VolumeMetrics",
    "default_data_range",
    "lesion_suv_errors",
    "local_moments",
    "mae",
    "metric_names",
    "precision_recall_density_coverage",
    "psnr",
    "ssim",
    "sliced_wasserstein_distance",
    "ssim_map",
    "synthrad2023_metrics",
    "synthrad2023_ssim",
    "synthrad2025_metrics",
    "synthrad2025_ms_ssim",
    "volume_metric_tensors",
    "volume_metrics",
]
