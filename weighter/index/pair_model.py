"""The match probability adapted to the corpus itself: its base rate, estimated from its own pairs.

A model's calibration (``weighter calibrate``) is a logistic map from a file pair's score to
P(shared like), stated for one base rate (``pair_prior``, 3% for the shipped model): the share
of a corpus's file pairs that share a voice. In a corpus where 1% of pairs do it says too much,
where 40% do too little. What the calibration knows about a *score* (its likelihood ratio) does
not depend on the corpus; only the prior odds do. So the store estimates its own base rate from
the scores of its own file pairs, by the expectation-maximisation of Saerens, Latinne and
Decaestecker (2002, "Adjusting the outputs of a classifier to new a priori probabilities"):

    p_i(prior) = sigmoid(logit p_model(s_i) + logit prior - logit pair_prior)
    prior <- mean_i p_i(prior)          (repeated until it settles)

``weighter index build`` and ``add`` refit it at every commit (``weighter.index.build``) and a
query's ``p`` uses it. Only one number is fitted, so a corpus of a few hundred pairs is enough
and no fit can invent a score distribution of its own; for a store too small to fit (fewer than
``MIN_PAIRS`` pairs), or where the fit says most pairs share a voice (above ``MAX_BELIEVED``:
more often a calibration that does not describe the corpus than such a corpus), the
calibration's own prior stays. ``weighter calibrate`` stays the route for users with labelled
data.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

import numpy as np

# File pairs below which no prior is fitted (the calibration's own stays): 12 files. On corpora of
# 12 files of the validation speakers (66 pairs) the fitted prior already beat the stated one:
# ECE of p over each query's top 10 0.131 against 0.153 (benchmarks/prior_fit.py).
MIN_PAIRS = 66
# Active slots whose pairs are scored (a sample of whole files beyond): 36 MB of scores, about
# 70k file pairs at 8 slots a file; the refit at every commit 0.17-0.20 s (6000 slots: 0.60-0.64 s).
MAX_SLOTS = 3000
MIN_PRIOR, MAX_PRIOR = 1e-4, 0.9
# A fitted base rate above this is not believed: a corpus where most file pairs share a voice
# is rare, and a fit that high more often says the calibration's scores do not describe the
# corpus (voices unlike any it was fitted on, or one channel shared by every file: on a corpus
# of TTS voices, where about a tenth of the pairs share one, EM ran to 0.9). p then stays at
# the stated rate.
MAX_BELIEVED = 0.5


def _logit(p):
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class PairPrior:
    """A logistic calibration of pair scores and the base rate it speaks for.

    Attributes
    ----------
    slope, intercept : float
        The model's calibration: P(shared | s) = sigmoid(slope s + intercept) at ``stated``.
    stated : float
        The base rate the calibration was stated for.
    prior : float
        The base rate its probabilities are given for (the corpus's own, once fitted).
    pairs : int
        File pairs ``prior`` was estimated from (0: not fitted; -1: the calibration states no
        base rate, so none can be fitted).

    Examples
    --------
    >>> from weighter.index.pair_model import PairPrior
    >>> model = PairPrior(slope=2.0, intercept=-8.0, stated=0.03, prior=0.03, pairs=0)
    >>> [round(float(p), 3) for p in model.probability([2.0, 4.0, 6.0])]
    [0.018, 0.5, 0.982]
    >>> [round(float(p), 3) for p in model.with_prior(0.3, 1000).probability([2.0, 4.0])]
    [0.202, 0.933]
    """

    slope: float
    intercept: float
    stated: float
    prior: float
    pairs: int = 0

    def probability(self, scores) -> np.ndarray:
        """P(the pair shares a like | its score) at ``prior``, for each of ``scores``."""
        shift = float(_logit(self.prior) - _logit(self.stated))
        z = self.slope * np.asarray(scores, np.float64) + self.intercept + shift
        return 1.0 / (1.0 + np.exp(-np.clip(z, -700, 700)))

    def with_prior(self, prior: float, pairs: int) -> "PairPrior":
        """The same calibration speaking for another base rate."""
        return PairPrior(self.slope, self.intercept, self.stated, float(prior), int(pairs))

    def to_json(self) -> str:
        """As the store keeps it (``Store.meta("pair_prior")``)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> "PairPrior | None":
        """The fitted prior a store keeps, or None (none fitted, or unreadable)."""
        try:
            return cls(**json.loads(text)) if text else None
        except (TypeError, ValueError):
            return None


def adapt_prior(model: PairPrior, scores: np.ndarray, iterations: int = 200,
                tolerance: float = 1e-6) -> PairPrior | None:
    """The base rate of the corpus whose file-pair ``scores`` these are, by EM on the prior alone
    (see the module docstring); None below ``MIN_PAIRS`` scores.

    Parameters
    ----------
    model : PairPrior
        The calibration (its ``stated`` prior is where EM starts).
    scores : numpy.ndarray
        (P,) scores of file pairs, each pair once, drawn without regard to their score.

    Returns
    -------
    PairPrior or None
        ``model`` speaking for the fitted prior (clipped to [1e-4, 0.9]).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)  # strangers N(0, 1), matches N(4, 1): log LR = 4 s - 8
    >>> scores = np.concatenate([rng.normal(0, 1, 8000), rng.normal(4, 1, 2000)])
    >>> model = PairPrior(4.0, -8.0 + float(np.log(0.03 / 0.97)), stated=0.03, prior=0.03)
    >>> round(adapt_prior(model, scores).prior, 2)
    0.2
    """
    s = np.asarray(scores, np.float64)
    s = s[np.isfinite(s)]
    if len(s) < MIN_PAIRS:
        return None
    base = model.slope * s + model.intercept - _logit(model.stated)  # log likelihood ratio of each pair
    prior = model.stated
    for _ in range(iterations):
        new = float(np.clip(np.mean(1.0 / (1.0 + np.exp(-np.clip(base + _logit(prior), -700, 700)))),
                            MIN_PRIOR, MAX_PRIOR))
        done = abs(new - prior) < tolerance
        prior = new
        if done:
            break
    return model.with_prior(prior, len(s))


def file_pair_scores(store, max_slots: int = MAX_SLOTS, seed: int = 0) -> np.ndarray:
    """The best slot-pair score of every pair of stored files (of a seeded sample of files when
    their active slots number more than ``max_slots``), scored as a query scores them: the
    cosine normalised against the store's cohort, or the raw cosine without one.

    Parameters
    ----------
    store : weighter.index.Store
    max_slots : int
        Active slots the sample holds at most (their cosine matrix is computed whole).
    seed : int

    Returns
    -------
    numpy.ndarray
        (P,) one score per file pair, float32.

    Examples
    --------
    >>> scores = file_pair_scores(store)  # doctest: +SKIP
    """
    from weighter.scoring import normalised

    names = _sampled_files(store, max_slots, seed)
    file_of, slot_of, vectors = store.active_slots_of(names.tolist())
    ids = store.slot_ids(file_of, slot_of)
    order = np.argsort(ids)
    ids, vectors = ids[order], vectors[order]
    files = store.owners(ids)[0]
    names, first = np.unique(files, return_index=True)
    if len(names) < 2:
        return np.zeros(0, np.float32)
    scores = vectors @ vectors.T  # (S, S) cosines
    # the sampled slots' statistics as the store keeps them (``cohort_stats``), from their vectors:
    # the kept ones are read through the live index, which a commit's process may not have loaded
    # (1.7 s at 1M slots for a fit of 0.2 s)
    stats = store.query_stats(vectors)
    if stats is not None:
        mean, spread = stats
        scores = normalised(scores, mean[:, None], spread[:, None], mean[None], spread[None])
    best = np.maximum.reduceat(np.maximum.reduceat(scores, first, axis=0), first, axis=1)  # (F, F)
    return best[np.triu_indices(len(names), 1)].astype(np.float32)


def _sampled_files(store, max_slots: int, seed: int) -> np.ndarray:
    """Ids of the stored files whose pairs are scored, ascending: every file with an active slot
    while the store holds at most ``max_slots`` active slots; past that the files whose seeded
    hash of their id is smallest, up to ``max_slots`` active slots. The hash ranks a file the
    same however the store grows, so a commit changes the sample only by the new files that
    rank inside it (and those they push out): p moves with the corpus, not with a new draw.
    SQLite is asked only about the files taken, in hash order (ids of removed files skipped),
    so a commit into a large store walks no table: at 10M slots counting every file's active
    slots took seconds a commit."""
    db = store.db
    if store.active_slot_count() <= max_slots:
        rows = db.execute("SELECT file_id FROM slots WHERE +active = 1 GROUP BY file_id ORDER BY file_id").fetchall()
        return np.array([r[0] for r in rows], np.int64)
    low, high = db.execute("SELECT MIN(id), MAX(id) FROM files").fetchone()
    names, total = [], 0
    for ids in _by_hash(low, high, seed):
        for at in range(0, len(ids), 512):
            draw = ids[at:at + 512].tolist()
            counts = dict(store._rows_in("SELECT file_id, COUNT(*) FROM slots WHERE +active = 1 AND file_id IN ({}) "
                                         "GROUP BY file_id", draw))
            for file_id in (f for f in draw if f in counts):  # in hash order, not SQLite's
                if total + counts[file_id] > max_slots:
                    return np.sort(np.array(names, np.int64))  # the next file would pass max_slots: full
                names.append(file_id)
                total += counts[file_id]
    return np.sort(np.array(names, np.int64))


def _by_hash(low: int, high: int, seed: int, first: int = 4096, block: int = 1 << 20):
    """The ids ``low..high`` in the order of ``_id_hash``, as arrays: those whose hash falls in
    the lowest slice of the hash range that holds about ``first`` of them (the hashes are
    uniform), then in the next slice four times as wide, and so on. Each slice is found a
    ``block`` of ids at a time by a comparison, with no sort of all ids: 7 ms per million ids."""
    top = 1 << 64
    start, width = 0, max(1, top * first // (high - low + 1))
    while start < top:
        end = min(start + width, top)
        found_i, found_h = [], []
        for at in range(low, high + 1, block):
            ids = np.arange(at, min(at + block, high + 1), dtype=np.int64)
            h = _id_hash(ids, seed)
            inside = np.flatnonzero((h >= np.uint64(start)) & (h <= np.uint64(end - 1)))
            found_i.append(ids[inside])
            found_h.append(h[inside])
        found_i, found_h = np.concatenate(found_i), np.concatenate(found_h)
        yield found_i[np.argsort(found_h, kind="stable")]
        start, width = end, width * 4


def _id_hash(ids: np.ndarray, seed: int) -> np.ndarray:
    """A fixed pseudo-random rank (uint64) of each file id (SplitMix64's finaliser over the id
    and the seed): a file's rank never depends on which other files are stored."""
    with np.errstate(over="ignore"):
        z = ids.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(seed + 1)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def store_calibration(store) -> PairPrior | None:
    """The model calibration a store's queries use (for normalised scores where it keeps a
    cohort, else raw cosines), at the store's fitted prior where it has one; None without one."""
    return store.cached("calibration", lambda: _store_calibration(store))


def _store_calibration(store) -> PairPrior | None:
    normalised = store.score_cohort() is not None
    pair = json.loads(store.meta("pair_calibration_snorm" if normalised else "pair_calibration") or "null")
    if not pair:
        return None
    fitted = PairPrior.from_json(store.meta("pair_prior"))
    if fitted is not None and [fitted.slope, fitted.intercept] == [float(v) for v in pair]:
        return fitted
    stated = json.loads(store.meta("pair_prior_stated") or "null")  # None: the calibration's own, unknown
    return PairPrior(float(pair[0]), float(pair[1]), float(stated or 0.5), float(stated or 0.5), -1 if stated is None else 0)


def fit_store(store, seed: int = 0) -> PairPrior | None:
    """Fit the store's base rate to its own file pairs and keep it (``Store.meta("pair_prior")``;
    emptied when the store has too few pairs, no calibration, or a fit above ``MAX_BELIEVED``,
    which is logged as a warning). Call inside ``store.writing()``.

    Examples
    --------
    >>> with store.writing():  # doctest: +SKIP
    ...     fitted = fit_store(store)
    >>> round(fitted.prior, 3)  # doctest: +SKIP
    0.031
    """
    store.set_meta("pair_prior", "")
    model = store_calibration(store)
    if model is None or model.pairs < 0:  # no calibration, or no base rate stated for it to move from
        return None
    fitted = adapt_prior(model, file_pair_scores(store, seed=seed))
    if fitted is not None and fitted.prior > MAX_BELIEVED:
        logging.getLogger(__name__).warning(
            "%s: the model's calibration does not describe this corpus's scores (its file pairs would share a "
            "voice %.0f%% of the time); p stays at the stated base rate %.3g", store.directory, 100 * fitted.prior,
            model.stated)
        fitted = None
    store.set_meta("pair_prior", fitted.to_json() if fitted is not None else "")
    return fitted
