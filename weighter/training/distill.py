"""Distilling a speaker encoder that holds across channels, from the frozen Resemblyzer teacher.

The teacher (Resemblyzer's GE2E encoder, trained on thousands of clean voices) separates real
people on clean audio; under a telephone band, a codec, a room or noise its embedding follows
the channel. The student starts as a copy of the teacher and learns, window by window, to give
for speech heard through a random channel (``ChannelAugmenter``) what the teacher gives for the
same speech heard clean:

    clean clip (6.4 s) -> teacher -> one embedding per 1.6-s window every 0.5 s   (once)
    clip -> augmenter (V channels) -> mel -> student window k  ~  teacher window k  (every step)
    loss = 1 - cos(student, target), target = teacher's window (or its blend with the clip's
           mean, ``centroid``: the speaker, less what is said in the window)

Only speech is needed, no labels: the TTS utterance bank's train voices, the train split of
real recordings (``--voices``) and the recorded speech of ``../shared/real-material``. The
inputs are computed once (about 5 minutes for 2400 clips on two cores) and the loop draws
windows from them.

Validation (which step is kept): speakers no step trained on (the validation split of the
real recordings and of the TTS bank), each recording cut in two halves, each half through
``val_draws`` channels of the training family drawn once for the whole run; the mAP of
degraded halves finding the other halves of their speaker, and of clean halves.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from weighter.embedder.checkpoint import save_encoder
from weighter.embedder.device import autocast, pick_precision
from weighter.embedder.model import SpeakerEncoder
from weighter.errors import WeighterError
from weighter.evaluation import mean_average_precision
from weighter.training.augment import ChannelAugmenter

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
HOP = 160  # samples per mel frame (10 ms)
WINDOW = 160  # frames per window (1.6 s), the teacher's training length


@dataclass
class DistillConfig:
    """Every setting of a distillation run (each described beside it); ``weighter distill`` fills it.

    Examples
    --------
    >>> from weighter.training.distill import DistillConfig
    >>> DistillConfig(steps=100).batch_size
    128
    """

    clips: int = 2400  # clean training clips, each ``clip_seconds`` of one speaker
    clip_seconds: float = 6.4
    variants: int = 3  # channels drawn per clip, each a training input
    real_share: float = 0.5  # share of clips from real recordings (the rest TTS voices)
    steps: int = 1200
    batch_size: int = 128  # windows per step
    lr: float = 1e-4  # Adam, cosine decay after ``warmup`` steps
    warmup: int = 50
    hop: int = 50  # frames between a clip's windows (the partials' 0.5 s)
    centroid: float = 0.0  # weight of the clip's mean teacher embedding in the target (0: the window's own)
    input_norm: str = "none"  # the student's SpeakerEncoder input_norm: "none", "cmn" (per-window band means)
    #                           or "smooth" (their smooth part across the bands)
    precision: str = "auto"  # the encoders' number format (pick_precision): bfloat16 under CPU autocast
    #                          where the CPU has it, for the teacher's targets, the student's steps and validation
    eval_every: int = 200
    val_draws: int = 4  # channels per validation half
    seed: int = 0

    def to_dict(self) -> dict:
        """The settings as JSON-ready values (what the encoder file records)."""
        return asdict(self)


@dataclass
class DistillResult:
    """What a distillation run did (``distill`` returns it).

    Attributes
    ----------
    encoder : str
        The encoder file written (its best validation step).
    encoder_id : str
    steps : int
    best_step : int
    teacher, best : dict
        Validation figures of the teacher and of the kept step: ``degraded_map``, ``clean_map``.
    seconds : dict
        Wall time of making the inputs and of the loop.
    history : list of dict

    Examples
    --------
    >>> result = distill("encoder.pt", DistillConfig(steps=600), sources)  # doctest: +SKIP
    >>> result.best["degraded_map"] > result.teacher["degraded_map"]  # doctest: +SKIP
    True
    """

    encoder: str
    encoder_id: str
    steps: int
    best_step: int
    teacher: dict
    best: dict
    seconds: dict
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready values (the CLI's ``--json``)."""
        return asdict(self)


