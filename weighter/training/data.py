"""Training batches of the Weighter, made beside the loop (train.py) that consumes them.

Batches come from the synthetic utterance bank (conversations mixed on the fly, or single-speaker
clips for pre-training) or from a manifest of real files with file-level likes. Step k's batch is
drawn from its own seed, so a run makes the same batches with any number of worker processes;
the helpers here choose how many workers and how many threads torch keeps for training.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

import numpy as np
import torch
from tqdm import tqdm

from weighter.audio import AudioSource, load_audio
from weighter.corpus import ConversationMixer, MixerConfig, UtteranceBank
from weighter.training.config import TrainConfig
from weighter.errors import AudioError, WeighterError

log = logging.getLogger(__name__)


class BankClips:
    """Pre-training batches: one identity per item, a random crop of one of its clips, with the
    same noise and telephone channel as the conversations. Every item is a labelled speaker, so
    the frame encoder learns identity several times faster per CPU-second than from mixtures."""

    def __init__(self, bank: UtteranceBank, cfg: TrainConfig, likes: list[str]):
        self.bank, self.cfg, self.likes = bank, cfg, likes

    def sample(self, rng: np.random.Generator):
        """One batch: waves (pretrain_batch, samples) float32 and each item's identity index."""
        from weighter.corpus.mixer import _noise, _telephone

        n = int(self.cfg.pretrain_seconds * 16000)
        who = rng.integers(0, len(self.likes), size=self.cfg.pretrain_batch)
        wave = np.zeros((len(who), n), np.float32)
        for b, k in enumerate(who):
            clips = self.bank.clips(self.likes[k])
            clip = clips[int(rng.integers(len(clips)))].astype(np.float32) / 32768.0
            start = int(rng.integers(0, max(1, len(clip) - n + 1)))
            piece = clip[start:start + n] * float(10 ** (rng.uniform(-6, 6) / 20))
            x = np.zeros(n, np.float32)
            x[:len(piece)] = piece
            x += _noise(rng, n, float(np.mean(piece ** 2)) / 10 ** (rng.uniform(10, 30) / 10))
            if rng.random() < self.cfg.telephone:
                x = _telephone(x, 16000)
            wave[b] = x
        return torch.from_numpy(wave), torch.from_numpy(who)


class BankBatches:
    """Fresh conversations from one split of the bank: wave (B, S), likes (B, K), activity."""

    def __init__(self, bank: UtteranceBank, split: str, cfg: TrainConfig):
        self.bank, self.split, self.cfg = bank, split, cfg
        self.likes = bank.identities(split)
        self.index = {s: i for i, s in enumerate(self.likes)}

    def mixer(self, seconds: float, min_speakers: int = 1) -> ConversationMixer:
        """A mixer of conversations exactly ``seconds`` long, with the run's channel settings."""
        return ConversationMixer(self.bank, self.split, MixerConfig(
            min_speakers, self.cfg.max_speakers, seconds, seconds, overlap=self.cfg.overlap,
            telephone=self.cfg.telephone, reverb=self.cfg.reverb, distort=self.cfg.distort, related=self.cfg.related,
            empty=self.cfg.empty, sounds=self.cfg.sounds))

    def sample(self, rng: np.random.Generator, frame_rate: float):
        """One batch of fresh conversations of one drawn length: waves, likes and frame truth."""
        seconds = float(rng.uniform(self.cfg.min_seconds, self.cfg.max_seconds))
        mixer = self.mixer(seconds)
        convs = [mixer.sample(rng) for _ in range(self.cfg.batch_size)]
        length = min(len(c.audio) for c in convs)
        wave = torch.from_numpy(np.stack([c.audio[:length] for c in convs]))
        y = torch.zeros(len(convs), len(self.likes))
        for b, c in enumerate(convs):
            y[b, [self.index[s] for s in c.likes]] = 1
        activity = [torch.from_numpy(c.activity(frame_rate).astype(np.float32)) for c in convs]
        speakers = [[self.index[s] for s in c.likes] for c in convs]
        return wave, None, y, activity, speakers


