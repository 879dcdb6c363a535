"""Calibrating a trained Weighter on validation conversations, and the embedding of them.

``recalibrate`` re-fits what a model file keeps beside its weights: the activity threshold,
the merge cosine, the slot split (over SPLIT_GRID), the match-probability calibrations and the
score cohort, all from conversations mixed from the bank's validation and train voices. The
training loop (train.py) scores its checkpoints with the same helpers (``validation_items``,
``embed_items``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from weighter.corpus import MixerConfig, UtteranceBank
from weighter.embedder.checkpoint import load_model, save_model
from weighter.embedder.model import WeighterConfig, WeighterModel
from weighter.embedder.slots import output_row, row_slots
from weighter.errors import WeighterError
from weighter.evaluation import SetTruth, distinct_active, pair_calibrations, summarize
from weighter.scoring import TOP_SHARE, Cohort, draw_cohort

log = logging.getLogger(__name__)
# (split cosine, min share) pairs that recalibrate tries for the slot split (embedder/slots.py);
# (None, .) = never split. Measured on validation files: docs/history.md, the slot split table.
SPLIT_GRID = [(None, 0.25)] + [(c, s) for c in (0.4, 0.5, 0.6, 0.7, 0.8) for s in (0.25, 0.3, 0.35, 0.4)]


def embed_items(model: WeighterModel, items: list, device: torch.device) -> list[SetTruth]:
    """Validation conversations -> SetTruth, with the model's own slot split (if it has one)."""
    return split_items(embed_parts(model, items, device), model.config.split_cosine, model.config.split_min_share)


@torch.no_grad()
def embed_parts(model: WeighterModel, items: list, device: torch.device) -> list[tuple[dict, tuple, object]]:
    """Per validation conversation: the model's output row (numpy, slots.output_row), likes, activity."""
    model.eval()
    parts = []
    for wave, likes, activity in items:
        out = model(torch.from_numpy(wave)[None].to(device))
        parts.append((output_row(out, 0, out["x"].shape[2]), likes, activity))
    model.train()
    return parts


def split_items(parts: list, split_cosine: float | None, min_share: float) -> list[SetTruth]:
    """Validation outputs with each slot holding two voices split (embedder/slots.py), as SetTruths."""
    return [SetTruth(*row_slots(row, split_cosine, min_share), likes, activity) for row, likes, activity in parts]


def validation_items(bank: UtteranceBank, split: str, files: int, seed: int, frame_rate: float,
                     min_seconds: float = 10, max_seconds: float = 30, telephone: float = 0.2,
                     max_speakers: int = 4, augment: float = 0.0) -> list:
    """``files`` seeded conversations of a bank split: (audio, likes, frame activity) each. A share
    ``augment`` of them is mixed dry and heard through a training channel (``weighter.training.
    augment``, babble of the bank's train speakers) instead of coloured noise and ``telephone``."""
    from weighter.training.augment import ChannelMixer
    from weighter.training.cached import Source, default_augmenter

    augmenter = default_augmenter([Source(bank, "train")], seed) if augment else None
    mixer = ChannelMixer(bank, split, MixerConfig(1, max_speakers, min_seconds, max_seconds, overlap=0.1,
                                                  telephone=telephone), augmenter, augment)
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(files):
        c = mixer.sample(rng)
        items.append((c.audio, c.likes, c.activity(frame_rate)))
    return items


def score_cohort(model: WeighterModel, bank: UtteranceBank, threshold: float, merge_cosine: float | None,
                 files: int = 300, seed: int = 2, telephone: float = 0.2, max_speakers: int = 4,
                 augment: float = 0.0) -> torch.Tensor:
    """The model's score cohort (weighter.scoring): distinct active slots of conversations of
    the bank's *train* voices (never a user's), at most COHORT_SIZE of them, float16 (C, E)."""
    items = validation_items(bank, "train", files, seed, model.frame_rate, telephone=telephone,
                             max_speakers=max_speakers, augment=augment)
    truths = embed_items(model, items, torch.device("cpu"))
    vectors = np.concatenate([t.embeddings[distinct_active(t.confidence, t.embeddings, threshold, merge_cosine)]
                              for t in truths])
    return torch.from_numpy(vectors[draw_cohort(len(vectors), seed)]).half()