@dataclass
class SpeechSource:
    """Clean single-speaker speech to distil on: a bank (``UtteranceBank`` or ``RecordingBank``),
    the split whose speakers it may use, and its share of the clips (within its kind, real or TTS).
    Speakers with less than ``min_seconds`` of speech (a single word, say) are left out: a clip
    of them would be one word looped."""

    bank: object
    split: str
    real: bool
    share: float = 1.0
    min_seconds: float = 3.0

    def speakers(self) -> list[str]:
        """The split's speakers with at least ``min_seconds`` of speech."""
        if not hasattr(self, "_speakers"):
            self._speakers = [s for s in self.bank.identities(self.split)
                              if sum(len(c) for c in self.bank.clips(s)) >= self.min_seconds * SAMPLE_RATE]
        return self._speakers


def folder_sources(folder: str | Path) -> list[SpeechSource]:
    """Every speaker folder of ``folder`` (``SOURCE/SPEAKER/*.flac`` or ``SPEAKER/*.flac``) as
    training speech, one source per ``SOURCE`` with a share of its usable speakers: e.g. the
    recorded speech of ``../shared/real-material/speech``."""
    from weighter.corpus.recordings import RecordingBank

    folder = Path(folder)
    nested = [p for p in sorted(folder.iterdir()) if p.is_dir() and any(q.is_dir() for q in p.iterdir())]
    out = []
    for path in nested or [folder]:
        source = SpeechSource(RecordingBank(path, shares=(1.0, 0.0, 0.0), min_seconds=0.05), "train", real=True)
        if source.speakers():
            source.share = float(len(source.speakers()))
            out.append(source)
    return out


def encoder_mel(wave: torch.Tensor) -> torch.Tensor:
    """The encoder's input: (B, S) waves -> power mel (B, T, 40), each row at -30 dBFS first
    (``ResemblyzerFrontend.mel_frames``; T = (S - 400) // 160 + 1)."""
    from weighter.embedder.model import ResemblyzerFrontend, WeighterConfig

    frontend = _MEL.get("frontend")
    if frontend is None:
        frontend = _MEL["frontend"] = ResemblyzerFrontend(WeighterConfig(frontend="resemblyzer"), SpeakerEncoder())
    t = (wave.shape[1] - 400) // HOP + 1
    return frontend.mel_frames(wave, torch.ones(wave.shape[0], t, dtype=torch.bool))


_MEL: dict = {}


def draw_clip(source: SpeechSource, rng: np.random.Generator, samples: int) -> np.ndarray:
    """``samples`` of one random speaker of ``source``: its clips one after another (0.1-0.4 s
    apart), from a random one, looped if it has too little; float32 at one peak level."""
    speakers = source.speakers()
    clips = source.bank.clips(speakers[int(rng.integers(len(speakers)))])
    parts, total, k = [], 0, int(rng.integers(len(clips)))
    while total < samples:
        clip = clips[k % len(clips)].astype(np.float32) / 32768.0
        parts += [clip, np.zeros(int(rng.uniform(0.1, 0.4) * SAMPLE_RATE), np.float32)]
        total += len(clip) + len(parts[-1])
        k += 1
    out = np.concatenate(parts)[:samples]
    return out / max(float(np.abs(out).max()), 1e-9) * 0.5


def window_starts(frames: int, hop: int) -> np.ndarray:
    """First frames of the 1.6-s windows of a clip of ``frames`` frames, every ``hop``."""
    return np.arange(0, max(frames - WINDOW, 0) + 1, hop)


