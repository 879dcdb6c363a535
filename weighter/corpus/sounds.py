"""Non-speech sounds for training: what real recordings hold besides their speakers.

Calls, meetings and broadcasts carry hold music, ring and busy tones, beeps, mains hum, fans
and traffic, and some files hold nothing else (a hang-up, a line left open). A model trained
only on conversations of 1-4 speakers has never heard "nobody" and gives such a sound a
confident slot (README, "Where it falls short"). The mixer lays these sounds into a share of
its training conversations and makes a share of files with no speaker at all.

Every sound is drawn here with numpy alone, from four families: coloured noise with a slow
swell, mains hum with its harmonics, tone patterns (one or two sines switched on and off, as
ring, busy and keypad tones are), and music (notes of a random scale with harmonics and
decaying envelopes, one to three at a time). ``benchmarks/no_speech.py`` judges a model on
sounds made another way (sox's synthesiser, a recorded noise), never these.
"""

from __future__ import annotations

import numpy as np

FAMILIES = ("noise", "hum", "tones", "music")


def nonspeech(rng: np.random.Generator, n: int, sample_rate: int = 16000) -> tuple[np.ndarray, str]:
    """``n`` samples of one sound of a random family, unit RMS where it sounds (float32), and the family."""
    family = FAMILIES[int(rng.integers(len(FAMILIES)))]
    sound = {"noise": _swelling_noise, "hum": _hum, "tones": _tones, "music": _music}[family](rng, n, sample_rate)
    power = float(np.mean(sound.astype(np.float64) ** 2))
    return (sound / np.sqrt(power + 1e-20)).astype(np.float32), family


def coloured_noise(rng: np.random.Generator, n: int, beta: float) -> np.ndarray:
    """``n`` samples of noise with a 1/f^beta power spectrum (0 white, 1 pink, 2 brown), float64.

    Made at the next FFT-friendly length (at most about 1% longer) and cut to ``n`` samples:
    most conversation lengths have a large prime factor, which made the inverse FFT 10 to 30
    times slower, half the cost of a training batch (``benchmarks/train_speed.py``). The
    random draws are the ones a length-n spectrum takes, so the rest of a conversation (turns,
    levels, channel) is drawn as before; the top 1% of the band stays empty."""
    from scipy.fft import next_fast_len

    spectrum = rng.normal(size=n // 2 + 1) + 1j * rng.normal(size=n // 2 + 1)
    fast = next_fast_len(n, real=True)
    freqs = np.maximum(np.fft.rfftfreq(fast)[: n // 2 + 1], 1.0 / fast)
    return np.fft.irfft(spectrum / freqs ** (beta / 2), fast)[:n]


def _swelling_noise(rng, n, sr):
    """Noise of spectral slope 1/f^beta, beta in [0, 2], its level swelling at 0.05-3 Hz."""
    noise = coloured_noise(rng, n, rng.uniform(0, 2))
    t = np.arange(n) / sr
    depth = rng.uniform(0, 0.9)
    return noise * (1 - depth / 2 + depth / 2 * np.sin(2 * np.pi * rng.uniform(0.05, 3) * t + rng.uniform(0, 6.3)))


def _hum(rng, n, sr):
    """Mains hum: 50 or 60 Hz (+-1%) and 1-12 harmonics of random strength, a little noise under it."""
    t = np.arange(n) / sr
    f0 = float(rng.choice([50.0, 60.0])) * rng.uniform(0.99, 1.01)
    harmonics = int(rng.integers(1, 13))
    out = sum(rng.uniform(0, 1) / k ** rng.uniform(0, 1.5) * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.3))
              for k in range(1, harmonics + 1))
    return out + 0.01 * rng.normal(size=n)


def _tones(rng, n, sr):
    """One or two sines of 300-2500 Hz, on for 0.05-2 s and off for 0.05-4 s, with 5 ms ramps."""
    t = np.arange(n) / sr
    pair = rng.uniform(300, 2500, size=int(rng.integers(1, 3)))
    tone = sum(np.sin(2 * np.pi * f * t) for f in pair)
    on, off = rng.uniform(0.05, 2.0), rng.uniform(0.05, 4.0)
    if rng.random() < 0.2:  # a steady tone (dial tone, test tone)
        return tone
    phase = (t + rng.uniform(0, on + off)) % (on + off)
    gate = np.clip(np.minimum(phase, on - phase) / 0.005, 0, 1)  # 5 ms ramps, zero while off
    return tone * gate


def _music(rng, n, sr):
    """Notes of a random scale (equal-tempered, 110-1760 Hz), each with 1-8 harmonics of falling
    strength and an exponentially decaying envelope, 0.1-1 s apart, 1-3 voices at a time."""
    seconds = n / sr
    out = np.zeros(n)
    root = rng.uniform(45, 57)  # MIDI note of the scale's root (110-196 Hz)
    scale = np.cumsum(rng.choice([1, 2, 2, 2, 3], size=24))  # semitones above the root
    beat = rng.uniform(0.1, 1.0)
    harmonics, tilt = int(rng.integers(1, 9)), rng.uniform(0.5, 2.0)
    decay = rng.uniform(0.3, 4.0)  # per second
    for _ in range(int(rng.integers(1, 4))):
        start = 0.0
        while start < seconds:
            midi = root + scale[int(rng.integers(0, 16))]
            f = 440.0 * 2 ** ((midi - 69) / 12)
            length = beat * int(rng.integers(1, 5))
            a, b = int(start * sr), min(n, int((start + length) * sr))
            t = np.arange(b - a) / sr
            note = sum(np.sin(2 * np.pi * k * f * t) / k ** tilt for k in range(1, harmonics + 1) if k * f < sr / 2)
            out[a:b] += note * np.exp(-decay * t) * np.clip(t / 0.01, 0, 1)
            start += length
    return out