def set_input_level(config: WeighterConfig, level: float) -> None:
    """Scale every input to ``level`` dBFS before the log-mel frontend (``input_level_dbfs``);
    refused for the other frontends, which have no such input."""
    if config.frontend != "logmel":
        raise WeighterError(f"input_level sets the log-mel frontend's level; this model's frontend is "
                            f"{config.frontend!r}")
    config.input_level_dbfs = float(level)


@dataclass(frozen=True)
class CalibrationResult:
    """What ``recalibrate`` fitted and wrote into the model file.

    Attributes
    ----------
    threshold, merge_cosine : float
        Slot activity threshold (confidence) and the cosine at which two active slots are one like.
    split_cosine, split_min_share : float or None
        The slot split chosen (None: no split).
    pair_calibration, pair_calibration_snorm : list of float
        Logistic (slope, intercept) from a best-pair cosine, or normalised score, to P(like shared).
    score_cohort : list of int
        The cohort's shape (C, E).
    score_top_share : float
    calibration_speakers : int or None
    metrics : dict
        Validation metrics at the fitted settings.

    Examples
    --------
    >>> recalibrate("model.pt", bank).threshold  # doctest: +SKIP
    0.5
    """

    threshold: float
    merge_cosine: float | None
    split_cosine: float | None
    split_min_share: float | None
    pair_calibration: list[float] | None
    pair_calibration_snorm: list[float] | None
    score_cohort: list[int]
    score_top_share: float
    calibration_speakers: int | None
    metrics: dict

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def recalibrate(path: str | Path, bank: UtteranceBank, files: int = 120, seed: int = 1,
                seconds: tuple[float, float] = (10, 30), checkpoint: str | Path | None = None,
                pooling: str | None = None, scores_only: bool = False, input_level: float | None = None,
                max_speakers: int | None = None, pair_prior: float | None = None) -> CalibrationResult:
    """Re-derive a model's activity threshold, merge cosine, slot split (pooling "windows":
    SPLIT_GRID, best count accuracy then mAP) and pair calibrations on the bank's validation
    split (never the held-out one; ``files`` conversations of ``seconds`` (min, max) length,
    with the channels the model trained with: its ``telephone`` and ``augment`` shares),
    draw its score cohort from the train split (``score_cohort``), record the cohort's share
    (scoring.TOP_SHARE), and rewrite the model file in place (atomically).
    With ``checkpoint`` (a training OUT.ckpt), the weights of its last step replace the file's;
    with ``pooling``, the slot pooling of the model's config changes first (a new model id), and
    with ``input_level`` the log-mel frontend's input level (dBFS, likewise).
    With ``scores_only``, the threshold, merge cosine, slot split and score cohort stay as the
    file has them and only the pair calibrations are fitted again, at TOP_SHARE: for a file
    calibrated under an earlier share (its model id does not change).
    ``max_speakers``: the conversations hold 1 to this many speakers (default: as many as the
    model's training mixed, 4 for the shipped one); recorded as ``calibration_speakers`` (kept
    by ``scores_only``, which fits no threshold).
    ``pair_prior``: state P(like shared) for this base rate (the logistic's slope kept, its
    intercept moved); None: the validation pairs' own rate.

    Returns
    -------
    CalibrationResult

    Examples
    --------
    >>> from weighter.corpus.recordings import RecordingBank
    >>> recalibrate("model.pt", RecordingBank("voices/"), pair_prior=0.03).merge_cosine  # doctest: +SKIP
    0.8
    """
    model, meta = load_model(path)
    if max_speakers is not None and max_speakers < 1:
        raise WeighterError(f"max_speakers {max_speakers}: calibration conversations need at least 1 speaker")
    if scores_only and (checkpoint is not None or pooling is not None or input_level is not None):
        raise WeighterError("scores_only keeps the model's weights and settings: drop checkpoint, pooling "
                            "and input_level")
    if scores_only and meta.score_cohort is None:
        raise WeighterError(f"{path}: has no score cohort to fit scores for; calibrate it without scores_only")
    if checkpoint is not None:  # take the weights of a training checkpoint's last step instead
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        meta.metrics = {"step": int(state["step"])}
    if pooling is not None:
        if pooling not in ("frames", "windows"):
            raise WeighterError(f"unknown pooling {pooling!r} (frames, windows)")
        model.config.pooling = pooling
    if input_level is not None:
        set_input_level(model.config, input_level)
    device = torch.device("cpu")
    trained = meta.train  # the conversations it was validated on while training
    speakers = int(max_speakers if max_speakers is not None else trained.get("max_speakers", 4))
    telephone, augment = trained.get("telephone", 0.2), trained.get("augment", 0.0)
    items = validation_items(bank, "validation", files, seed, model.frame_rate, *seconds,
                             telephone=telephone, max_speakers=speakers, augment=augment)
    parts = embed_parts(model, items, device)
    if scores_only:
        split = (model.config.split_cosine, model.config.split_min_share)
        truths = split_items(parts, *split)
        threshold, merge_cosine, cohort = meta.threshold, meta.merge_cosine, meta.score_cohort
    else:
        tried = []
        splits = model.config.pooling == "windows" or model.config.partial_hop  # slots that have windows to split
        for candidate in SPLIT_GRID if splits else [(None, model.config.split_min_share)]:
            truths = split_items(parts, *candidate)
            metrics = summarize(truths)
            log.info("split cosine %s, min share %s: count accuracy %.4f, mAP %.4f, slot EER %.4f", *candidate,
                     metrics["count_accuracy"], metrics["map"], metrics["slot_eer"])
            tried.append(((metrics["count_accuracy"], metrics["map"]), candidate, truths, metrics))
        _, split, truths, metrics = max(tried, key=lambda t: t[0])  # the first of equals, as the grid is ordered
        model.config.split_cosine, model.config.split_min_share = split
        threshold, merge_cosine = metrics["threshold"], metrics["merge_cosine"]
        cohort = score_cohort(model, bank, threshold, merge_cosine, seed=seed + 1, telephone=telephone,
                              max_speakers=speakers, augment=augment)
    scores = Cohort(cohort.float().numpy(), TOP_SHARE)
    metrics = summarize(truths, threshold, merge_cosine, scores)
    metrics["split_cosine"], metrics["split_min_share"] = split
    pairs = pair_calibrations(truths, threshold, merge_cosine, scores, pair_prior)
    if not scores_only:  # the threshold and merge cosine were fitted on these conversations
        meta.calibration_speakers = speakers
    if pair_prior is not None:  # the base rate p is stated for (absent: the validation pairs' own)
        meta.pair_prior = float(pair_prior)
    save_model(path, model, meta.likes, threshold, train=meta.train, metrics=metrics, history=meta.history,
               merge_cosine=merge_cosine, calibration_speakers=meta.calibration_speakers, pair_prior=meta.pair_prior,
               score_cohort=cohort, score_top_share=TOP_SHARE, **pairs)
    return CalibrationResult(threshold=metrics["threshold"], merge_cosine=merge_cosine, split_cosine=split[0],
                             split_min_share=split[1], pair_calibration=pairs["pair_calibration"],
                             pair_calibration_snorm=pairs["pair_calibration_snorm"], score_cohort=list(cohort.shape),
                             score_top_share=TOP_SHARE, calibration_speakers=meta.calibration_speakers,
                             metrics=metrics)
