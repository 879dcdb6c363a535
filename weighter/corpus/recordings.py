"""A bank of real single-speaker recordings: a folder laid out ``SPEAKER/*.flac|wav|...``.

The conversation mixer draws from it as from the TTS utterance bank, so a user's own
enrolment recordings (or the project's LibriSpeech readers) give corpora with the same truth
(manifest of likes, RTTM) and the same conditions (turn-taking, pauses, noise, telephone band).

Each recording is cut into clips of about ``clip_seconds`` at its quietest points, so that a
speaker's turns in one conversation are not all the same opening words. Speakers are split by
a hash of their folder name (``speaker_split``): the same speaker always lands in the same split,
whichever other speakers the folder holds.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from weighter.audio.io import AUDIO_EXTENSIONS, SAMPLE_RATE, load_audio
from weighter.corpus.voices import SPLITS
from weighter.errors import AudioError, CorpusError

# Default shares of speakers in train / validation / heldout. For the project's 123 LibriSpeech
# readers this gives 41 / 14 / 68 speakers (docs/real-speech.md lists them).
DEFAULT_SHARES = (0.35, 0.15, 0.50)
FRAME = 0.01  # seconds: energy frames for finding cut points


def speaker_split(speaker: str, shares: tuple[float, float, float] = DEFAULT_SHARES) -> str:
    """The split of a speaker: a fixed hash of its name against cumulative ``shares``.

    Parameters
    ----------
    speaker : str
        The speaker's folder name.
    shares : tuple of float
        Shares of train, validation and heldout; they need not sum to 1 (normalised).

    Returns
    -------
    str
        "train", "validation" or "heldout".

    Examples
    --------
    >>> speaker_split("103") in ("train", "validation", "heldout")
    True
    """
    u = int.from_bytes(hashlib.sha256(speaker.encode()).digest()[:8], "big") / 2 ** 64  # uniform in [0, 1)
    edges = np.cumsum(shares) / float(np.sum(shares))
    return SPLITS[int(np.searchsorted(edges, u, side="right"))] if u < edges[-1] else SPLITS[-1]


def cut_clips(audio: np.ndarray, sample_rate: int, clip_seconds: float = 4.0, min_seconds: float = 1.0) -> list[np.ndarray]:
    """Cut one recording into clips of about ``clip_seconds`` at its quietest 10-ms frames.

    Parameters
    ----------
    audio : np.ndarray
        (S,) float32 mono samples.
    sample_rate : int
        Hz.
    clip_seconds : float
        Target clip length in seconds; each cut is the quietest frame within +-40% of it.
    min_seconds : float
        Clips shorter than this (seconds) are dropped, unless the recording has no longer one.

    Returns
    -------
    list of np.ndarray
        Clips (S_i,) float32, leading and trailing near-silence trimmed.

    Examples
    --------
    >>> clips = cut_clips(np.random.default_rng(0).normal(0, 0.1, 16000 * 10).astype("float32"), 16000)
    >>> 2 <= len(clips) <= 4
    True
    """
    hop = max(1, int(FRAME * sample_rate))
    frames = len(audio) // hop
    if frames == 0:
        return []
    energy = np.sqrt(np.mean(audio[: frames * hop].reshape(frames, hop).astype(np.float64) ** 2, axis=1) + 1e-12)
    energy = np.convolve(energy, np.ones(5) / 5, mode="same")  # (frames,) 50-ms smoothed RMS
    target = int(clip_seconds / FRAME)
    cuts, start = [0], 0
    while frames - start > 1.5 * target:
        lo, hi = start + int(0.6 * target), min(frames, start + int(1.4 * target))
        start = lo + int(np.argmin(energy[lo:hi]))
        cuts.append(start)
    cuts.append(frames)
    floor = 0.1 * float(np.percentile(energy, 90))  # "near-silence": 20 dB under the loud frames
    clips = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        loud = np.flatnonzero(energy[a:b] > floor)
        if len(loud):
            clips.append(audio[(a + loud[0]) * hop:(a + loud[-1] + 1) * hop])
    long_enough = [c for c in clips if len(c) >= min_seconds * sample_rate]
    return long_enough or clips[:1]


class RecordingBank:
    """Real single-speaker recordings in ``directory/SPEAKER/*`` as an utterance bank.

    Drop-in for ``UtteranceBank`` wherever the mixer draws speakers (``weighter synth --voices``,
    training with ``--voices``): the same ``identities``, ``identity``, ``clips`` and ``split_table``.

    Parameters
    ----------
    directory : str or Path
        A folder of speaker folders, each with audio files of that one speaker.
    shares : tuple of float
        Shares of speakers in train / validation / heldout (``speaker_split``); ``(0, 0, 1)``
        puts every speaker in "heldout", ``(1, 0, 0)`` in "train".
    clip_seconds : float
        Length in seconds the recordings are cut into (``cut_clips``).
    min_seconds : float
        A shorter recording is an error (as ``weighter scan`` reports it).

    Examples
    --------
    >>> bank = RecordingBank("../shared/real-speech/librispeech")  # doctest: +SKIP
    >>> len(bank.identities("heldout"))  # doctest: +SKIP
    64
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, directory: str | Path, shares: tuple[float, float, float] = DEFAULT_SHARES,
                 clip_seconds: float = 4.0, min_seconds: float = 0.5):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise CorpusError(f"{self.directory}: no such folder of speaker recordings (expected SPEAKER/*.flac)")
        if len(shares) != 3 or min(shares) < 0 or sum(shares) <= 0:
            raise CorpusError(f"speaker shares {shares}: need three non-negative shares (train, validation, heldout)")
        self.shares, self.clip_seconds, self.min_seconds = tuple(float(s) for s in shares), clip_seconds, min_seconds
        self._files: dict[str, list[Path]] = {}
        for folder in sorted(p for p in self.directory.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS and f.is_file())
            if files:
                self._files[folder.name] = files
        if not self._files:
            raise CorpusError(f"{self.directory}: holds no speaker folders with audio (expected SPEAKER/*.flac or "
                              f"SPEAKER/*.wav)")
        self._split = {s: speaker_split(s, self.shares) for s in self._files}
        self._audio: dict[str, list[np.ndarray]] = {}

    def identities(self, split: str | None = None, include_rejected: bool = False) -> list[str]:
        """Speaker names of ``split`` (every speaker when None), sorted."""
        if split is not None and split not in SPLITS:
            raise CorpusError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
        return [s for s in self._files if split is None or self._split[s] == split]

    def identity(self, identity_id: str) -> dict:
        """The speaker's entry, in the utterance bank's fields (engine "recording", pitch 0)."""
        return {"id": identity_id, "engine": "recording", "voice": identity_id, "person": identity_id, "pitch": 0,
                "split": self._split[identity_id], "files": [str(f) for f in self._files[identity_id]]}

    def clips(self, identity_id: str) -> list[np.ndarray]:
        """The speaker's clips, int16 at 16 kHz (scale by 1/32768 for float), decoded on first use."""
        if identity_id not in self._audio:
            clips = []
            for path in self._files[identity_id]:
                try:
                    audio = load_audio(path, self.sample_rate, min_seconds=self.min_seconds)
                except AudioError as error:
                    raise CorpusError(f"speaker {identity_id}: {error}") from None
                audio = audio / max(float(np.abs(audio).max()), 1e-9) * 0.5  # every speaker at one peak level
                clips += [np.round(c * 32767).astype(np.int16) for c in
                          cut_clips(audio, self.sample_rate, self.clip_seconds)]
            self._audio[identity_id] = clips
        return self._audio[identity_id]

    def preload(self, split: str | None = None, jobs: int = 1, progress: bool = False) -> None:
        """Decode every clip of ``split`` now (before batch-making processes fork)."""
        for identity_id in self.identities(split):
            self.clips(identity_id)

    def split_table(self) -> dict[str, list[str]]:
        """split -> sorted speaker names."""
        return {split: self.identities(split) for split in SPLITS}

    def summary(self) -> dict:
        """Speakers per split and the folder, as ``weighter bank`` prints a bank."""
        return {"directory": str(self.directory), "identities": len(self._files),
                "per_split": {s: len(v) for s, v in self.split_table().items()}}
