"""Two-sample statistics for timing comparisons: is one kind of answer slower than another?

Latencies are skewed and have outliers (a garbage collection, a context switch), so
nothing here assumes a normal distribution:

- :func:`mann_whitney_u`: the rank-sum test (two-sided, normal approximation with tie and
  continuity corrections, accurate for the hundreds of samples measured here), with the
  probability of superiority as effect size (0.5: neither kind tends to be slower);
- :func:`permutation_test_medians`: how often randomly relabelled samples show a gap in
  medians at least as large as the measured one;
- :func:`bootstrap_median_difference`: a confidence interval for the gap in medians, so
  that "not distinguishable" comes with the size of a gap that could still hide in the
  noise.

The resampling uses numpy (a dependency of Gradio, so always installed with prodio) with a
seeded generator: the same samples give the same figures.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Below this p-value a difference counts as distinguishable (each comparison on its own).
ALPHA = 0.01
PERMUTATIONS = 10_000
BOOTSTRAP_RESAMPLES = 5_000


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default, Excel's PERCENTILE)."""
    return float(np.percentile(np.asarray(values, dtype=float), fraction * 100))


def ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their average rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    result = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        shared = (start + end) / 2 + 1
        for position in range(start, end + 1):
            result[order[position]] = shared
        start = end + 1
    return result


@dataclass(frozen=True)
class MannWhitney:
    u: float
    z: float
    p_value: float
    # P(a sample of the first kind > one of the second) + half the ties: 0.5 = no tendency.
    superiority: float


def mann_whitney_u(first: Sequence[float], second: Sequence[float]) -> MannWhitney:
    """Two-sided Mann-Whitney U test of ``first`` against ``second``."""
    n1, n2 = len(first), len(second)
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need at least one value")
    pooled = [*first, *second]
    ranked = ranks(pooled)
    rank_sum = sum(ranked[:n1])
    u = rank_sum - n1 * (n1 + 1) / 2
    n = n1 + n2
    counts: dict[float, int] = {}
    for value in pooled:
        counts[value] = counts.get(value, 0) + 1
    ties = sum(t**3 - t for t in counts.values() if t > 1)
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    mean = n1 * n2 / 2
    if variance <= 0:
        return MannWhitney(u, 0.0, 1.0, u / (n1 * n2))
    # Continuity correction: half a step of U towards the mean.
    z = (abs(u - mean) - 0.5) / math.sqrt(variance)
    z = max(z, 0.0) * (1 if u >= mean else -1)
    p_value = math.erfc(abs(z) / math.sqrt(2))
    return MannWhitney(u, z, min(1.0, p_value), u / (n1 * n2))


def permutation_test_medians(
    first: Sequence[float],
    second: Sequence[float],
    *,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> float:
    """Two-sided p-value of the gap between the medians, by random relabelling."""
    a = np.asarray(first, dtype=float)
    b = np.asarray(second, dtype=float)
    observed = abs(float(np.median(a)) - float(np.median(b)))
    pooled = np.concatenate([a, b])
    rng = np.random.default_rng(seed)
    # Each row a permutation of the pooled samples; the first len(a) play the first kind.
    shuffled = rng.permuted(np.tile(pooled, (permutations, 1)), axis=1)
    gaps = np.abs(
        np.median(shuffled[:, : len(a)], axis=1) - np.median(shuffled[:, len(a) :], axis=1)
    )
    # A small tolerance: float medians of the same values in another order are equal.
    extreme = int(np.count_nonzero(gaps >= observed - 1e-12))
    return (extreme + 1) / (permutations + 1)


def bootstrap_median_difference(
    first: Sequence[float],
    second: Sequence[float],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """A percentile bootstrap interval for ``median(first) - median(second)``."""
    a = np.asarray(first, dtype=float)
    b = np.asarray(second, dtype=float)
    rng = np.random.default_rng(seed)
    medians_a = np.median(rng.choice(a, size=(resamples, len(a)), replace=True), axis=1)
    medians_b = np.median(rng.choice(b, size=(resamples, len(b)), replace=True), axis=1)
    differences = medians_a - medians_b
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Comparison:
    """One kind against the reference kind."""

    median_ratio: float
    median_difference_ms: float
    difference_ci95_ms: tuple[float, float]
    mann_whitney_u: float
    mann_whitney_z: float
    mann_whitney_p: float
    superiority: float
    permutation_p: float
    distinguishable: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe(values: Sequence[float]) -> dict[str, float]:
    return {
        "samples": len(values),
        "median_ms": statistics.median(values),
        "p10_ms": percentile(values, 0.10),
        "p90_ms": percentile(values, 0.90),
        "mean_ms": statistics.fmean(values),
        "min_ms": min(values),
        "max_ms": max(values),
    }


def compare(sample: Sequence[float], reference: Sequence[float], *, seed: int = 0) -> Comparison:
    """``sample`` against ``reference``: is the difference distinguishable at this size?"""
    test = mann_whitney_u(sample, reference)
    permutation_p = permutation_test_medians(sample, reference, seed=seed)
    reference_median = statistics.median(reference)
    sample_median = statistics.median(sample)
    return Comparison(
        median_ratio=sample_median / reference_median if reference_median else 0.0,
        median_difference_ms=sample_median - reference_median,
        difference_ci95_ms=bootstrap_median_difference(sample, reference, seed=seed),
        mann_whitney_u=test.u,
        mann_whitney_z=test.z,
        mann_whitney_p=test.p_value,
        superiority=test.superiority,
        permutation_p=permutation_p,
        distinguishable=min(test.p_value, permutation_p) < ALPHA,
    )
