"""Recording-chain distortions for synthetic conversations: what users' files go through
and the TTS bank never does. The mixer applies one of them to a share of its files
(``MixerConfig.distort``), after noise and the telephone channel:

* ``mp3``: a round trip through an MP3 encoder (libsndfile's LAME) at 16-113 kbit/s;
* ``clipping``: a gain of 6-20 dB into hard or soft (tanh) saturation;
* ``equaliser``: a random tilt and two peaking bands of +-9 dB (a microphone's or a room's
  colour).
"""

from __future__ import annotations

import io

import numpy as np

DISTORTIONS = ("mp3", "clipping", "equaliser")
MP3_COMPRESSION = (0.3, 0.95)  # libsndfile's level: 113 to 16 kbit/s at 16 kHz (it refused 0.99994 once)


def distort(audio: np.ndarray, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """One distortion drawn at random: (audio float32, its name)."""
    name = DISTORTIONS[int(rng.integers(len(DISTORTIONS)))]
    out = {"mp3": mp3, "clipping": clipping, "equaliser": equaliser}[name](audio, sample_rate, rng)
    return out.astype(np.float32), name


def mp3(audio: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """An MP3 round trip at a random constant bitrate, realigned to the input (same length)."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1, 1), sample_rate, format="MP3", subtype="MPEG_LAYER_III",
             compression_level=float(rng.uniform(*MP3_COMPRESSION)), bitrate_mode="CONSTANT")
    buffer.seek(0)
    decoded, _ = sf.read(buffer, dtype="float32")
    return _fit(decoded[_delay(decoded, audio):], len(audio))


def _delay(decoded: np.ndarray, audio: np.ndarray, longest: int = 4000) -> int:
    """Samples by which a decoder delays its output (up to ``longest``): the lag of the
    cross-correlation peak. At 24 kbit/s and below LAME works at 8 kHz and libsndfile leaves
    69 ms of delay in; the truth's timings must still hold."""
    from scipy.signal import correlate

    n = min(len(decoded), len(audio))
    c = correlate(decoded[:n], audio[:n], mode="full", method="fft")[n - 1: n - 1 + longest + 1]
    return int(np.argmax(c))


def clipping(audio: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Overdrive by 6-20 dB, then hard clipping at full scale or tanh saturation."""
    driven = audio * 10 ** (rng.uniform(6, 20) / 20)
    return np.clip(driven, -1, 1) if rng.random() < 0.5 else np.tanh(driven)


def equaliser(audio: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A random spectral tilt (dB per octave from 1 kHz) plus two one-octave peaking bands."""
    spectrum = np.fft.rfft(audio)
    freqs = np.fft.rfftfreq(len(audio), 1 / sample_rate)
    octaves = np.log2(np.maximum(freqs, 50.0) / 1000.0)  # octaves from 1 kHz
    gain_db = rng.uniform(-3, 3) * octaves  # tilt: dB per octave
    for _ in range(2):  # peaking bands, one octave wide
        centre = rng.uniform(np.log2(200 / 1000), np.log2(6000 / 1000))
        gain_db = gain_db + rng.uniform(-9, 9) * np.exp(-0.5 * ((octaves - centre) / 0.5) ** 2)
    out = np.fft.irfft(spectrum * 10 ** (gain_db / 20), n=len(audio))
    peak = float(np.abs(out).max(initial=0.0))
    return out * (0.9 / peak) if peak > 0.9 else out


def _fit(audio: np.ndarray, length: int) -> np.ndarray:
    """A decoded signal trimmed or zero-padded to ``length`` samples."""
    if len(audio) >= length:
        return audio[:length]
    return np.pad(audio, (0, length - len(audio)))
