"""Mean average precision of profile retrieval, as copairs computes it (the metric JUMP papers report).

A *query* profile ranks its candidates (positives and negatives) by cosine
similarity; its average precision is the mean, over its positives, of the
precision at each positive's rank. A group's mAP is the mean AP of its
queries; its p-value compares that mAP with a null of random rankings with the
same positive and total counts per query (``null_size`` draws, the draws of one
configuration shared across queries and averaged, as ``copairs.map`` does),
then Benjamini-Hochberg across groups; *retrieved* is the share of groups whose
corrected p-value is below the threshold.

Two uses (Kalinin et al. 2025, the JUMP Cell Painting papers):

- :func:`phenotypic_activity`: does a compound's replicate retrieve its other
  replicates against the negative controls (DMSO)?
- :func:`phenotypic_consistency`: does a compound's consensus profile retrieve
  the other compounds of its mechanism against compounds of other mechanisms?

copairs is an optional extra (``pip install molwm[profiling]``); this module
needs only numpy and is checked against copairs where it is installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd


def cosine_similarity(x: np.ndarray) -> np.ndarray:
    """All pairwise cosine similarities. Shapes: x ``[n, d]``; returns ``[n, n]``."""
    x = np.asarray(x, np.float64)
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


def average_precision(sim: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Average precision of each query over its candidates.

    Args:
        sim: Similarity of each query to every profile.
        positive: Which profiles are the query's positives.
        negative: Which profiles are the query's negatives (disjoint from ``positive``).

    Returns:
        AP per query (NaN for a query without positives or negatives).

    Shapes:
        sim, positive, negative: ``[q, n]``; returns ``[q]``.
    """
    sim = np.asarray(sim, np.float64)
    candidate = positive | negative
    # candidates first, by descending similarity; ties in profile order (copairs' lexsort)
    key = np.where(candidate, -sim, np.inf)
    order = np.argsort(key, axis=1, kind="stable")
    rel = np.take_along_axis(positive & candidate, order, axis=1).astype(np.float64)
    k = np.arange(1, sim.shape[1] + 1)
    precision = np.cumsum(rel, axis=1) / k
    n_pos = rel.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (precision * rel).sum(1) / n_pos
    ap[(n_pos == 0) | ~negative.any(1)] = np.nan
    return ap


