"""Cohort score normalisation (s-norm) of slot-pair cosines.

A raw cosine does not mean the same for every voice: some voices sit close to many others
(variants of one synthesiser, one channel, one accent), so even their strangers score high,
and a query file holding such a voice ranks strangers above the true matches of its other
voices. Each slot gets the mean and spread of its best share of cosines to a *cohort*:
slots of voices that are certainly strangers, the model's own training identities (shipped
in the model file, ``weighter calibrate``). A pair scores the mean of its cosine standardised
by each side's statistics:

    score(a, b) = ((cos - mean_a) / spread_a + (cos - mean_b) / spread_b) / 2

The cohort is the model's training identities rather than slots of the user's own corpus
(adaptive s-norm): a speaker heard in many files (a host, an agent) would fill his own cohort
with his true matches and have them normalised away. Measurements: ``docs/results.md``
("score norm"), reasoning in full: ``docs/code-notes.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

try:  # the query's hot loops, compiled at install (weighter/_ranking.c); numpy runs them without
    from weighter import _ranking
except ImportError:  # pragma: no cover - an install without a C compiler
    _ranking = None

COHORT_SIZE = 1000  # cohort slots a model file carries (a random sample of its training slots)
TOP_SHARE = 0.2  # a slot's statistics: its best TOP_SHARE of cosines to the cohort (new model files)
LEGACY_TOP_SHARE = 0.05  # the share of model files and stores from before the share was recorded
MIN_COHORT = 20  # below this many cohort slots no statistics: mean 0, spread 1 (the raw cosine)
MIN_SPREAD = 1e-3


@dataclass(frozen=True)
class Cohort:
    """A score cohort: its slots (C, E) float32, and the share of each slot's best cosines to
    them that make the slot's statistics. A model file records both (``weighter calibrate``)
    and a store keeps the ones of the model that filled it."""
    vectors: np.ndarray
    share: float = TOP_SHARE

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def top(self) -> int:
        """How many best cosines to the cohort make a slot's statistics."""
        return max(2, int(round(self.share * len(self.vectors))))

    @cached_property
    def columns(self) -> np.ndarray:
        """The cohort's slots as contiguous columns (E, C) float32: ``vectors @ columns`` is
        twice as fast as through the transposed view (8 x 256 by 256 x 1000: 73 against 170 us)."""
        return np.ascontiguousarray(np.asarray(self.vectors, np.float32).T)


def draw_cohort(count: int, seed: int = 0) -> np.ndarray:
    """Indices (sorted) of the cohort among ``count`` slots: all of them up to COHORT_SIZE, else
    a seeded random sample."""
    if count <= COHORT_SIZE:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, COHORT_SIZE, replace=False))


def cohort_stats(vectors: np.ndarray, cohort: Cohort | None, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Each vector's mean and spread of its best ``cohort.top`` cosines to the cohort's slots:
    (V,) float32 each; mean 0 and spread 1 (the raw cosine) without a cohort."""
    if cohort is None or len(cohort) < MIN_COHORT:
        return np.zeros(len(vectors), np.float32), np.ones(len(vectors), np.float32)
    if len(vectors) <= chunk:  # a query's few slots: one product, no copies
        return top_stats(np.asarray(vectors, np.float32) @ cohort.columns, cohort.top)
    mean = np.zeros(len(vectors), np.float32)
    spread = np.ones(len(vectors), np.float32)
    for start in range(0, len(vectors), chunk):  # (c, C) cosines -> their best's statistics
        sims = np.asarray(vectors[start:start + chunk], np.float32) @ cohort.columns
        mean[start:start + chunk], spread[start:start + chunk] = top_stats(sims, cohort.top)
    return mean, spread


def top_stats(cosines: np.ndarray, top: int, compiled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread (at least MIN_SPREAD) of each row's ``top`` largest values.

    Parameters
    ----------
    cosines : ndarray of shape (R, C), float32
        Reordered in place by the compiled path.
    top : int
        1 to C.
    compiled : bool, default True
        Use weighter/_ranking.c where it was built; False: numpy (the reference).

    Returns
    -------
    mean, spread : ndarray of shape (R,), float32

    Examples
    --------
    >>> import numpy as np
    >>> mean, spread = top_stats(np.array([[0.1, 0.9, 0.5, 0.7]], np.float32), 2)
    >>> [round(float(mean[0]), 3), round(float(spread[0]), 3)]
    [0.8, 0.1]
    """
    if compiled and _ranking is not None and cosines.dtype == np.float32 and cosines.flags.c_contiguous:
        mean, spread = np.empty(len(cosines), np.float32), np.empty(len(cosines), np.float32)
        _ranking.top_stats(cosines, top, MIN_SPREAD, mean, spread)
        return mean, spread
    first = cosines.shape[1] - top  # a row's best values sit at and after it once partitioned
    best = np.partition(cosines, first, axis=1)[:, first:]
    return best.mean(1).astype(np.float32), np.maximum(best.std(1), MIN_SPREAD).astype(np.float32)


def normalised(cos: np.ndarray, mean_a, spread_a, mean_b, spread_b) -> np.ndarray:
    """The s-norm score of cosines between slots a and b (arrays broadcast)."""
    return 0.5 * ((cos - mean_a) / spread_a + (cos - mean_b) / spread_b)
