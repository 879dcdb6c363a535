"""Decoding audio files into mono float32 at the model's sample rate, whole or in chunks.

soundfile (libsndfile) decodes wav, flac, ogg and mp3; torchaudio resamples. Long files are
streamed: ``stream_audio`` holds at most one chunk (plus a 100 ms resampling margin) in memory,
so a 3-hour recording never needs its whole decoded signal at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from weighter.errors import AudioError

SAMPLE_RATE = 16_000  # Hz: what every model in this package consumes
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3")
SILENCE_PEAK = 1e-4  # full scale: below this everywhere, a file carries no signal (-80 dBFS)


@dataclass(frozen=True)
class AudioInfo:
    """What an audio file's header says (nothing decoded): see ``audio_info``.

    Attributes
    ----------
    path : str
    sample_rate : int
        Hz, as stored.
    channels : int
    frames : int
        Samples per channel, as stored.
    format : str
        libsndfile's name for the container (``"WAV"``, ``"FLAC"``, ...).
    """

    path: str
    sample_rate: int  # Hz, as stored
    channels: int
    frames: int  # samples per channel, as stored
    format: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


@dataclass(frozen=True)
class AudioStats:
    """What one full pass over a file measured (at the target sample rate): see ``scan_audio``.

    Attributes
    ----------
    path : str
    duration : float
        Seconds.
    sample_rate : int
        Hz, as stored.
    channels : int
    peak : float
        Largest absolute sample of the mono signal, full scale 1.0.
    rms_db : float
        RMS level over the whole file, dBFS.
    """

    path: str
    duration: float  # seconds
    sample_rate: int  # Hz, as stored
    channels: int
    peak: float  # max |x|, full scale 1.0
    rms_db: float  # dBFS over the whole file


def audio_info(path: str | Path) -> AudioInfo:
    """Read an audio file's header, or say why the file cannot be used.

    Parameters
    ----------
    path : str or Path
        A file libsndfile reads (wav, flac, ogg, mp3, ...).

    Returns
    -------
    AudioInfo

    Raises
    ------
    AudioError
        Missing, a directory, empty, not audio, or no samples.

    Examples
    --------
    >>> from weighter.audio import audio_info
    >>> audio_info("call.flac").duration  # doctest: +SKIP
    42.5
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "no such file")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioError(path, f"not readable as audio ({_short(error)})") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(path, "zero-length audio (no samples)")
    return AudioInfo(str(path), info.samplerate, info.channels, info.frames, info.format)


def stream_audio(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    chunk_seconds: float = 60.0,
) -> Iterator[np.ndarray]:
    """Decode a file in consecutive chunks, mono, at ``sample_rate``: memory stays bounded.

    Chunks are resampled with 100 ms of context on each side and trimmed, so their
    concatenation equals resampling the whole file up to edge effects far below audibility.

    Parameters
    ----------
    path : str or Path
        An audio file.
    sample_rate : int, default 16000
        Hz of the chunks (the file is resampled when it is stored at another rate).
    chunk_seconds : float, default 60.0
        Seconds per chunk; the last may be shorter.

    Yields
    ------
    ndarray of shape (samples,), float32
        Channels averaged, full scale 1.0.

    Raises
    ------
    AudioError
        The file is unusable (see ``audio_info``) or decoding fails.

    Examples
    --------
    >>> from weighter.audio import stream_audio
    >>> seconds = sum(len(c) for c in stream_audio("long.flac")) / 16000  # doctest: +SKIP
    """
    info = audio_info(path)
    sr_in = info.sample_rate
    block = max(1, int(round(chunk_seconds * sr_in)))  # frames at the stored rate
    margin = sr_in // 10 if sr_in != sample_rate else 0
    try:
        with sf.SoundFile(str(path)) as handle:
            total = handle.frames
            start = 0
            while start < total:
                end = min(total, start + block)
                lo, hi = max(0, start - margin), min(total, end + margin)
                handle.seek(lo)
                raw = handle.read(hi - lo, dtype="float32", always_2d=True)  # (frames, channels)
                mono = raw.mean(axis=1)  # (frames,)
                if sr_in == sample_rate:
                    chunk = mono[start - lo : end - lo]
                else:
                    resampled = _resample(mono, sr_in, sample_rate)
                    offset = _out_index(lo, sr_in, sample_rate)
                    a = _out_index(start, sr_in, sample_rate) - offset
                    b = _out_index(end, sr_in, sample_rate) - offset
                    chunk = resampled[a:b]
                if len(raw) == 0:
                    break  # header promised more frames than the file holds (truncated file)
                yield np.ascontiguousarray(chunk, dtype=np.float32)
                start = end
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioError(path, f"decoding failed ({_short(error)})") from None


