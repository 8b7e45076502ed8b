"""Statistics of a study's paired comparisons: seeds are the unit, differences are per seed.

Every arm of a study is trained once per seed from the same start (same backbone weights, data order
and noise; docs/experiments.md, "Paired arms"), so an arm is compared with its reference through the
per-seed differences d_i = arm(seed i) - reference(seed i):

* the mean difference and its two-sided 95% t interval (mean ± t_{0.975, n-1} s / sqrt(n)), printed
  only from ``MIN_SEEDS`` pairs on ("n < 4: no interval");
* the exact two-sided sign-flip permutation p-value: under "no effect" each d_i is as likely to have
  the other sign, so p is the fraction of the 2^n sign patterns whose |sum| is at least the observed
  |sum| (the identity and the all-flipped patterns always count, so p >= 2 / 2^n: 0.125 at n = 4);
* the paired t test's two-sided p, from ``MIN_SEEDS`` pairs on;
* Holm's step-down adjustment across a study's comparisons of the primary endpoint, of both p-values.

The decision rule, fixed on 2026-12-07 while no comparison had a second seed: a primary comparison
is *resolved* when its Holm-adjusted t-test p is below ``ALPHA`` (:func:`verdict`). The exact p
cannot decide it with 4 seeds (its floor is 0.125, Holm-adjusted at least 0.5 with 4 comparisons);
it is reported as the check that needs no normality.

No bootstrap: with a handful of seeds its percentile interval is the range of a few values.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

MIN_SEEDS = 4  # fewer pairs: the values and the exact p only, no interval
MAX_EXACT_PAIRS = 20  # 2**20 sign patterns; more: no exact p
LEVEL = 0.95
ALPHA = 0.05  # the primary endpoint's decision level, after Holm's adjustment


def paired(values: dict[int, float], reference: dict[int, float]) -> tuple[list[int], np.ndarray]:
    """The seeds both have, and the differences values - reference in seed order."""
    seeds = sorted(set(values) & set(reference))
    return seeds, np.array([values[s] - reference[s] for s in seeds], dtype=np.float64)


def t_interval(diffs: np.ndarray, level: float = LEVEL) -> tuple[float, float] | None:
    """The two-sided t interval of the mean of ``diffs``; None below ``MIN_SEEDS`` values."""
    n = len(diffs)
    if n < MIN_SEEDS:
        return None
    from scipy.stats import t

    mean, half = float(np.mean(diffs)), float(t.ppf(0.5 + level / 2, n - 1) * np.std(diffs, ddof=1) / math.sqrt(n))
    return mean - half, mean + half


def t_test_p(diffs: np.ndarray) -> float | None:
    """The two-sided p-value of the paired t test of mean(diffs) = 0; None below ``MIN_SEEDS`` values.
    Differences all equal have no spread: p is 1 when they are 0 and 0 otherwise."""
    n = len(diffs)
    if n < MIN_SEEDS:
        return None
    mean, sd = float(np.mean(diffs)), float(np.std(diffs, ddof=1))
    if sd == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    from scipy.stats import t

    return float(2 * t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))


def verdict(diff: float | None, p_adjusted: float | None, n: int) -> str:
    """The primary endpoint's reading of one comparison: resolved (which way) when the Holm-adjusted
    t-test p is below ``ALPHA``, else not resolved; below ``MIN_SEEDS`` pairs, no verdict."""
    if n < MIN_SEEDS or p_adjusted is None or diff is None:
        return f"no verdict (n < {MIN_SEEDS})"
    if p_adjusted < ALPHA:
        return "resolved: arm lower" if diff < 0 else "resolved: arm higher"
    return "not resolved"


def sign_flip_p(diffs: np.ndarray) -> float | None:
    """The exact two-sided sign-flip permutation p-value of mean(diffs) = 0 (None when empty or above
    ``MAX_EXACT_PAIRS`` values)."""
    n = len(diffs)
    if n == 0 or n > MAX_EXACT_PAIRS:
        return None
    patterns = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)  # every +-1 pattern, one per row
    sums = np.abs(patterns @ diffs)
    observed = abs(float(np.sum(diffs)))
    slack = 1e-9 * float(np.sum(np.abs(diffs)))  # sums of the same terms in another order round differently
    return float(np.mean(sums >= observed - slack))


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values, in the input's order (None stays None and is not counted)."""
    index = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(index)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(index, key=lambda i: pvalues[i])):  # type: ignore[arg-type, return-value]
        running = max(running, min(1.0, (m - rank) * pvalues[i]))  # type: ignore[operator]
        out[i] = running
    return out


def compare(values: dict[int, float], reference: dict[int, float]) -> dict[str, Any]:
    """One paired comparison: n, the seeds, the differences, their mean, the t interval, the t test's p
    and the exact p."""
    seeds, diffs = paired(values, reference)
    ci = t_interval(diffs)
    return {"n": len(seeds), "seeds": seeds, "diffs": [float(d) for d in diffs],
            "diff": float(np.mean(diffs)) if len(diffs) else None,
            "ci95": [ci[0], ci[1]] if ci is not None else None, "p_t": t_test_p(diffs), "p": sign_flip_p(diffs)}
