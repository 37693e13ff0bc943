"""Drift: how far a model's live inputs and answers have moved from what it was trained and tested on.

At registration a version keeps a *reference profile* of its test part: for each summary of an input
(:func:`summaries`) and of an answer (its confidence), ten bins cut at the reference's deciles (and one
each below and above the values it saw) and the reference's share in each, and the share of each predicted
class.
Live requests are summarised the same way and counted in the same bins (:func:`count`), so that counts from
many processes and many minutes add up, and a window of them is compared with the reference
(:func:`scores`) by

- the population stability index, PSI = sum((live - reference) * ln(live / reference)) over the bins: the
  usual drift score for binned data (under 0.1 stable, 0.1-0.25 a moderate shift, over 0.25 a large one);
- the two-sample Kolmogorov-Smirnov distance on the same bins (the largest gap between the two cumulative
  shares: a lower bound of the exact statistic, read at the bin edges);
- for the predicted classes, Pearson's chi-square test of homogeneity of the live counts and the
  reference's (SciPy's ``chi2_contingency``: both are samples), as a p-value.

Why these and not a drift library: Evidently, NannyML and alibi-detect each compute these tests over whole
samples held in memory (a DataFrame, or arrays of every live input). Here the live side arrives as counts
from several API replicas and must add up in the database, so the tests are computed from binned counts:
PSI and the binned KS distance are a few lines of NumPy, and the chi-square test is SciPy's.

The summaries of a digit image (28x28, any value range) are cheap and each catches a different shift: the
mean intensity (a brighter or inverted image), the ink area (the share of pixels above half the range:
thicker strokes, filled shapes such as clothing), and the mean of each quadrant (an off-centre or other
shaped object). See docs/monitoring.md for what they showed on MNIST, Fashion-MNIST and inverted digits.
"""

from __future__ import annotations

from math import prod

import numpy as np
import torch
from scipy.stats import chi2_contingency
from torch import nn

BINS = 10
PROFILE_INSTANCES = 5_000  # of the test part, at most: the deciles of 5,000 values move by well under a bin
EPSILON = 1e-4  # a bin's share never below this, so that an empty bin does not make PSI infinite
SUMMARIES = ("mean", "ink", "top_left", "top_right", "bottom_left", "bottom_right", "confidence")


