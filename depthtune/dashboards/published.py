"""Published NYU Depth v2 test-set results (as reported in the papers; see DESIGN.md). Shown as
reference rows, never presented as measurements made here. None = not reported."""

from __future__ import annotations

PUBLISHED: dict[str, dict[str, float | None]] = {
    "Eigen et al. 2014, coarse+fine": {
        "abs_rel": 0.215, "sq_rel": 0.212, "rmse": 0.907, "rmse_log": 0.285, "log10": None,
        "delta1": 0.611, "delta2": 0.887, "delta3": 0.971,
    },
    "Eigen & Fergus 2015, VGG": {
        "abs_rel": 0.158, "sq_rel": 0.121, "rmse": 0.641, "rmse_log": 0.214, "log10": None,
        "delta1": 0.769, "delta2": 0.950, "delta3": 0.988,
    },
    "Laina et al. 2016, FCRN (ResNet-50)": {
        "abs_rel": 0.127, "sq_rel": None, "rmse": 0.573, "rmse_log": 0.195, "log10": 0.055,
        "delta1": 0.811, "delta2": 0.953, "delta3": 0.988,
    },
}
PUBLISHED_MARK = "published, not re-measured here"
