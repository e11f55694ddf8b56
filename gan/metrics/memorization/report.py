"""The memorization report: summary, per-image columns, and its JSON / PNG files (written through data.files).

:meth:`MemorizationReport.save` writes ``memorization.json`` (nested objects indented, per-image columns kept on one
line), a histogram of nearest-neighbour distances and a PNG of the closest pairs, each file atomically.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from data.files import atomic_write_bytes, to_jsonable
from gan.metrics.memorization.copying import CopyingVerdict, DataCopyingResult
from gan.metrics.memorization.neighbours import Distance

PathLike = Union[str, Path]

__all__ = ["MemorizationReport"]


def _json_text(obj: Any, level: int = 0) -> str:
    """JSON with nested objects indented and lists of plain values kept on one line (compact per-image columns).

    Args:
        obj: JSON-ready value (no NaN or infinity).
        level: current indentation level.
    """
    inner, outer = "  " * (level + 1), "  " * level
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(str(key))}: {_json_text(value, level + 1)}" for key, value in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + outer + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + _json_text(v, level + 1) for v in obj) + "\n" + outer + "]"
    return json.dumps(obj, allow_nan=False)


@dataclass
class MemorizationReport:
    """Result of :func:`audit`.

    Args:
        metric: feature-space distance used for nearest neighbours and the threshold.
        quantile: calibration quantile of the near-copy thresholds.
        k: feature-space candidates re-ranked by LPIPS.
        feature_distance: (m,) distance of each generated image to its nearest training image (features).
        feature_index: (m,) index of that training image.
        heldout_feature_distance: (n,) the same for the held-out real images (the calibration sample).
        feature_threshold: near-copy threshold in feature space.
        lpips_distance: (m,) LPIPS to the LPIPS-nearest of the ``k`` feature candidates, or None.
        lpips_index: (m,) index of that training image, or None.
        heldout_lpips_distance: (n,) the same for held-out images, or None.
        lpips_threshold: near-copy LPIPS threshold, or None.
        near_copy: (m,) True where a generated image lies under the feature threshold or the LPIPS threshold.
        near_copy_fraction: fraction of generated images flagged.
        heldout_flag_rate: fraction of held-out images under the same rule (the rate expected by chance).
        excess_p_value: one-sided binomial p-value of seeing this many flags at ``heldout_flag_rate``.
        alpha: significance level of the excess test.
        copying: the three-sample data-copying test.
        passed: no excess of near-copies (``excess_p_value >= alpha``) and no data-copying verdict.
        protocol: feature protocol record (extractor, weights hash, ...), None for precomputed features.
        pair_generated: (p,) generated indices of the closest pairs, closest first.
        pair_train: (p,) their nearest training indices.
        pair_distance: (p,) their distances (LPIPS when available, else feature distance).
        pair_images: (p, 2, C, H, W) uint8 images of the closest pairs (generated, training), or None.
    """

    metric: Distance
    quantile: float
    k: int
    feature_distance: np.ndarray
    feature_index: np.ndarray
    heldout_feature_distance: np.ndarray
    feature_threshold: float
    lpips_distance: np.ndarray | None
    lpips_index: np.ndarray | None
    heldout_lpips_distance: np.ndarray | None
    lpips_threshold: float | None
    near_copy: np.ndarray
    near_copy_fraction: float
    heldout_flag_rate: float
    excess_p_value: float
    alpha: float
    copying: DataCopyingResult
    passed: bool
    protocol: dict[str, Any] | None = None
    pair_generated: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pair_train: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pair_distance: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pair_images: np.ndarray | None = field(default=None, repr=False)

    @property
    def flagged(self) -> list[int]:
        """Indices of the generated images flagged as near-copies, closest (feature distance) first."""
        idx = np.nonzero(self.near_copy)[0]
        return idx[np.argsort(self.feature_distance[idx], kind="stable")].tolist()

    @property
    def reasons(self) -> list[str]:
        """Why the audit failed (empty when it passed)."""
        out = []
        if self.excess_p_value < self.alpha:
            out.append(
                f"{int(self.near_copy.sum())} of {self.near_copy.size} generated images "
                f"({self.near_copy_fraction:.2%}) are near-copies, more than the {self.heldout_flag_rate:.2%} "
                f"of held-out real images (binomial p = {self.excess_p_value:.3g} < {self.alpha})"
            )
        if self.copying.verdict is CopyingVerdict.DATA_COPYING:
            out.append(f"data-copying test: C_T = {self.copying.c_t:.2f} < -{self.copying.threshold}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report: summary, thresholds, data-copying test and per-generated-image columns."""
        return {
            "passed": bool(self.passed),
            "reasons": self.reasons,
            "n_train": int(self.copying.train_counts.sum()),
            "n_generated": int(self.near_copy.size),
            "n_heldout": int(self.heldout_feature_distance.size),
            "metric": self.metric.value,
            "quantile": self.quantile,
            "k": self.k,
            "feature_threshold": to_jsonable(self.feature_threshold),
            "lpips_threshold": to_jsonable(self.lpips_threshold),
            "lpips_reranks": f"LPIPS re-ranks the {self.k} nearest feature-space training images",
            "near_copy_fraction": self.near_copy_fraction,
            "n_near_copies": int(self.near_copy.sum()),
            "heldout_flag_rate": self.heldout_flag_rate,
            "excess_p_value": to_jsonable(self.excess_p_value),
            "alpha": self.alpha,
            "flagged": self.flagged,
            "data_copying_test": self.copying.to_dict(),
            "protocol": self.protocol,
            "closest_pairs": {
                "ranked_by": "lpips" if self.lpips_distance is not None else f"feature-{self.metric.value}",
                "generated": self.pair_generated.tolist(),
                "train": self.pair_train.tolist(),
                "distance": to_jsonable(self.pair_distance),
            },
            "generated": {
                "feature_distance": to_jsonable(self.feature_distance),
                "nearest_train": self.feature_index.tolist(),
                "lpips_distance": to_jsonable(self.lpips_distance),
                "lpips_nearest_train": to_jsonable(self.lpips_index),
                "near_copy": self.near_copy.tolist(),
            },
            "heldout": {
                "feature_distance": to_jsonable(self.heldout_feature_distance),
                "lpips_distance": to_jsonable(self.heldout_lpips_distance),
            },
        }

    def histogram_png(self) -> bytes:
        """PNG of nearest-training distance histograms, generated vs held-out, with the threshold line(s)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        panels = [("feature", self.feature_distance, self.heldout_feature_distance, self.feature_threshold)]
        if self.lpips_distance is not None and self.heldout_lpips_distance is not None:
            panels.append(("LPIPS", self.lpips_distance, self.heldout_lpips_distance, self.lpips_threshold))
        fig = Figure(figsize=(5.5 * len(panels), 4.0), dpi=100)
        FigureCanvasAgg(fig)
        for j, (label, gen, held, thr) in enumerate(panels, start=1):
            ax = fig.add_subplot(1, len(panels), j)
            both = np.concatenate([gen, held]).astype(np.float64)
            lo, hi = float(both.min()), float(both.max())
            bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 41)
            ax.hist(held, bins=bins, density=True, alpha=0.55, label=f"held-out real (n={held.size})")
            ax.hist(gen, bins=bins, density=True, alpha=0.55, label=f"generated (n={gen.size})")
            if thr is not None:
                ax.axvline(thr, color="k", linestyle="--", label=f"near-copy threshold {thr:.4g}")
            metric = self.metric.value if label == "feature" else "LPIPS"
            ax.set_xlabel(f"distance to nearest training image ({metric})")
            ax.set_ylabel("density")
            ax.legend(fontsize=8)
        fig.suptitle(
            f"near-copies {self.near_copy_fraction:.2%} (held-out {self.heldout_flag_rate:.2%}); "
            f"C_T = {self.copying.c_t:.2f} ({self.copying.verdict.value})",
            fontsize=10,
        )
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()

    def pairs_png(self, *, pad: int = 2) -> bytes | None:
        """PNG grid of the closest pairs (generated | nearest training image), closest first; None without images.

        Args:
            pad: pixels of white between the two images of a pair (four times that between pairs).
        """
        from PIL import Image

        if self.pair_images is None or self.pair_images.shape[0] == 0:
            return None
        p, _, c, h, w = self.pair_images.shape
        cols = int(math.ceil(math.sqrt(p)))
        rows = int(math.ceil(p / cols))
        pair_w = 2 * w + pad
        gap = 4 * pad  # between pairs, wider than the pad inside a pair
        canvas = np.full((rows * (h + gap) - gap + 4 * pad, cols * (pair_w + gap) - gap + 4 * pad, c), 255, np.uint8)
        for j in range(p):
            r, q = divmod(j, cols)
            y = 2 * pad + r * (h + gap)
            x = 2 * pad + q * (pair_w + gap)
            canvas[y : y + h, x : x + w] = self.pair_images[j, 0].transpose(1, 2, 0)
            canvas[y : y + h, x + w + pad : x + 2 * w + pad] = self.pair_images[j, 1].transpose(1, 2, 0)
        image = Image.fromarray(canvas[..., 0] if c == 1 else canvas, mode="L" if c == 1 else "RGB")
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()

    def save(self, out_dir: PathLike) -> dict[str, Path]:
        """Write ``memorization.json``, ``nn_distance_histogram.png`` and (with images) ``closest_pairs.png``.

        Each file is written to a temporary sibling and renamed into place.

        Args:
            out_dir: folder (created if missing).

        Returns:
            The written paths by kind: ``"json"``, ``"histogram"``, ``"pairs"``.
        """
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out}: exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
        written = {"json": out / "memorization.json", "histogram": out / "nn_distance_histogram.png"}
        text = _json_text(self.to_dict()) + "\n"
        atomic_write_bytes(written["json"], text.encode("utf-8"), fsync=True)
        atomic_write_bytes(written["histogram"], self.histogram_png(), fsync=True)
        pairs = self.pairs_png()
        if pairs is not None:
            written["pairs"] = out / "closest_pairs.png"
            atomic_write_bytes(written["pairs"], pairs, fsync=True)
        return written
