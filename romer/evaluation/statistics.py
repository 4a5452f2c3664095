"""Statistics over chip instances: mean, sample std, Student-t 95 % interval, and paired tests
between methods on the same seeds (paired t-test, and the exact Wilcoxon signed-rank test,
which assumes no normality). scipy does the distributions."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def summarize(values: list[float]) -> dict:
    """mean, std (n − 1), ci95 = [low, high] from the t distribution; a single value has no spread."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    if n < 2:
        return {"n": n, "mean": mean, "std": 0.0 if n else math.nan, "ci95": [mean, mean]}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))
    return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def paired_test(a: list[float], b: list[float]) -> dict:
    """Is method a different from b on the same seeds? mean difference a − b, its 95 % interval, and p-values."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError("paired_test needs the same seeds for both methods")
    diff = x - y
    result = {"n": len(diff), "mean_diff": float(diff.mean()) if len(diff) else math.nan,
              "ci95_diff": summarize(diff.tolist())["ci95"], "t_pvalue": None, "wilcoxon_pvalue": None}
    if len(diff) >= 2 and np.any(diff != diff[0]):
        result["t_pvalue"] = float(stats.ttest_rel(x, y).pvalue)
    if len(diff) >= 1 and np.any(diff != 0):
        result["wilcoxon_pvalue"] = float(stats.wilcoxon(x, y).pvalue)
    return result


def recovery(ppl: float, noisy: float, clean: float) -> float:
    """Share of the noise-induced gap closed: (noisy − ppl) / (noisy − clean); 1 = noise fully undone."""
    gap = noisy - clean
    return (noisy - ppl) / gap if gap != 0 else math.nan


def reduction(ppl: float, noisy: float) -> float:
    """The paper's relative perplexity reduction 1 − ppl / noisy."""
    return 1.0 - ppl / noisy