def summaries(x: np.ndarray, probabilities: np.ndarray, input_shape: tuple[int, ...],
              value_range: tuple[float, float]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each instance's summaries and predicted label: ``x`` holds N instances in the model's input units,
    ``probabilities`` the model's answers for them."""
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    probabilities = np.asarray(probabilities, dtype=np.float32).reshape(len(x), -1)
    low, high = value_range
    x = (x - low) / ((high - low) or 1.0)
    out = {"mean": x.mean(axis=1), "ink": (x > 0.5).mean(axis=1)}
    shape = tuple(input_shape)
    if len(shape) >= 2 and prod(shape) == x.shape[1]:
        h, w = shape[-2], shape[-1]
        images = x.reshape(len(x), -1, h, w)
        quarters = {"top_left": images[:, :, :h // 2, :w // 2], "top_right": images[:, :, :h // 2, w // 2:],
                    "bottom_left": images[:, :, h // 2:, :w // 2], "bottom_right": images[:, :, h // 2:, w // 2:]}
    else:  # a flat input: its four quarters in order
        parts = np.array_split(x, 4, axis=1)
        quarters = dict(zip(SUMMARIES[2:6], parts))
    out.update({name: part.reshape(len(x), -1).mean(axis=1) for name, part in quarters.items()})
    out["confidence"] = probabilities.max(axis=1)
    return out, probabilities.argmax(axis=1)


def reference(values: dict[str, np.ndarray], labels: np.ndarray, num_classes: int) -> dict:
    """A version's reference profile, from its test part's summaries and predicted labels (JSON-ready)."""
    features = {}
    for name, v in values.items():
        # the deciles, with a bin below the reference's least value and one above its greatest, so that a
        # summary the reference never varied (a constant) still shows a move either way
        inner = np.quantile(v, np.linspace(0, 1, BINS + 1)[1:-1])
        edges = np.unique(np.concatenate([[np.nextafter(v.min(), -np.inf)], inner, [v.max()]]))
        features[name] = {"edges": edges.tolist(), "shares": _shares(_bin(edges, v))}
    return {"instances": int(len(labels)), "features": features,
            "predictions": _shares(np.bincount(labels, minlength=num_classes))}


def profile_of(module: nn.Module, x: torch.Tensor, input_shape: tuple[int, ...], value_range: tuple[float, float],
               num_classes: int) -> dict:
    """The reference profile of a trained classifier on (up to PROFILE_INSTANCES of) its test part ``x``."""
    x = x[:PROFILE_INSTANCES]
    device = next(module.parameters()).device
    was_training = module.training
    module.eval()
    with torch.inference_mode():
        probabilities = torch.cat([torch.softmax(module(part.to(device)), dim=1).cpu() for part in x.split(1024)])
    module.train(was_training)
    values, labels = summaries(x.numpy(), probabilities.numpy(), input_shape, value_range)
    return reference(values, labels, num_classes)


def count(profile: dict, values: dict[str, np.ndarray], labels: np.ndarray) -> dict:
    """Live instances counted in the profile's bins: what a process adds to the database (JSON-ready)."""
    return {"instances": int(len(labels)),
            "features": {name: _bin(np.asarray(ref["edges"]), values[name]).tolist()
                         for name, ref in profile["features"].items() if name in values},
            "predictions": np.bincount(labels, minlength=len(profile["predictions"])).tolist()}


def add(total: dict | None, more: dict) -> dict:
    """Two counts summed (``total`` None: a copy of ``more``)."""
    if total is None:
        return {"instances": more["instances"], "features": {k: list(v) for k, v in more["features"].items()},
                "predictions": list(more["predictions"])}
    total["instances"] += more["instances"]
    for name, bins in more["features"].items():
        mine = total["features"].get(name, [0] * len(bins))
        total["features"][name] = [a + b for a, b in zip(mine, bins)]
    total["predictions"] = [a + b for a, b in zip(total["predictions"], more["predictions"])]
    return total


def psi(expected: list[float], observed: np.ndarray) -> float:
    e = np.maximum(np.asarray(expected, dtype=np.float64), EPSILON)
    o = np.maximum(observed / max(observed.sum(), 1), EPSILON)
    return float(((o - e) * np.log(o / e)).sum())


def scores(profile: dict, counts: dict) -> dict:
    """Each summary's PSI and binned KS distance, and the predicted classes' PSI and chi-square p-value,
    for live ``counts`` against the reference ``profile``."""
    out = {}
    for name, ref in profile["features"].items():
        bins = np.asarray(counts["features"].get(name, []), dtype=np.float64)
        if bins.sum() == 0:
            continue
        live = bins / bins.sum()
        ks = float(np.abs(np.cumsum(live) - np.cumsum(ref["shares"])).max())
        out[name] = {"psi": round(psi(ref["shares"], bins), 6), "ks": round(ks, 6)}
    if sum(counts["predictions"]):
        observed = np.asarray(counts["predictions"], dtype=np.float64)
        # Both sides are samples (the reference's shares come from its test part, not from a known law), so
        # the test is of the two-by-k table of counts: chi-square's test of homogeneity.
        table = np.array([np.asarray(profile["predictions"]) * profile["instances"], observed])
        table = table[:, table.sum(axis=0) > 0]
        p_value = float(chi2_contingency(table).pvalue) if table.shape[1] > 1 else 1.0
        out["predictions"] = {"psi": round(psi(profile["predictions"], observed), 6), "chi2_p": p_value}
    return out


def _bin(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Counts in the bins (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    return np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)


def _shares(counts: np.ndarray) -> list[float]:
    return (counts / max(counts.sum(), 1)).round(6).tolist()