class ManifestBatches:
    """Real files with file-level likes: random crops of at most max_seconds, no activity."""

    def __init__(self, sources: list[AudioSource], cfg: TrainConfig):
        self.cfg = cfg
        self.likes = sorted({l for s in sources for l in s.likes})
        self.index = {s: i for i, s in enumerate(self.likes)}
        self.audio, self.labels = [], []
        for source in tqdm(sources, desc="reading training audio", unit="file", mininterval=1.0):
            try:
                self.audio.append(load_audio(source.path, min_seconds=0.5))
                self.labels.append([self.index[l] for l in source.likes])
            except AudioError as error:
                log.warning("skipped: %s", error)
        if not self.audio:
            raise WeighterError(f"no usable training audio in the manifest: all {len(sources)} training files "
                                "were skipped (the reasons are above)")

    def sample(self, rng: np.random.Generator, frame_rate: float):
        """One batch of random crops of the manifest's files: waves, lengths and likes (no frame truth)."""
        picks = rng.integers(0, len(self.audio), size=self.cfg.batch_size)
        limit = int(self.cfg.max_seconds * 16000)
        crops = []
        for i in picks:
            a = self.audio[i]
            start = int(rng.integers(0, max(1, len(a) - limit + 1)))
            crops.append(a[start:start + limit])
        lengths = torch.tensor([len(c) for c in crops])
        wave = torch.zeros(len(crops), int(lengths.max()))
        for b, c in enumerate(crops):
            wave[b, :len(c)] = torch.from_numpy(c)
        y = torch.zeros(len(crops), len(self.likes))
        for b, i in enumerate(picks):
            y[b, self.labels[i]] = 1
        return wave, lengths, y, None, [self.labels[i] for i in picks]


def usable_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def auto_workers(device: torch.device) -> int:
    """Batch-making processes by default. On a GPU: every core but one (at most 12), as making
    a batch (about 0.75 core-seconds here: mixing, noise, rooms, codecs) likely takes longer
    than the GPU's step (on an H200 with 12 workers a step took 0.083-0.105 s; which side set
    that pace was not measured). On the CPU a batch costs about a quarter of the CPU time of a
    step, so a quarter of the cores make batches and torch trains on the rest: none on 2
    cores, where one worker left torch one thread and a step took 2.37 s instead of 2.14
    (another run: 2.52 vs 2.41; ``benchmarks/train_speed.py``)."""
    cores = usable_cores()
    return max(0, min(12, cores - 1)) if device.type == "cuda" else min(8, cores // 4)


@contextmanager
def training_threads(device: torch.device, workers: int):
    """On the CPU, leave the workers their cores: torch trains on the others, then gets its
    thread count back."""
    threads = torch.get_num_threads()
    if device.type == "cpu" and workers:
        torch.set_num_threads(max(1, min(threads, usable_cores() - workers)))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class StepBatches(torch.utils.data.IterableDataset):
    """The training batches of steps ``start`` to ``cfg.steps`` - 1, in order: step k's batch is
    drawn with the generator [seed, k], so a run makes the same batches resumed or not and with
    any number of workers (worker i of n makes steps start + i, start + i + n, ..., and the
    DataLoader takes them from the workers in turn). Items: ("clips", wave, who) while
    pre-training, then ("mix", wave, lengths, y, activity, speakers)."""

    def __init__(self, data, clips: BankClips | None, cfg: TrainConfig, frame_rate: float, start: int):
        self.data, self.clips, self.cfg, self.frame_rate, self.start = data, clips, cfg, frame_rate, start

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        first, stride = (0, 1) if info is None else (info.id, info.num_workers)
        for step in range(self.start + first, self.cfg.steps, stride):
            rng = np.random.default_rng([self.cfg.seed, step])
            try:
                if self.clips is not None and step < self.cfg.pretrain_steps:
                    yield ("clips", *self.clips.sample(rng))
                else:
                    yield ("mix", *self.data.sample(rng, self.frame_rate))
            except WeighterError as error:  # to the training process as itself (a DataLoader would
                yield ("error", error)  # re-raise it wrapped in a worker's traceback)
                return


def step_batches(data, clips: BankClips | None, cfg: TrainConfig, frame_rate: float, start: int,
                 device: torch.device, progress: bool = False) -> torch.utils.data.DataLoader:
    """StepBatches made by ``cfg.workers`` processes (auto_workers(device) when None; 0 = in
    this one), each two batches ahead, while this process trains on ``device``. Before workers
    fork, a bank's clips of the split are decoded here once, and the workers share them."""
    workers = auto_workers(device) if cfg.workers is None else cfg.workers
    if workers and isinstance(data, BankBatches):
        log.info("decoding the bank's %s clips for %d batch workers", data.split, workers)
        data.bank.preload(data.split, jobs=usable_cores(), progress=progress)
    return torch.utils.data.DataLoader(StepBatches(data, clips, cfg, frame_rate, start), batch_size=None,
                                       num_workers=workers, prefetch_factor=2 if workers else None,
                                       pin_memory=device.type == "cuda")


def made_batches(loader: torch.utils.data.DataLoader):
    """The loader's items, in order; a batch that could not be made (an unreadable clip, say)
    raises its own one-line error here."""
    for kind, *batch in loader:
        if kind == "error":
            raise batch[0]
        yield (kind, *batch)
