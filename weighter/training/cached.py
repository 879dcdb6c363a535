"""Training the Weighter on a frozen frontend's cached frames.

With a frozen frontend (Resemblyzer's speaker encoder) only the weighter learns, so the frames
of each training conversation are computed once: conversations are mixed from one or more
banks (TTS voices, real recordings), run through the frontend in batches, and kept in memory
as one frame per ``block`` frames (the partials frontend holds a value for ``partial_hop``
frames). Training then costs the weighter alone: minutes on two CPU cores instead of hours.

    banks -> mixer -> audio -> frozen frontend -> cache (K, 256) per file  (once)
    cache -> random crops -> weighter -> losses (losses.py: wBCE, frame truth)  (every step)
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from weighter.corpus.mixer import MixerConfig
from weighter.embedder.checkpoint import save_model
from weighter.embedder.device import pick_precision
from weighter.embedder.model import SpeakerEncoder, WeighterConfig, WeighterModel
from weighter.embedder.slots import output_row, row_slots
from weighter.training.augment import ChannelMixer
from weighter.training.config import TrainConfig, TrainResult
from weighter.training.losses import losses
from weighter.errors import WeighterError
from weighter.evaluation import SetTruth, pair_calibrations, summarize

log = logging.getLogger(__name__)


@dataclass
class CachedConversation:
    """One mixed conversation as the frozen frontend sees it."""

    blocks: np.ndarray  # (K, Cf) float16: the frames, one per ``block`` frames of 100 Hz
    frames: int  # valid frames at 100 Hz
    likes: tuple[str, ...]
    activity: np.ndarray  # (len(likes), frames) bool at 100 Hz: who speaks when


@dataclass
class Source:
    """A bank split to mix from, and its share of the cached conversations."""

    bank: object  # UtteranceBank or RecordingBank
    split: str
    share: float = 1.0


def cache_conversations(model: WeighterModel, sources: list[Source], files: int, cfg: TrainConfig, seed: int,
                        progress: bool = True, batch_seconds: float = 240.0,
                        augmenter=None) -> list[CachedConversation]:
    """Mix ``files`` conversations from ``sources`` (by their shares) and keep their frames.

    Parameters
    ----------
    model : WeighterModel
        A model with a frozen frontend (``config.frontend != "logmel"``).
    sources : list of Source
        Bank splits and their shares of the files.
    files : int
        Conversations to mix.
    cfg : TrainConfig
        Lengths (``min_seconds``, ``max_seconds``), speakers, overlap, telephone, reverb, distort,
        augment.
    seed : int
        Same seed, banks and settings: the same conversations.
    augmenter : ChannelAugmenter, optional
        The training channels of the ``cfg.augment`` share of conversations (mixed without noise
        or telephone band, then through it). Needed when ``cfg.augment`` > 0.

    Returns
    -------
    list of CachedConversation

    Examples
    --------
    >>> items = cache_conversations(model, [Source(bank, "train")], 100, TrainConfig(), seed=0)  # doctest: +SKIP
    """
    if model.config.frontend == "logmel":
        raise WeighterError("cached training needs a frozen frontend (frontend 'resemblyzer' or 'ssl')")
    block = max(1, model.config.partial_hop)
    rng = np.random.default_rng(seed)
    shares = np.array([s.share for s in sources], float)
    mixers = [ChannelMixer(s.bank, s.split, MixerConfig(
        1, cfg.max_speakers, cfg.min_seconds, cfg.max_seconds, overlap=cfg.overlap, telephone=cfg.telephone,
        reverb=cfg.reverb, distort=cfg.distort), augmenter, cfg.augment) for s in sources]
    picks = rng.choice(len(sources), size=files, p=shares / shares.sum())
    out: list[CachedConversation] = []
    pending: list = []
    frame_rate = model.frame_rate

    @torch.no_grad()
    def flush():
        lengths = torch.tensor([len(c.audio) for c in pending])
        wave = torch.zeros(len(pending), int(lengths.max()))
        for b, c in enumerate(pending):
            wave[b, :len(c.audio)] = torch.from_numpy(c.audio)
        frame_lengths, mask = model._frame_mask(wave, lengths)
        frames = model.frames(wave, mask)  # (B, T, Cf)
        for b, c in enumerate(pending):
            n = int(frame_lengths[b])
            activity = c.activity(frame_rate)[:, :n]
            activity = np.pad(activity, ((0, 0), (0, n - activity.shape[1])))
            out.append(CachedConversation(frames[b, :n:block].numpy().astype(np.float16), n, c.likes, activity))
        pending.clear()

    bar = tqdm(total=files, desc="caching frames", unit="file", disable=not progress, mininterval=1.0)
    for k in picks:
        pending.append(mixers[k].sample(rng))
        if sum(len(c.audio) for c in pending) >= batch_seconds * 16000:
            flush()
        bar.update(1)
    if pending:
        flush()
    bar.close()
    return out


def default_augmenter(sources: list[Source], seed: int, voices: int = 200):
    """A ``ChannelAugmenter`` on ``../shared/real-material`` whose babble is ``voices`` clips of
    the sources' (training) speakers."""
    from weighter.training.augment import ChannelAugmenter

    rng = np.random.default_rng([seed, 5])
    babble = []
    for _ in range(voices):
        source = sources[int(rng.integers(len(sources)))]
        speakers = source.bank.identities(source.split)
        clips = source.bank.clips(speakers[int(rng.integers(len(speakers)))])
        babble.append(clips[int(rng.integers(len(clips)))].astype(np.float32) / 32768.0)
    return ChannelAugmenter(babble=babble, seed=seed)


