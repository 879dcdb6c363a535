"""Quality measures shared by training (validation), benchmarks and ``weighter evaluate``.

All work on embedding sets plus the truth: file-level likes (always) and frame-level activity
(synthetic corpora, or any corpus with an RTTM).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from weighter.scoring import Cohort, cohort_stats, normalised


@dataclass
class SetTruth:
    """A model's slots for one file beside the file's truth (likes, and who speaks when)."""

    embeddings: np.ndarray  # (N, E) L2-normalised
    confidence: np.ndarray  # (N,)
    x: np.ndarray  # (N, T) slot weightings X on some frame grid
    likes: tuple[str, ...]
    activity: np.ndarray | None = None  # (len(likes), T) bool on the same grid, when known


def distinct_active(confidence: np.ndarray, embeddings: np.ndarray, threshold: float,
                    merge_cosine: float | None = None) -> np.ndarray:
    """Active slots: confidence >= threshold, and (with ``merge_cosine``) no two alike: of two
    active slots whose embeddings have cosine >= merge_cosine the less confident is dropped, as
    a like is present in a file once (a known trap: several slots latch onto one speaker)."""
    active = np.flatnonzero(confidence >= threshold)
    if merge_cosine is None or len(active) < 2:
        return active
    keep: list[int] = []
    for n in active[np.argsort(-confidence[active], kind="stable")]:
        if all(float(embeddings[n] @ embeddings[k]) < merge_cosine for k in keep):
            keep.append(int(n))
    return np.array(sorted(keep), dtype=int)


def calibrate_threshold(items: list[SetTruth], grid=np.linspace(0.05, 0.95, 91),
                        merge_grid=(None, 0.5, 0.6, 0.7, 0.8, 0.9)) -> tuple[float, float, float | None]:
    """The confidence threshold (and duplicate-merge cosine) that best count the likes per
    file: (threshold, accuracy, merge_cosine)."""
    best = (0.5, -1.0, None)
    for merge in merge_grid:
        for thr in grid:
            acc = float(np.mean([len(distinct_active(it.confidence, it.embeddings, thr, merge)) == len(it.likes)
                                 for it in items]))
            if acc > best[1] + 1e-9:
                best = (float(thr), acc, merge)
    return best


def active_slots(item: SetTruth, threshold: float, merge_cosine: float | None = None) -> np.ndarray:
    """``distinct_active`` slots of a file, or its most confident slot when none is."""
    active = distinct_active(item.confidence, item.embeddings, threshold, merge_cosine)
    return active if len(active) else np.array([int(np.argmax(item.confidence))])


def file_scores(items: list[SetTruth], threshold: float, merge_cosine: float | None = None,
                cohort: Cohort | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of files: the best score between their active slots (F, F), -inf on the
    diagonal, and whether they share a like (F, F). The score is the slots' cosine, normalised
    against ``cohort`` (``weighter.scoring``, as a store with that cohort does) when given."""
    vectors, counts = active_vectors(items, threshold, merge_cosine)
    sims = vectors @ vectors.T  # (S, S)
    if cohort is not None:
        mean, spread = cohort_stats(vectors, cohort)
        sims = normalised(sims, mean[:, None], spread[:, None], mean[None, :], spread[None, :])
    return best_per_file(sims, counts), shared_likes(items)


def active_vectors(items: list[SetTruth], threshold: float,
                   merge_cosine: float | None = None) -> tuple[np.ndarray, list[int]]:
    """The files' active slot embeddings (S, E), file by file, and how many each file has."""
    slots = [it.embeddings[active_slots(it, threshold, merge_cosine)] for it in items]
    return np.concatenate(slots), [len(x) for x in slots]


def best_per_file(pair_scores: np.ndarray, counts: list[int]) -> np.ndarray:
    """Slot-pair scores (S, S), slots file by file -> each pair of files' best (F, F), -inf on
    the diagonal."""
    starts = np.cumsum([0] + counts[:-1])
    rows = np.maximum.reduceat(pair_scores, starts, axis=0)  # (F, S): each file's best per slot
    scores = np.maximum.reduceat(rows, starts, axis=1)
    np.fill_diagonal(scores, -np.inf)
    return scores


def shared_likes(items: list[SetTruth]) -> np.ndarray:
    """(F, F) bool: do the two files share a like?"""
    vocab = {like: i for i, like in enumerate(sorted({l for it in items for l in it.likes}))}
    hot = np.zeros((len(items), max(len(vocab), 1)), np.float32)
    for f, it in enumerate(items):
        hot[f, [vocab[l] for l in it.likes]] = 1
    return (hot @ hot.T) > 0


