"""Recording chains for synthetic conversations: what users' files go through and the TTS
bank never does.

Distortions, one of which the mixer applies to a share of its files (``MixerConfig.distort``),
after noise and the telephone channel:

* ``mp3``: a round trip through an MP3 encoder (libsndfile's LAME) at 16-113 kbit/s;
* ``clipping``: a gain of 6-20 dB into hard or soft (tanh) saturation;
* ``equaliser``: a random tilt and two peaking bands of +-9 dB (a microphone's or a room's
  colour).

A per-file recording channel (``MixerConfig.channel``; the mixer draws the room and the noise,
this module the rest): each file heard through its own microphone (``microphone``: band edges
and colour) and, on a share of files, a telephone line with one of three codecs (``telephone``:
300-3400 Hz, 8 kHz, G.711 mu-law or A-law, or GSM 06.10 full rate through sox). This is the
*evaluation* family of ``benchmarks/real_speech.py``: training augments with other codecs,
recorded noises and rooms (``weighter.training.augment``), so a figure measured here is
robustness, not memory of the training augmenter.
"""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np

from weighter.errors import CorpusError

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
    return fit_length(decoded[_delay(decoded, audio):], len(audio))


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


TELEPHONE_CODECS = ("mu-law", "a-law", "gsm")  # the evaluation family's telephone codecs
SOX_CODECS = {  # name -> sox output type and options, at 8 kHz unless a rate is given
    "mu-law": ["-t", "ul"], "a-law": ["-t", "al"], "gsm": ["-t", "gsm"],
    "amr-nb": ["-t", "amr-nb"], "ima-adpcm": ["-t", "ima"], "oki-adpcm": ["-t", "vox"],
    "vorbis": ["-t", "ogg"], "mp3": ["-t", "mp3"],
}


def sox_codec(audio: np.ndarray, sample_rate: int, codec: str, options: tuple[str, ...] = ()) -> np.ndarray:
    """A round trip of ``audio`` (float, at ``sample_rate``) through one of ``SOX_CODECS`` by the
    sox command line: encoded at ``sample_rate``, decoded back, same length (float32).

    Parameters
    ----------
    audio : numpy.ndarray
        (samples,) in [-1, 1].
    sample_rate : int
        Hz; the codec runs at this rate (8000 for the telephone codecs: GSM and AMR-NB accept no other).
    codec : str
        A key of ``SOX_CODECS``.
    options : tuple of str
        Extra encoder options placed before the output type, e.g. ``("-C", "7")`` (an AMR mode,
        an MP3 bitrate in kbit/s, a Vorbis quality).

    Examples
    --------
    >>> import numpy as np
    >>> tone = np.sin(np.arange(8000) / 8000 * 2 * np.pi * 440).astype(np.float32) * 0.5
    >>> coded = sox_codec(tone, 8000, "a-law")  # doctest: +SKIP
    >>> coded.shape, float(np.abs(coded - tone).max()) < 0.05  # doctest: +SKIP
    ((8000,), True)
    """
    if codec not in SOX_CODECS:
        raise CorpusError(f"codec {codec!r}: unknown (one of {', '.join(SOX_CODECS)})")
    sox = shutil.which("sox")
    if sox is None:
        raise CorpusError(f"codec {codec}: needs the sox command (apt-get install sox libsox-fmt-all)")
    raw = ["-t", "f32", "-r", str(sample_rate), "-c", "1"]
    pcm = np.clip(audio, -1, 1).astype("<f4").tobytes()
    kind = SOX_CODECS[codec]
    try:
        encoded = subprocess.run([sox, "-q", "-R", *raw, "-", *options, *kind, "-r", str(sample_rate), "-c", "1", "-"],
                                 input=pcm, capture_output=True, check=True).stdout
        decoded = subprocess.run([sox, "-q", "-R", *kind, "-r", str(sample_rate), "-c", "1", "-", *raw, "-"],
                                 input=encoded, capture_output=True, check=True).stdout
    except subprocess.CalledProcessError as error:
        reason = error.stderr.decode(errors="replace").strip().splitlines()
        raise CorpusError(f"codec {codec}: sox failed ({reason[-1] if reason else error.returncode})") from None
    out = np.frombuffer(decoded, "<f4")
    if codec in ("mp3", "vorbis", "amr-nb"):  # decoders that delay their output (5-70 ms): realign
        out = out[_delay(out, audio):]
    return fit_length(out, len(audio)).astype(np.float32)


def microphone(audio: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A microphone and its preamp: a high-pass at 50-250 Hz, a low-pass at 3.5-7.5 kHz (both
    2nd-4th order Butterworth) and a colour (``equaliser``)."""
    from scipy.signal import butter, sosfilt

    low, high = rng.uniform(50, 250), rng.uniform(3500, 7500)
    sos = butter(int(rng.integers(1, 3)) * 2, [low, high], btype="bandpass", fs=sample_rate, output="sos")
    return equaliser(sosfilt(sos, audio), sample_rate, rng)


def telephone(audio: np.ndarray, sample_rate: int, codec: str) -> np.ndarray:
    """A narrowband call: 300-3400 Hz, 8 kHz sampling, ``codec`` (one of ``TELEPHONE_CODECS``),
    back to ``sample_rate`` (float32, same length)."""
    from scipy.signal import butter, resample_poly, sosfiltfilt

    band = sosfiltfilt(butter(4, [300, 3400], btype="bandpass", fs=sample_rate, output="sos"), audio)
    narrow = resample_poly(band, 8000, sample_rate)
    peak = max(float(np.abs(narrow).max(initial=0.0)), 1e-9)
    coded = sox_codec(narrow * (0.9 / peak), 8000, codec) * (peak / 0.9)  # full scale on the line
    return fit_length(resample_poly(coded, sample_rate, 8000), len(audio)).astype(np.float32)


def fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    """A decoded signal trimmed or zero-padded to ``length`` samples."""
    if len(audio) >= length:
        return audio[:length]
    return np.pad(audio, (0, length - len(audio)))