def random_ap(null_size: int, n_pos: int, total: int, seed: int) -> np.ndarray:
    """APs of ``null_size`` random rankings of ``n_pos`` positives among ``total`` candidates."""
    rng = np.random.default_rng(seed)
    ranks = np.sort(rng.permuted(np.tile(np.arange(total), (null_size, 1)), axis=1)[:, :n_pos], axis=1)
    return (np.arange(1, n_pos + 1) / (ranks + 1)).sum(1) / n_pos


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (statsmodels' ``fdr_bh``)."""
    p = np.asarray(p, np.float64)
    n = len(p)
    if n == 0:
        return p
    order = np.argsort(p)
    scaled = p[order] * n / np.arange(1, n + 1)
    adj = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(adj, 1.0)
    return out


def mean_average_precision(ap: np.ndarray, n_pos: np.ndarray, n_total: np.ndarray, groups: Sequence,
                           null_size: int = 10000, threshold: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """mAP per group with permutation p-values and BH correction (copairs' ``mean_average_precision``).

    Args:
        ap: AP per query (NaN queries are dropped).
        n_pos: Positives per query.
        n_total: Candidates per query.
        groups: Group of each query (e.g. compound).
        null_size: Random rankings per (positives, total) configuration.
        threshold: Significance level of ``below_corrected_p``.
        seed: Seed of the null.

    Returns:
        One row per group: ``group, mean_average_precision, p_value, corrected_p_value, below_corrected_p``.
    """
    ap = np.asarray(ap, np.float64)
    ok = np.isfinite(ap) & (np.asarray(n_pos) > 0)
    frame = pd.DataFrame({"group": np.asarray(groups, dtype=object)[ok], "ap": ap[ok],
                          "n_pos": np.asarray(n_pos, np.int64)[ok], "n_total": np.asarray(n_total, np.int64)[ok]})
    if frame.empty:
        return pd.DataFrame(columns=["group", "mean_average_precision", "p_value", "corrected_p_value",
                                     "below_corrected_p"])
    confs, inverse = np.unique(frame[["n_pos", "n_total"]].to_numpy(), axis=0, return_inverse=True)
    seeds = np.random.default_rng(seed).integers(8096, size=len(confs))  # copairs' draw
    null = np.stack([random_ap(null_size, int(p), int(t), int(s)) for (p, t), s in zip(confs, seeds)])
    frame["conf"] = inverse.ravel()
    rows = []
    for group, g in frame.groupby("group", sort=True):
        score = float(g["ap"].mean())
        dist = null[g["conf"].to_numpy()].mean(0)
        rows.append((group, score, (float((dist > score).sum()) + 1.0) / (null_size + 1.0)))
    out = pd.DataFrame(rows, columns=["group", "mean_average_precision", "p_value"])
    out["corrected_p_value"] = benjamini_hochberg(out["p_value"].to_numpy())
    out["below_corrected_p"] = out["corrected_p_value"] < threshold
    return out


@dataclass
class RetrievalSummary:
    """The two numbers a retrieval task is reported by.

    Attributes:
        map: Mean over groups of their mAP.
        retrieved: Share of groups with corrected p-value below the threshold.
        n_groups: Groups scored.
        per_group: The :func:`mean_average_precision` table.
    """

    map: float
    retrieved: float
    n_groups: int
    per_group: pd.DataFrame


def _summary(table: pd.DataFrame) -> RetrievalSummary:
    if table.empty:
        return RetrievalSummary(float("nan"), float("nan"), 0, table)
    return RetrievalSummary(float(table["mean_average_precision"].mean()), float(table["below_corrected_p"].mean()),
                            len(table), table)


def phenotypic_activity(x: np.ndarray, group: Sequence, is_control: Sequence[bool], null_size: int = 10000,
                        threshold: float = 0.05, seed: int = 0) -> RetrievalSummary:
    """Does each treated profile retrieve the other replicates of its group against the controls?

    Args:
        x: Profiles (one per replicate: well or site).
        group: Replicate group of each profile (compound, or compound and dose); ignored for controls.
        is_control: Negative-control profiles (DMSO), the negatives of every query.
        null_size, threshold, seed: As in :func:`mean_average_precision`.

    Shapes:
        x: ``[n, d]``.
    """
    ctl = np.asarray(is_control, bool)
    g = np.asarray(group, dtype=object)
    treated = np.flatnonzero(~ctl)
    sim = cosine_similarity(x)[treated]
    pos = (g[treated][:, None] == g[None, :]) & ~ctl[None, :]
    pos[np.arange(len(treated)), treated] = False
    neg = np.broadcast_to(ctl[None, :], pos.shape)
    ap = average_precision(sim, pos, neg)
    return _summary(mean_average_precision(ap, pos.sum(1), pos.sum(1) + neg.sum(1), g[treated], null_size,
                                           threshold, seed))


def phenotypic_consistency(x: np.ndarray, label: Sequence, null_size: int = 10000, threshold: float = 0.05,
                           seed: int = 0) -> RetrievalSummary:
    """Does each compound's profile retrieve the compounds of its label (e.g. mechanism) against the others?

    Args:
        x: One consensus profile per compound.
        label: Mechanism (or target) of each compound; a label with one compound has no positives.
        null_size, threshold, seed: As in :func:`mean_average_precision`.

    Shapes:
        x: ``[n, d]``.
    """
    lab = np.asarray(label, dtype=object)
    sim = cosine_similarity(x)
    pos = lab[:, None] == lab[None, :]
    np.fill_diagonal(pos, False)
    neg = lab[:, None] != lab[None, :]
    ap = average_precision(sim, pos, neg)
    return _summary(mean_average_precision(ap, pos.sum(1), pos.sum(1) + neg.sum(1), lab, null_size,
                                           threshold, seed))


def consensus(x: np.ndarray, group: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Median profile of each group (pycytominer ``consensus``). Returns the groups (sorted) and ``[g, d]``."""
    g = np.asarray(group, dtype=object)
    names = np.array(sorted(set(g.tolist())), dtype=object)
    return names, np.stack([np.median(np.asarray(x)[g == n], axis=0) for n in names])