def _ranked(scores: np.ndarray, shared: np.ndarray):
    """Per query file with at least one relevant file: whether each other file is relevant, in
    score order (the query itself, at -inf, last and dropped)."""
    for q in range(len(scores)):
        order = np.argsort(-scores[q], kind="stable")[:-1]
        relevant = shared[q, order]
        if relevant.any():
            yield relevant


def mean_average_precision(scores: np.ndarray, shared: np.ndarray) -> float:
    """mAP of file scores (F, F) against relevance (F, F), over the queries with a relevant file."""
    aps = [float((np.cumsum(rel)[rel] / (np.flatnonzero(rel) + 1)).mean()) for rel in _ranked(scores, shared)]
    return float(np.mean(aps)) if aps else float("nan")


def retrieval_map(items: list[SetTruth], threshold: float, cohort: Cohort | None = None) -> float:
    """File retrieval mAP: score(a, b) = best cosine (normalised against ``cohort`` when given)
    between their active slots; relevant = a shared like. Averaged over queries that have at
    least one relevant file."""
    return mean_average_precision(*file_scores(items, threshold, cohort=cohort))


def slot_speakers(item: SetTruth, threshold: float) -> list[tuple[int, str]]:
    """Active slots mapped to the speaker whose activity their weighting overlaps most."""
    if item.activity is None or not len(item.likes):
        return []
    out = []
    for n in active_slots(item, threshold):
        t = min(item.x.shape[1], item.activity.shape[1])
        overlap = item.activity[:, :t].astype(np.float32) @ item.x[n, :t]
        out.append((int(n), item.likes[int(np.argmax(overlap))]))
    return out


def slot_pairs(items: list[SetTruth], threshold: float):
    """Active slots mapped to speakers, and all their pairs from different files.
    Returns (who, speakers, a, b, scores, same): who[i] = (item index, slot) of slot vector i,
    its speaker speakers[i]; pair p joins vectors a[p] and b[p], with cosine scores[p] and
    same[p] when both are the same speaker."""
    who, vectors, speakers = [], [], []
    for i, it in enumerate(items):
        for n, speaker in slot_speakers(it, threshold):
            who.append((i, n))
            vectors.append(it.embeddings[n])
            speakers.append(speaker)
    speakers = np.array(speakers)
    if not vectors:
        empty = np.zeros(0, np.int64)
        return who, speakers, empty, empty, np.zeros(0, np.float32), np.zeros(0, bool)
    v = np.stack(vectors)
    owners = np.array([i for i, _ in who])
    a, b = np.triu_indices(len(v), 1)
    keep = owners[a] != owners[b]
    a, b = a[keep], b[keep]
    return who, speakers, a, b, np.einsum("pe,pe->p", v[a], v[b]), speakers[a] == speakers[b]


def slot_eer(items: list[SetTruth], threshold: float) -> float:
    """Equal error rate of same- vs different-speaker over pairs of active slots of different files."""
    who, _, _, _, scores, same = slot_pairs(items, threshold)
    if len(who) < 3:
        return float("nan")
    return equal_error_rate(scores[same], scores[~same])


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """The error rate where false rejections of ``genuine`` scores equal false acceptances of
    ``impostor`` scores (NaN when either is empty)."""
    if len(genuine) == 0 or len(impostor) == 0:
        return float("nan")
    thresholds = np.unique(np.concatenate([genuine, impostor]))
    g, i = np.sort(genuine), np.sort(impostor)
    frr = np.searchsorted(g, thresholds, side="left") / len(g)  # genuine below threshold
    far = 1 - np.searchsorted(i, thresholds, side="left") / len(i)  # impostors at or above
    k = int(np.argmin(np.abs(frr - far)))
    return float((frr[k] + far[k]) / 2)


def summarize(items: list[SetTruth], threshold: float | None = None, merge_cosine: float | None = None,
              cohort: Cohort | None = None) -> dict:
    """count accuracy (threshold and merge cosine calibrated here when threshold is None),
    retrieval mAP (raw cosines; also normalised against ``cohort`` when given), slot EER."""
    if threshold is None:
        threshold, count_acc, merge_cosine = calibrate_threshold(items)
    else:
        count_acc = float(np.mean([len(distinct_active(it.confidence, it.embeddings, threshold, merge_cosine))
                                   == len(it.likes) for it in items]))
    deduped = [SetTruth(it.embeddings, _mask(it, threshold, merge_cosine), it.x, it.likes, it.activity) for it in items]
    return {"threshold": round(threshold, 3), "merge_cosine": merge_cosine, "count_accuracy": round(count_acc, 4),
            "map": round(retrieval_map(deduped, 0.5), 4), "slot_eer": round(slot_eer(deduped, 0.5), 4),
            "files": len(items)} | ({} if cohort is None else {"map_snorm": round(retrieval_map(deduped, 0.5, cohort), 4)})