def _batch(items: list[CachedConversation], block: int, index: dict[str, int], device: torch.device,
           rng: np.random.Generator | None = None, min_frames: int = 800):
    """Padded frames (B, T, Cf), mask (B, T), likes (B, K), activity and speakers of ``items``;
    with ``rng``, each item is a random crop of at least ``min_frames`` frames (likes: the
    speakers heard at least 1 s in the crop)."""
    crops = []
    for it in items:
        a, b = 0, it.frames
        if rng is not None and it.frames > min_frames and rng.random() < 0.5:
            length = int(rng.integers(min_frames, it.frames + 1))
            a = int(rng.integers(0, (it.frames - length) // block + 1)) * block  # on the block grid
            b = a + length
        act = it.activity[:, a:b]
        heard = act.sum(1) >= 100  # frames: 1 s
        crops.append((it, a, b, act[heard], tuple(l for l, h in zip(it.likes, heard) if h)))
    t = max(b - a for _, a, b, _, _ in crops)
    frames = torch.zeros(len(crops), t, crops[0][0].blocks.shape[1])
    mask = torch.zeros(len(crops), t, dtype=torch.bool)
    y = torch.zeros(len(crops), len(index))
    activity, speakers = [], []
    for i, (it, a, b, act, likes) in enumerate(crops):
        blocks = torch.from_numpy(it.blocks[a // block: -(-b // block)].astype(np.float32))
        frames[i, : b - a] = blocks.repeat_interleave(block, 0)[: b - a]
        mask[i, : b - a] = True
        known = [index[l] for l in likes if l in index]
        y[i, known] = 1
        rows = [j for j, l in enumerate(likes) if l in index]
        activity.append(torch.from_numpy(act[rows].astype(np.float32)))
        speakers.append(known)
    return frames.to(device), mask.to(device), y.to(device), activity, speakers


@torch.no_grad()
def cached_truths(model: WeighterModel, items: list[CachedConversation], batch: int = 32) -> list[SetTruth]:
    """The model's slot sets on cached conversations, for validation and calibration."""
    model.eval()
    block = max(1, model.config.partial_hop)
    order = sorted(range(len(items)), key=lambda i: items[i].frames)
    truths: dict[int, SetTruth] = {}
    for i in range(0, len(order), batch):
        chunk = [items[j] for j in order[i:i + batch]]
        frames, mask, _, _, _ = _batch(chunk, block, {}, torch.device("cpu"))
        out = model.from_frames(frames, mask)
        for b, j in enumerate(order[i:i + batch]):
            row = output_row(out, b, items[j].frames)
            truths[j] = SetTruth(*row_slots(row, model.config.split_cosine, model.config.split_min_share),
                                 items[j].likes, items[j].activity)
    model.train()
    return [truths[j] for j in range(len(items))]


def train_cached(out: str | Path, cfg: TrainConfig, model_cfg: WeighterConfig, train_sources: list[Source],
                 val_sources: list[Source], train_files: int = 4000, progress: bool = True,
                 encoder: SpeakerEncoder | None = None, augmenter=None) -> TrainResult:
    """Train the weighter on cached frames of a frozen frontend; write the best model to ``out``.

    Parameters
    ----------
    out : str or Path
        The model file to write (atomically), the best by validation count accuracy + mAP.
    cfg : TrainConfig
        Steps, batch size, learning rate, conversation settings, ``val_files`` and ``eval_every``.
    model_cfg : WeighterConfig
        A frozen frontend's configuration (``frontend="resemblyzer"``, ``partial_hop`` > 0).
    train_sources, val_sources : list of Source
        Bank splits to mix training and validation conversations from.
    train_files : int
        Training conversations cached (each step draws ``cfg.batch_size`` crops of them).
    encoder : SpeakerEncoder, optional
        The frontend "distilled"'s encoder (``weighter.embedder.checkpoint.load_encoder``): its
        weights go into the model file.
    augmenter : ChannelAugmenter, optional
        The training channels for ``cfg.augment``; default one on ``../shared/real-material`` with
        babble of the training sources' speakers.

    Returns
    -------
    TrainResult
        The best score (count accuracy + mAP), its step, steps run and the validation history.

    Examples
    --------
    >>> train_cached("m.pt", TrainConfig(steps=2000), WeighterConfig(frontend="resemblyzer", partial_hop=50),
    ...              [Source(bank, "train")], [Source(bank, "validation")])  # doctest: +SKIP
    """
    out = Path(out)
    torch.manual_seed(cfg.seed)
    likes = sorted({like for s in train_sources for like in s.bank.identities(s.split)})
    index = {like: i for i, like in enumerate(likes)}
    model_cfg.num_likes = len(likes)
    model = WeighterModel(model_cfg)
    if model_cfg.frontend == "distilled":
        if encoder is None:
            raise WeighterError("frontend 'distilled' needs its speaker encoder (weighter distill's file)")
        model.encoder.load_state_dict(encoder.state_dict())
    model.set_precision(pick_precision(cfg.precision, torch.device("cpu")))  # frames as the embedder makes them
    if cfg.augment and augmenter is None:
        augmenter = default_augmenter(train_sources, cfg.seed)
    block = max(1, model_cfg.partial_hop)
    train_items = cache_conversations(model, train_sources, train_files, cfg, cfg.seed, progress, augmenter=augmenter)
    val_cfg = TrainConfig(**(asdict(cfg) | {"min_seconds": 10.0, "max_seconds": 30.0, "reverb": 0.0,
                                            "distort": 0.0}))
    val_items = cache_conversations(model, val_sources, cfg.val_files, val_cfg, cfg.seed + 1, progress,
                                    augmenter=augmenter)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / cfg.steps))))
    rng = np.random.default_rng(cfg.seed)
    device = torch.device("cpu")
    best, best_step, stale, history = -1.0, None, 0, []
    model.train()
    bar = tqdm(total=cfg.steps, desc="training", unit="step", disable=not progress, mininterval=1.0)
    for step in range(1, cfg.steps + 1):
        picks = rng.choice(len(train_items), size=cfg.batch_size, replace=False)
        frames, mask, y, activity, speakers = _batch([train_items[i] for i in picks], block, index, device, rng)
        parts = losses(model, model.from_frames(frames, mask), y, activity, speakers, cfg)
        opt.zero_grad(set_to_none=True)
        parts["total"].backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        schedule.step()
        bar.update(1)
        bar.set_postfix({k: f"{float(v.detach()):.3f}" for k, v in parts.items()})
        if step % cfg.eval_every == 0 or step == cfg.steps:
            truths = cached_truths(model, val_items)
            metrics = summarize(truths)
            metrics["step"] = step
            history.append(metrics)
            log.info("step %d: %s", step, metrics)
            score = metrics["count_accuracy"] + metrics["map"]
            if score > best:
                best, best_step, stale = score, step, 0
                save_model(out, model, likes, metrics["threshold"],
                           train=asdict(cfg) | {"cached_files": train_files, "sources": [
                               f"{type(s.bank).__name__}:{s.bank.directory}:{s.split}:{s.share}" for s in train_sources]},
                           metrics=metrics,
                           history=history, merge_cosine=metrics["merge_cosine"],
                           **pair_calibrations(truths, metrics["threshold"], metrics["merge_cosine"]))
            else:
                stale += 1
                if stale >= cfg.patience:
                    log.info("early stop at step %d", step)
                    break
    bar.close()
    return TrainResult(model=str(out), steps=step, best_step=best_step, best_score=best, score="count_accuracy+map",
                       history=history)
