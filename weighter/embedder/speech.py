"""Where a recording holds speech: a pretrained voice-activity detector, used to gate slots.

The Weighter learnt from mixes that always hold a speaker, and gives a file of music, tones
or noise an active slot all the same (``benchmarks/no_speech.py``). Silero VAD (the
``silero-vad`` package, MIT; its weights ship inside the package, nothing downloads) was
trained on real speech and real noise of many languages and says, every 32 ms, how likely
the audio is speech. With a speech gate, the embedder keeps a slot active only when at least
that share of its weighting falls on speech (``EmbeddingSet.speech_share``), and zeroes every
weighting where no speech is heard within ``PAD_SECONDS`` (``speech_mask``), so that a slot's
spans keep to speech. The pad keeps the pauses inside a turn.

The detector is a recurrent network read 512 samples at a time; one stream through a file is
slow, so a file is cut into 4-second segments run side by side as one batch, each from a fresh
state (which the detector forgets within a fraction of a second). Measurements:
``docs/results.md`` ("speech gate, speed"); the figures behind these choices:
``docs/code-notes.md``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from weighter.errors import WeighterError

SAMPLE_RATE = 16000
CHUNK = 512  # samples per detector step: 32 ms
FRAME_RATE = SAMPLE_RATE / CHUNK  # 31.25 Hz
SEGMENT_CHUNKS = 125  # 4 s per segment run side by side
MAX_SEGMENTS = 512  # per batch: 512 x 4 s of float32 is 131 MB
PAD_SECONDS = 1.0  # speech_mask: the time either side of heard speech that still counts as speech


class SpeechDetector:
    """``SpeechDetector().probabilities([audio, ...])``: per 16 kHz mono signal, the speech
    probability of each 32 ms frame (``FRAME_RATE`` Hz; a partial last frame counts)."""

    def __init__(self):
        threads = torch.get_num_threads()
        try:
            from silero_vad import load_silero_vad
        except ImportError as error:
            raise WeighterError("the speech gate needs the silero-vad package (pip install 'weighter[vad]', "
                                f"or pip install silero-vad): {error}") from None
        finally:
            torch.set_num_threads(threads)  # importing silero_vad sets torch to one thread, for everyone
        with warnings.catch_warnings():  # the package loads its TorchScript file with torch.jit.load, which
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*", category=FutureWarning)  # torch deprecates
            self.model = load_silero_vad()
        torch.set_num_threads(threads)

    @torch.no_grad()
    def probabilities(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        """Speech probability of every 32 ms frame of each 16 kHz mono signal.

        Parameters
        ----------
        audios : list of ndarray of shape (samples,), float32

        Returns
        -------
        list of ndarray of shape (ceil(samples / 512),), float32
            In [0, 1], at ``FRAME_RATE`` Hz.
        """
        segments, owners = [], []  # (SEGMENT_CHUNKS * CHUNK,) pieces and the audio each belongs to
        for i, audio in enumerate(audios):
            frames = max(1, -(-len(audio) // CHUNK))
            padded = np.zeros(frames * CHUNK, np.float32)
            padded[:len(audio)] = audio
            for start in range(0, len(padded), SEGMENT_CHUNKS * CHUNK):
                segments.append(padded[start:start + SEGMENT_CHUNKS * CHUNK])
                owners.append(i)
        probs = []
        for first in range(0, len(segments), MAX_SEGMENTS):
            group = segments[first:first + MAX_SEGMENTS]
            batch = torch.zeros(len(group), SEGMENT_CHUNKS, CHUNK)  # (S, chunks, 512)
            for s, piece in enumerate(group):
                batch[s].view(-1)[:len(piece)] = torch.from_numpy(piece)
            steps = max(len(piece) for piece in group) // CHUNK
            self.model.reset_states()
            out = torch.stack([self.model(batch[:, k], SAMPLE_RATE)[:, 0] for k in range(steps)], 1)  # (S, steps)
            probs += [out[s, :len(piece) // CHUNK].numpy() for s, piece in enumerate(group)]
        result: list[list[np.ndarray]] = [[] for _ in audios]
        for owner, p in zip(owners, probs):
            result[owner].append(p)
        return [np.concatenate(parts).astype(np.float32) for parts in result]


def speech_timeline(probabilities: np.ndarray, rate: float, steps: int) -> np.ndarray:
    """Detector probabilities (FRAME_RATE Hz) -> ``steps`` values at ``rate`` Hz (each step's
    mean over the detector frames whose centres fall in it; the nearest frame where none does)."""
    centres = (np.arange(len(probabilities)) + 0.5) / FRAME_RATE  # seconds
    step = np.minimum((centres * rate).astype(int), steps - 1)
    sums = np.bincount(step, probabilities, minlength=steps)
    counts = np.bincount(step, minlength=steps)
    nearest = probabilities[np.minimum(((np.arange(steps) + 0.5) / rate * FRAME_RATE).astype(int),
                                       len(probabilities) - 1)]
    return np.where(counts > 0, sums / np.maximum(counts, 1), nearest).astype(np.float32)


def speech_share(weightings: np.ndarray, speech: np.ndarray) -> np.ndarray:
    """(N,) share of each slot's weighting (N, T) that falls on speech (T,) in [0, 1]."""
    mass = weightings.sum(1)
    return np.where(mass > 0, (weightings * speech[None, :]).sum(1) / np.maximum(mass, 1e-12), 0.0).astype(np.float32)


def speech_mask(speech: np.ndarray, rate: float, pad_seconds: float = PAD_SECONDS) -> np.ndarray:
    """1 where speech (probability >= 0.5 on a timeline at ``rate`` Hz) is heard within
    ``pad_seconds`` either side, else 0: pauses shorter than twice the pad stay inside a turn."""
    heard = np.asarray(speech) >= 0.5
    pad, n = int(round(pad_seconds * rate)), len(heard)
    count = np.concatenate([[0], np.cumsum(heard)])  # heard steps before each step
    steps = np.arange(n)
    near = count[np.minimum(steps + pad + 1, n)] - count[np.maximum(steps - pad, 0)] > 0
    return near.astype(np.float32)