def _mask(item: SetTruth, threshold: float, merge_cosine: float | None) -> np.ndarray:
    """Confidence replaced by 1 on the distinct active slots, 0 elsewhere."""
    out = np.zeros_like(item.confidence)
    out[distinct_active(item.confidence, item.embeddings, threshold, merge_cosine)] = 1.0
    return out


def file_pair_scores(items: list[SetTruth], threshold: float, merge_cosine: float | None = None,
                     cohort: Cohort | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For every pair of files: best score between active slots, and whether they share a like."""
    scores, shared = file_scores(items, threshold, merge_cosine, cohort)
    upper = np.triu_indices(len(items), 1)
    return scores[upper], shared[upper]


def pair_calibration(items: list[SetTruth], threshold: float, merge_cosine: float | None = None,
                     cohort: Cohort | None = None, prior: float | None = None) -> list[float] | None:
    """Logistic fit P(two files share a like | best slot score) = sigmoid(a s + b), for the
    raw cosine or, with ``cohort``, the normalised score; None when the validation data has
    only one class.

    P depends on how often two files of a corpus share a like at all (the base rate): a few
    validation speakers over many files share far more often than people in a real corpus do.
    With ``prior``, the intercept is moved from the validation pairs' base rate to that one
    (Bayes: the likelihood ratio of a score is kept, the prior odds replaced)."""
    from sklearn.linear_model import LogisticRegression

    scores, same = file_pair_scores(items, threshold, merge_cosine, cohort)
    if len(set(same.tolist())) < 2:
        return None
    fit = LogisticRegression(C=100.0).fit(scores[:, None], same)
    a, b = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if prior is not None:
        seen = float(np.mean(same))
        b += float(np.log(prior / (1 - prior)) - np.log(seen / (1 - seen)))
    return [round(a, 4), round(b, 4)]


def pair_calibrations(items: list[SetTruth], threshold: float, merge_cosine: float | None = None,
                      cohort: Cohort | None = None, prior: float | None = None) -> dict:
    """The calibrations a model file carries: for raw cosines ("pair_calibration") and, when
    it carries a score cohort, for scores normalised against it ("pair_calibration_snorm");
    ``prior`` as in ``pair_calibration``."""
    out = {"pair_calibration": pair_calibration(items, threshold, merge_cosine, prior=prior)}
    if cohort is not None:
        out["pair_calibration_snorm"] = pair_calibration(items, threshold, merge_cosine, cohort, prior)
    return out


def read_rttm(path) -> dict[str, list[tuple[float, float, str]]]:
    """file id (the audio file's stem) -> [(start, end, speaker)] seconds."""
    from weighter.errors import WeighterError

    out: dict[str, list] = {}
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields or fields[0] != "SPEAKER":
                continue
            try:
                start, length = float(fields[3]), float(fields[4])
                out.setdefault(fields[1], []).append((start, start + length, fields[7]))
            except (IndexError, ValueError):
                raise WeighterError(f"{path}: line {number}: not an RTTM SPEAKER line") from None
    return out


def activity_grid(segments, likes, rate: float, steps: int) -> np.ndarray:
    """(len(likes), steps) bool from RTTM segments, at ``rate`` Hz."""
    grid = np.zeros((len(likes), steps), bool)
    row = {s: i for i, s in enumerate(likes)}
    for start, end, speaker in segments:
        if speaker in row:
            grid[row[speaker], int(start * rate):int(np.ceil(end * rate))] = True
    return grid


def linking_f1(file_groups: list[set], file_likes: list[set]) -> dict:
    """Pairwise file linking: predicted link = the files share a group; true = they share a like."""
    tp = fp = fn = 0
    for a in range(len(file_groups)):
        for b in range(a + 1, len(file_groups)):
            pred = bool(file_groups[a] & file_groups[b])
            true = bool(file_likes[a] & file_likes[b])
            tp += pred and true
            fp += pred and not true
            fn += true and not pred
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def diarization_error(items: list[SetTruth], threshold: float, on: float = 0.5) -> float:
    """Frame-level error of the weightings as "who spoke when": each active slot is mapped
    one-to-one to a speaker (Hungarian on overlap); a frame is an error per speaker-slot
    disagreement (missed, false alarm, confusion), over the total speech of the reference.
    No forgiveness collar; overlapping speech counts for every speaker."""
    from scipy.optimize import linear_sum_assignment

    errors, speech = 0.0, 0.0
    for it in items:
        if it.activity is None:
            continue
        ref = it.activity.astype(bool)  # (S, T)
        slots = active_slots(it, threshold)
        t = min(ref.shape[1], it.x.shape[1])
        hyp = it.x[slots, :t] >= on  # (A, T)
        ref = ref[:, :t]
        overlap = ref.astype(np.float32) @ hyp.T.astype(np.float32)  # (S, A)
        rows, cols = linear_sum_assignment(-overlap)
        mapped = np.zeros_like(ref)
        for r, c in zip(rows, cols):
            mapped[r] = hyp[c]
        unmatched = np.setdiff1d(np.arange(len(slots)), cols)
        false_alarm_extra = hyp[unmatched].sum() if len(unmatched) else 0
        errors += float((ref & ~mapped).sum() + (~ref & mapped).sum() + false_alarm_extra)
        speech += float(ref.sum())
    return errors / speech if speech else float("nan")


def store_items(store, sources, rttm: dict | None = None) -> tuple[list[SetTruth], list[int], list[str]]:
    """The stored sets of a manifest's files as SetTruth (likes, and activity from the RTTM when
    given), their file ids, and the paths not in the store. The stored active flags decide (the
    model's own threshold and merge): confidence 1 on active slots, 0 elsewhere."""
    from pathlib import Path

    items, file_ids, missing = [], [], []
    for source in sources:
        file_id = store.file_id(source.path)
        if file_id is None:
            missing.append(str(source.path))
            continue
        s = store.embedding_set(file_id)
        activity = None
        if rttm is not None:
            activity = activity_grid(rttm.get(Path(source.path).stem, []), source.likes, s.timeline_rate,
                                     s.weightings.shape[1])
        items.append(SetTruth(s.embeddings, s.active.astype(np.float32), s.weightings, tuple(source.likes), activity))
        file_ids.append(file_id)
    return items, file_ids, missing


def evaluate_store(store, sources, rttm: dict | None = None, run: int | None = None, ks=(1, 5, 10)) -> dict:
    """All figures for a store against a manifest's likes (and an RTTM when given):
    speaker-count accuracy, retrieval mAP and recall@k, slot EER, DER of the weightings,
    and for a clustering run: file-linking F1, ARI of slots against true speakers, outliers."""
    from sklearn.metrics import adjusted_rand_score

    from weighter.errors import WeighterError

    items, file_ids, missing = store_items(store, sources, rttm)
    if not items:
        raise WeighterError("no manifest file is in the store (index the corpus first)")
    threshold = 0.5
    scores, shared = file_scores(items, threshold, cohort=store.score_cohort())  # as the store's queries score
    result = {"files": len(items), "missing_from_store": len(missing),
              "count_accuracy": round(float(np.mean([(it.confidence >= threshold).sum() == len(it.likes)
                                                     for it in items])), 4),
              "map": round(mean_average_precision(scores, shared), 4),
              "map_cosine": round(retrieval_map(items, threshold), 4)}
    result.update({f"recall@{k}": round(recall_at(scores, shared, k), 4) for k in ks})
    if rttm is not None:
        result["slot_eer"] = round(slot_eer(items, threshold), 4)
        result["der"] = round(diarization_error(items, threshold), 4)
    if run is not None:
        groups = {sid: g for sid, g in store.db.execute(
            "SELECT slot_id, group_id FROM cluster_members WHERE run_id = ?", (run,))}
        file_groups, true_labels, pred_labels, outliers, total = [], [], [], 0, 0
        for it, fid in zip(items, file_ids):
            gs = set()
            for n in np.flatnonzero(it.confidence >= threshold):
                g = groups.get(store.slot_id(fid, n), -1)
                total += 1
                outliers += g < 0
                if g >= 0:
                    gs.add(g)
            file_groups.append(gs)
            for n, speaker in slot_speakers(it, threshold):
                g = groups.get(store.slot_id(fid, n), -1)
                true_labels.append(speaker)
                pred_labels.append(g if g >= 0 else f"outlier-{fid}-{n}")  # each outlier alone
        result["linking"] = linking_f1(file_groups, [set(it.likes) for it in items])
        result["outlier_share"] = round(outliers / total, 4) if total else float("nan")
        if true_labels:
            result["ari"] = round(float(adjusted_rand_score(true_labels, [str(p) for p in pred_labels])), 4)
        result["run"] = run
    return result


def recall_at_k(items: list[SetTruth], threshold: float, k: int, cohort: Cohort | None = None) -> float:
    """Share of the relevant files (sharing a like) found in the top k, averaged over queries."""
    return recall_at(*file_scores(items, threshold, cohort=cohort), k)


def recall_at(scores: np.ndarray, shared: np.ndarray, k: int) -> float:
    """recall@k of file scores (F, F) against relevance (F, F)."""
    recalls = [rel[:k].sum() / min(k, rel.sum()) for rel in _ranked(scores, shared)]
    return float(np.mean(recalls)) if recalls else float("nan")
