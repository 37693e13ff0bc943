"""models/drift.py on numbers whose answer is known: the reference's own sample has no drift, a shifted one
has, counts made in parts add up to the counts of the whole, and the tests agree with SciPy's on raw data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp

from models import drift


def sample(n: int, shift: float = 0.0, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(shift, 1, n), "b": rng.uniform(0, 1, n)}, rng.integers(0, 4, n)


def test_the_reference_against_a_fresh_sample_of_itself_is_stable_and_a_shift_is_not():
    profile = drift.reference(*sample(5000), num_classes=4)
    same = drift.scores(profile, drift.count(profile, *sample(5000, seed=1)))
    assert all(s["psi"] < 0.01 for s in same.values()), same
    assert same["predictions"]["chi2_p"] > 0.01
    moved = drift.scores(profile, drift.count(profile, *sample(5000, shift=1.0, seed=2)))
    assert moved["a"]["psi"] > 0.25 and moved["b"]["psi"] < 0.01
    assert moved["a"]["ks"] == pytest.approx(ks_2samp(sample(5000)[0]["a"], sample(5000, 1.0, 2)[0]["a"]).statistic,
                                             abs=0.05), "the binned KS distance is close to the exact one"


def test_counts_made_in_parts_add_up_to_the_counts_of_the_whole():
    profile = drift.reference(*sample(2000), num_classes=4)
    values, labels = sample(3000, shift=0.3, seed=5)
    whole = drift.count(profile, values, labels)
    total = None
    for part in np.array_split(np.arange(3000), 7):
        total = drift.add(total, drift.count(profile, {k: v[part] for k, v in values.items()}, labels[part]))
    assert total == whole and total["instances"] == 3000


def test_a_constant_summary_and_a_class_never_predicted_keep_the_scores_finite():
    values = {"flat": np.zeros(1000), "a": np.arange(1000.0)}
    profile = drift.reference(values, np.zeros(1000, dtype=int), num_classes=3)
    assert len(profile["features"]["flat"]["edges"]) == 2, "below, at and above the constant"
    scores = drift.scores(profile, drift.count(profile, {"flat": np.ones(100), "a": np.arange(100.0)},
                                               np.full(100, 2)))
    assert all(np.isfinite(s["psi"]) for s in scores.values()) and scores["flat"]["psi"] > 1
    assert scores["predictions"]["chi2_p"] < 1e-6


def test_image_summaries_read_the_model_scale_and_the_quadrants():
    image = np.zeros((1, 1, 4, 4), dtype=np.float32)
    image[0, 0, :2, :2] = 255  # the top left quadrant lit
    values, labels = drift.summaries(image.reshape(1, -1), np.array([[0.1, 0.9]]), (1, 4, 4), (0.0, 255.0))
    assert values["mean"][0] == pytest.approx(0.25) and values["ink"][0] == pytest.approx(0.25)
    assert values["top_left"][0] == 1 and values["bottom_right"][0] == 0
    assert values["confidence"][0] == pytest.approx(0.9) and labels.tolist() == [1]