def load_audio(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    min_seconds: float = 0.0,
) -> np.ndarray:
    """Decode a whole file, mono, at ``sample_rate``.

    Parameters
    ----------
    path : str or Path
        An audio file.
    sample_rate : int, default 16000
        Hz of the result.
    min_seconds : float, default 0.0
        Shorter files are refused.

    Returns
    -------
    ndarray of shape (samples,), float32
        Channels averaged, full scale 1.0.

    Raises
    ------
    AudioError
        Unusable, shorter than ``min_seconds``, or all silent.

    Examples
    --------
    >>> from weighter.audio import load_audio
    >>> audio = load_audio("call.flac")  # doctest: +SKIP
    >>> audio.dtype, audio.ndim  # doctest: +SKIP
    (dtype('float32'), 1)
    """
    chunks = list(stream_audio(path, sample_rate))
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    _validate(path, len(audio) / sample_rate, float(np.abs(audio).max(initial=0.0)), min_seconds)
    return audio


def scan_audio(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    min_seconds: float = 0.0,
    chunk_seconds: float = 60.0,
) -> AudioStats:
    """Decode a whole file once, in chunks, and measure it (what ``weighter scan`` reports).

    Parameters
    ----------
    path : str or Path
        An audio file.
    sample_rate : int, default 16000
        Hz it is decoded at, as the embedder reads it.
    min_seconds : float, default 0.0
        Shorter files are refused.
    chunk_seconds : float, default 60.0
        Seconds decoded at a time.

    Returns
    -------
    AudioStats

    Raises
    ------
    AudioError
        Unusable, shorter than ``min_seconds``, or all silent.

    Examples
    --------
    >>> from weighter.audio import scan_audio
    >>> scan_audio("call.flac", min_seconds=0.5).rms_db  # doctest: +SKIP
    -23.4
    """
    info = audio_info(path)
    samples, peak, energy = 0, 0.0, 0.0
    for chunk in stream_audio(path, sample_rate, chunk_seconds):
        samples += len(chunk)
        peak = max(peak, float(np.abs(chunk).max(initial=0.0)))
        energy += float(np.dot(chunk.astype(np.float64), chunk))
    duration = samples / sample_rate
    _validate(path, duration, peak, min_seconds)
    rms_db = 10 * np.log10(energy / max(samples, 1) + 1e-20)
    return AudioStats(str(path), duration, info.sample_rate, info.channels, peak, float(rms_db))


def _validate(path, duration: float, peak: float, min_seconds: float) -> None:
    if duration <= 0:
        raise AudioError(path, "zero-length audio (no samples)")
    if duration < min_seconds:
        raise AudioError(path, f"too short ({duration:.2f} s < {min_seconds:g} s)")
    if peak < SILENCE_PEAK:
        raise AudioError(path, f"all silent (peak {peak:.1e} < {SILENCE_PEAK:.0e} full scale)")


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    import torch
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(np.ascontiguousarray(x)), sr_in, sr_out).numpy()


def _out_index(frame: int, sr_in: int, sr_out: int) -> int:
    return int(round(frame * sr_out / sr_in))


def _short(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
