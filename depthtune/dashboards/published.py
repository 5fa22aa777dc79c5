"""Published NYU Depth v2 test-set results, as the papers report them, with what produced them:
their training data, initialisation and evaluation protocol. They are reference rows, never
presented as measurements made here; a synthetic-data model trained from scratch on a few hundred
frames at low resolution is not comparable with them. None = not reported."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedResult:
    """One paper's row: its metrics and how they were obtained; ``protocol`` names the evaluation
    protocol of ``depthtune.metrics.PROTOCOLS`` it was measured under (a row is drawn only beside
    measurements under the same one)."""

    metrics: dict[str, float | None]
    training: str
    protocol: str
    evaluated: str

    @property
    def description(self) -> str:
        return f"{PUBLISHED_MARK}; trained on {self.training}; evaluated {self.evaluated} ({self.protocol} protocol)"


PUBLISHED_MARK = "published, not re-measured here"
EIGEN_EVALUATION = "on the 654 official test frames, Eigen crop, per-image means"
PUBLISHED: dict[str, PublishedResult] = {
    "Eigen et al. 2014, coarse+fine": PublishedResult(
        {
            "abs_rel": 0.215,
            "sq_rel": 0.212,
            "rmse": 0.907,
            "rmse_log": 0.285,
            "log10": None,
            "delta1": 0.611,
            "delta2": 0.887,
            "delta3": 0.971,
        },
        training="about 120k raw NYU video frames of the training scenes, coarse conv layers from ImageNet",
        protocol="eigen",
        evaluated=EIGEN_EVALUATION,
    ),
    "Eigen & Fergus 2015, VGG": PublishedResult(
        {
            "abs_rel": 0.158,
            "sq_rel": 0.121,
            "rmse": 0.641,
            "rmse_log": 0.214,
            "log10": None,
            "delta1": 0.769,
            "delta2": 0.950,
            "delta3": 0.988,
        },
        training=(
            "raw NYU video frames of the training scenes (hundreds of thousands of samples), "
            "scale 1 from ImageNet VGG-16"
        ),
        protocol="eigen",
        evaluated=EIGEN_EVALUATION,
    ),
    "Laina et al. 2016, FCRN (ResNet-50)": PublishedResult(
        {
            "abs_rel": 0.127,
            "sq_rel": None,
            "rmse": 0.573,
            "rmse_log": 0.195,
            "log10": 0.055,
            "delta1": 0.811,
            "delta2": 0.953,
            "delta3": 0.988,
        },
        training="about 12k raw NYU frames augmented offline to about 95k, encoder from ImageNet ResNet-50",
        protocol="laina",
        evaluated=(
            "on the 654 official test frames, full frame without a crop, "
            "errors pooled over all pixels (the authors' released code)"
        ),
    ),
}