@torch.no_grad()
def embed_windows(encoder: SpeakerEncoder, mel: torch.Tensor, hop: int, batch: int = 512) -> torch.Tensor:
    """(B, T, 40) mel -> (B, K, 256): the encoder's embedding of each 1.6-s window every ``hop``."""
    starts = torch.from_numpy(window_starts(mel.shape[1], hop))
    index = starts[:, None] + torch.arange(WINDOW)  # (K, 160)
    windows = mel[:, index].reshape(-1, WINDOW, 40)  # (B * K, 160, 40)
    out = torch.cat([encoder(windows[i:i + batch]).float() for i in range(0, len(windows), batch)])
    return out.reshape(mel.shape[0], len(starts), -1)


class DistillData:
    """The inputs of a run, made once: per clip the teacher's window embeddings of its clean
    speech (C, K, 256; the teacher run in ``precision``), and the log-mel of each of its
    ``variants`` channels (C, V, T, 40) as float16 (the student's input is its exp, the power mel)."""

    def __init__(self, teacher: SpeakerEncoder, sources: list[SpeechSource], augmenter: ChannelAugmenter,
                 cfg: DistillConfig, progress: bool = True, precision: str = "float32", batch: int = 32):
        rng = np.random.default_rng([cfg.seed, 1])
        samples = int(cfg.clip_seconds * SAMPLE_RATE)
        picks = _pick_sources(sources, cfg.clips, cfg.real_share, rng)
        targets, mels, levels = [], [], []
        bar = tqdm(total=cfg.clips, desc="making inputs", unit="clip", disable=not progress, mininterval=1.0)
        for i in range(0, cfg.clips, batch):
            clean = np.stack([draw_clip(sources[k], rng, samples) for k in picks[i:i + batch]])  # (b, S)
            clean_mel = encoder_mel(torch.from_numpy(clean))
            with torch.no_grad(), autocast(precision):
                targets.append(embed_windows(teacher, clean_mel, cfg.hop).half())
            levels.append(torch.log(clean_mel + 1e-8).mean(1))  # (b, 40)
            noisy = np.stack([augmenter(x, rng)[0] for x in clean for _ in range(cfg.variants)])  # (b * V, S)
            mel = torch.log(encoder_mel(torch.from_numpy(noisy)) + 1e-10).half()
            mels.append(mel.reshape(len(clean), cfg.variants, *mel.shape[1:]))
            bar.update(len(clean))
        bar.close()
        self.targets = torch.cat(targets)  # (C, K, 256) float16
        self.level = torch.cat(levels).mean(0)  # (40,) mean log-mel of clean speech: "cmn"'s starting offset
        self.mels = torch.cat(mels)  # (C, V, T, 40) float16, log power mel
        self.starts = torch.from_numpy(window_starts(self.mels.shape[2], cfg.hop))

    def batch(self, rng: np.random.Generator, size: int, centroid: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` random (clip, channel, window) triples: power-mel windows (size, 160, 40) and
        their targets (size, 256), unit length."""
        c = torch.from_numpy(rng.integers(len(self.mels), size=size))
        v = torch.from_numpy(rng.integers(self.mels.shape[1], size=size))
        k = torch.from_numpy(rng.integers(len(self.starts), size=size))
        frames = self.starts[k][:, None] + torch.arange(WINDOW)  # (size, 160)
        windows = self.mels[c[:, None], v[:, None], frames].float().exp()  # (size, 160, 40)
        target = self.targets[c, k].float()
        if centroid:
            target = (1 - centroid) * target + centroid * F.normalize(self.targets[c].float().mean(1), dim=-1)
        return windows, F.normalize(target, dim=-1)


class HalvesValidation:
    """Validation speakers (at most ``max_speakers`` per source), each one's first ``max_seconds`` of
    speech cut in two halves, each half heard clean and through
    ``draws`` channels drawn once; figures: mAP of each degraded half finding the degraded halves
    of its speaker (``degraded_map``), of clean halves (``clean_map``), and of degraded halves in
    a gallery of both (``mixed_map``). A half embeds as the mean of its windows' embeddings."""

    def __init__(self, sources: list[SpeechSource], augmenter: ChannelAugmenter, draws: int, hop: int,
                 seed: int = 0, max_speakers: int = 30, max_seconds: float = 16.0):
        rng = np.random.default_rng([seed, 2])
        halves, speakers = [], []
        for source in sources:
            names = source.bank.identities(source.split)
            for name in [names[i] for i in sorted(rng.permutation(len(names))[:max_speakers])]:
                audio = np.concatenate(source.bank.clips(name))[: int(max_seconds * SAMPLE_RATE)]
                audio = audio.astype(np.float32) / 32768.0
                if len(audio) < 4 * WINDOW * HOP:  # two halves of at least two windows each
                    continue
                half = len(audio) // 2
                halves += [audio[:half], audio[half: 2 * half]]
                speakers += [f"{source.split}:{name}"] * 2
        if len(set(speakers)) < 2:
            raise WeighterError("distillation needs validation speakers with at least 6.4 s of speech each "
                                "(the validation split of --voices or of the TTS bank)")
        self.clean = [encoder_mel(torch.from_numpy(h)[None]) for h in halves]
        self.degraded = [[encoder_mel(torch.from_numpy(augmenter(h, rng)[0])[None]) for _ in range(draws)]
                         for h in halves]
        self.speakers, self.draws, self.hop = np.array(speakers), draws, hop

    def __call__(self, encoder: SpeakerEncoder) -> dict:
        """The encoder's validation figures."""
        encoder.eval()

        def embed(mel):
            return F.normalize(embed_windows(encoder, mel, self.hop)[0].mean(0), dim=-1).numpy()

        clean = np.stack([embed(m) for m in self.clean])  # (H, 256)
        degraded = np.stack([embed(m) for draws in self.degraded for m in draws])  # (H * D, 256)
        who = np.repeat(self.speakers, self.draws)
        half = np.repeat(np.arange(len(self.speakers)), self.draws)  # a half's own other draws are not hits
        mixed = np.concatenate([degraded, clean])
        mixed_who = np.concatenate([who, self.speakers])
        mixed_half = np.concatenate([half, np.arange(len(self.speakers))])
        return {"degraded_map": _map(degraded, who, half),
                "clean_map": _map(clean, self.speakers, np.arange(len(self.speakers))),
                "mixed_map": _map(mixed, mixed_who, mixed_half, queries=len(degraded))}


def _map(embeddings: np.ndarray, who: np.ndarray, half: np.ndarray, queries: int | None = None) -> float:
    """mAP of the first ``queries`` items (default all) against all others; an item's own half is
    left out of its ranking."""
    scores = embeddings[: queries or len(embeddings)] @ embeddings.T
    same_half = half[: len(scores), None] == half[None]
    scores[same_half] = -np.inf
    shared = (who[: len(scores), None] == who[None]) & ~same_half
    return round(float(mean_average_precision(scores, shared)), 4)


def distill(out: str | Path, cfg: DistillConfig, sources: list[SpeechSource], val_sources: list[SpeechSource],
            augmenter: ChannelAugmenter | None = None, progress: bool = True,
            material: str | Path | None = None) -> DistillResult:
    """Distil a channel-robust speaker encoder from Resemblyzer's; write the best step to ``out``.

    Parameters
    ----------
    out : str or Path
        The encoder file (``weighter train --frontend distilled --encoder OUT`` builds a model on it).
    cfg : DistillConfig
    sources : list of SpeechSource
        Speech to distil on (train splits only).
    val_sources : list of SpeechSource
        Speech of other speakers, to choose the step by.
    augmenter : ChannelAugmenter, optional
        The training channels; default ``ChannelAugmenter`` on ``material`` with babble of the
        training speech (200 clips of 5 s).
    material : str or Path, optional
        The recorded noises and rooms of that default (default ``../shared/real-material``).

    Returns
    -------
    DistillResult

    Examples
    --------
    >>> from weighter.corpus import UtteranceBank
    >>> from weighter.corpus.recordings import RecordingBank
    >>> real = RecordingBank("../shared/real-speech/librispeech")  # doctest: +SKIP
    >>> result = distill("encoder.pt", DistillConfig(steps=600), [SpeechSource(real, "train", True)],
    ...                  [SpeechSource(real, "validation", True)])  # doctest: +SKIP
    """
    torch.manual_seed(cfg.seed)
    teacher = SpeakerEncoder.resemblyzer()
    if augmenter is None:
        rng = np.random.default_rng([cfg.seed, 3])
        picks = _pick_sources(sources, 200, cfg.real_share, rng)
        babble = [draw_clip(sources[k], rng, 5 * SAMPLE_RATE) for k in picks]
        augmenter = ChannelAugmenter(material, babble=babble, seed=cfg.seed)
    precision = pick_precision(cfg.precision, torch.device("cpu"))
    started = time.perf_counter()
    data = DistillData(teacher, sources, augmenter, cfg, progress, precision)
    validation = HalvesValidation(val_sources, augmenter, cfg.val_draws, cfg.hop, cfg.seed)
    made = time.perf_counter() - started
    student = SpeakerEncoder(cfg.input_norm)
    student.load_state_dict(teacher.state_dict(), strict=False)  # all but a "cmn" offset
    if cfg.input_norm != "none":
        with torch.no_grad():
            student.offset.copy_(data.level if cfg.input_norm == "cmn" else data.level @ student.smooth)
    optimizer = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: min(1.0, (k + 1) / cfg.warmup) * 0.5 * (
        1 + math.cos(math.pi * min(k, cfg.steps) / cfg.steps)))
    with torch.no_grad(), autocast(precision):
        teacher_figures = validation(teacher)
    history = [{"step": 0, "loss": None} | teacher_figures]
    log.info("teacher: %s", teacher_figures)
    best_step, best, best_state = 0, teacher_figures, None
    rng = np.random.default_rng([cfg.seed, 4])
    losses = []
    bar = tqdm(total=cfg.steps, desc="distilling", unit="step", disable=not progress, mininterval=1.0)
    loop_started = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        student.train()
        windows, target = data.batch(rng, cfg.batch_size, cfg.centroid)
        with autocast(precision):
            embedded = student(windows).float()
        loss = (1 - (embedded * target).sum(-1)).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.update(1)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            with torch.no_grad(), autocast(precision):
                figures = validation(student)
            history.append({"step": step, "loss": round(float(np.mean(losses)), 5)} | figures)
            losses.clear()
            log.info("step %d: %s", step, history[-1])
            bar.set_postfix(degraded=figures["degraded_map"], clean=figures["clean_map"])
            if _score(figures) > _score(best):
                best_step, best = step, figures
                best_state = {k: v.clone() for k, v in student.state_dict().items()}
    bar.close()
    if best_state is not None:
        student.load_state_dict(best_state)
    seconds = {"inputs": round(made, 1), "loop": round(time.perf_counter() - loop_started, 1)}
    info = {"teacher": "resemblyzer", "distill": cfg.to_dict(), "best_step": best_step, "validation": best,
            "teacher_validation": teacher_figures, "history": history, "seconds": seconds}
    ident = save_encoder(out, student, info)
    return DistillResult(str(out), ident, cfg.steps, best_step, teacher_figures, best, seconds, history)


def _score(figures: dict) -> float:
    """What chooses the kept step: degraded and mixed mAP, clean mAP as a guard."""
    return figures["degraded_map"] + figures["mixed_map"] + figures["clean_map"]


def _pick_sources(sources: list[SpeechSource], clips: int, real_share: float, rng: np.random.Generator) -> np.ndarray:
    """The source of each clip: real ones take ``real_share`` of the clips (all when there are only
    real ones, none when there are none), shared out by ``share`` within each kind."""
    real = np.array([s.real for s in sources])
    share = np.array([s.share for s in sources], float)
    if real.all() or not real.any():
        p = share / share.sum()
    else:
        p = np.where(real, real_share * share / share[real].sum(), (1 - real_share) * share / share[~real].sum())
    return rng.choice(len(sources), size=clips, p=p)
