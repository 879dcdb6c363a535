"""The training channel augmenter: what a recording goes through between a mouth and a file.

``ChannelAugmenter`` draws one channel per call, each stage with its own probability:

    speech -> room (a measured or simulated impulse response) -> noise (a recorded noise or
           music, or babble of other training voices, at 0-30 dB SNR) -> microphone (band
           edges, a 7-band parametric EQ, a gain ride, sometimes saturation) -> codec (AMR-NB,
           IMA or OKI ADPCM, 8-bit linear on an 8 kHz line; MP3 or Vorbis at low rates) -> level

Built from ``audiomentations`` (a maintained numpy augmentation library: band filters, the
parametric EQ, gain transitions, saturation, recorded background noise), ``pyroomacoustics``
(shoebox rooms with walls of different materials by the image-source method) and sox (the
codecs, ``weighter.corpus.channels.sox_codec``). Its recordings are those of
``../shared/real-material`` (recorded noise and music, measured room impulse responses).

It is kept apart from the evaluation family on purpose (``weighter.corpus.channels`` and the
mixer's ``channel``: coloured noise, synthesised non-speech sounds, babble of report speakers,
image-source rooms with alike walls, G.711 mu-law and A-law, GSM 06.10): no codec, noise
recording or room of one is in the other, so ``benchmarks/real_speech.py`` measures robustness
to channels the encoder never heard.
"""

from __future__ import annotations

import logging
import random
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from weighter.corpus.channels import fit_length, sox_codec
from weighter.corpus.mixer import ConversationMixer, MixerConfig
from weighter.errors import WeighterError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
MATERIAL = Path(__file__).resolve().parents[3] / "shared" / "real-material"  # ../shared/real-material
NARROWBAND_CODECS = ("amr-nb", "ima-adpcm", "oki-adpcm", "linear-8bit")  # on an 8 kHz line
WIDEBAND_CODECS = ("mp3", "vorbis")  # at 16 kHz, low bit rates


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each stage of ``ChannelAugmenter`` (each described beside it).

    Examples
    --------
    >>> from weighter.training.augment import AugmentConfig
    >>> AugmentConfig(room=0.0).noise
    0.8
    """

    clean: float = 0.2  # probability that a call returns the input untouched
    room: float = 0.5  # probability of a room (an impulse response)
    measured_rooms: float = 0.3  # of rooms: share of measured responses (the rest simulated)
    simulated_rooms: int = 48  # pyroomacoustics rooms made once per augmenter
    noise: float = 0.8  # probability of added noise
    snr_db: tuple[float, float] = (0.0, 30.0)
    babble: float = 0.35  # of noises: share of babble of other training voices (the rest recordings)
    microphone: float = 0.7  # probability of a microphone stage (band edges, EQ, gain ride, saturation)
    codec: float = 0.5  # probability of a codec
    narrowband: float = 0.6  # of codecs: share on an 8 kHz line (the rest wideband MP3 / Vorbis)
    level_db: tuple[float, float] = (-25.0, 0.0)  # the recording's level


class ChannelAugmenter:
    """Random recording channels for training, reproducible from a numpy generator.

    Parameters
    ----------
    material : path, optional
        A folder laid out as ``../shared/real-material`` (``noise/SOURCE/*.flac``,
        ``rir/SOURCE/*.flac``); default that folder. Without one, noise is babble only and rooms
        are simulated only (a warning says so).
    babble : list of numpy.ndarray, optional
        Clean single-speaker recordings (float32, 16 kHz) to make babble from: training voices,
        never those a figure is reported on.
    config : AugmentConfig, optional

    Examples
    --------
    >>> import numpy as np
    >>> from weighter.training.augment import ChannelAugmenter
    >>> augmenter = ChannelAugmenter()  # doctest: +SKIP
    >>> speech = np.random.default_rng(0).normal(size=48000).astype(np.float32) * 0.1
    >>> out, stages = augmenter(speech, np.random.default_rng(1))  # doctest: +SKIP
    >>> out.shape, stages  # doctest: +SKIP
    ((48000,), ['room:simulated', 'noise:recorded', 'codec:amr-nb'])
    """

    def __init__(self, material: str | Path | None = None, babble: list[np.ndarray] | None = None,
                 config: AugmentConfig = AugmentConfig(), seed: int = 0):
        self.config = config
        folder = Path(material) if material is not None else MATERIAL
        self.noise_files = sorted((folder / "noise").glob("*/*.flac")) if folder.is_dir() else []
        measured = sorted((folder / "rir").glob("*/*.flac")) if folder.is_dir() else []
        if not folder.is_dir():
            log.warning("%s: no such folder of recorded noise and room responses; augmenting with simulated "
                        "rooms and babble only", folder)
        self.measured = [_aligned(_read(p)) for p in measured]
        self.simulated = simulated_rooms(config.simulated_rooms, np.random.default_rng(seed))
        self.babble = [b for b in (babble or []) if len(b) >= SAMPLE_RATE]
        self._noises: dict[Path, np.ndarray] = {}
        self._microphone = _microphone_chain()

    def __call__(self, audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
        """One random channel applied to ``audio`` (float32 at 16 kHz): the result (float32, same
        length, peak at most 1) and the names of the stages drawn ("clean" when none)."""
        c = self.config
        x = audio.astype(np.float64)
        if rng.random() < c.clean:
            return audio.astype(np.float32), ["clean"]
        stages = []
        if rng.random() < c.room:
            x, name = self.reverberate(x, rng)
            stages.append(f"room:{name}")
        if rng.random() < c.noise:
            x, name = self.add_noise(x, rng)
            stages.append(f"noise:{name}")
        if rng.random() < c.microphone:
            with _seeded(rng):  # audiomentations draws from the global random and numpy states
                x = self._microphone(samples=x.astype(np.float32), sample_rate=SAMPLE_RATE).astype(np.float64)
            stages.append("microphone")
        x = x * 10 ** (rng.uniform(*c.level_db) / 20) / max(float(np.abs(x).max(initial=0.0)), 1e-9)
        if rng.random() < c.codec:
            x, name = self.encode(x, rng)
            stages.append(f"codec:{name}")
        return np.clip(x, -1, 1).astype(np.float32), stages or ["level"]

    def reverberate(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """``x`` through one room: a measured impulse response (share ``measured_rooms``) or a
        simulated one; the direct sound stays where it was, the level where it was."""
        from scipy.signal import fftconvolve

        measured = bool(self.measured) and rng.random() < self.config.measured_rooms
        bank = self.measured if measured else self.simulated
        response = bank[int(rng.integers(len(bank)))]
        wet = fftconvolve(x, response)[: len(x)]
        wet *= np.sqrt(np.mean(x ** 2) / (np.mean(wet ** 2) + 1e-20))
        return wet, "measured" if measured else "simulated"

    def add_noise(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """``x`` plus a recorded noise (a random stretch of a random file, looped if short) or
        babble of 3-6 training voices, at an SNR drawn from ``snr_db`` against ``x``'s power."""
        babble = bool(self.babble) and (not self.noise_files or rng.random() < self.config.babble)
        if babble:
            noise = np.zeros(len(x))
            for _ in range(int(rng.integers(3, 7))):
                voice = self.babble[int(rng.integers(len(self.babble)))]
                noise += _stretch(voice, len(x), rng) / (np.sqrt(np.mean(voice.astype(np.float64) ** 2)) + 1e-9)
        elif self.noise_files:
            path = self.noise_files[int(rng.integers(len(self.noise_files)))]
            if path not in self._noises:
                self._noises[path] = _read(path)
            noise = _stretch(self._noises[path], len(x), rng)
        else:
            return x, "none"
        snr = rng.uniform(*self.config.snr_db)
        power = np.mean(x ** 2) / 10 ** (snr / 10)
        return x + noise * np.sqrt(power / (np.mean(noise ** 2) + 1e-20)), "babble" if babble else "recorded"

    def encode(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """``x`` through one codec: on an 8 kHz line (300-3400 Hz or wider) AMR-NB at a random
        mode, IMA or OKI ADPCM, or 8-bit linear PCM; else MP3 at 8-32 kbit/s or Vorbis at quality
        -1 to 2, at 16 kHz."""
        from scipy.signal import butter, resample_poly, sosfiltfilt

        if rng.random() < self.config.narrowband:
            codec = NARROWBAND_CODECS[int(rng.integers(len(NARROWBAND_CODECS)))]
            low, high = rng.uniform(100, 400), rng.uniform(3200, 3800)
            band = sosfiltfilt(butter(4, [low, high], btype="bandpass", fs=SAMPLE_RATE, output="sos"), x)
            narrow = resample_poly(band, 8000, SAMPLE_RATE)
            if codec == "linear-8bit":
                coded = np.round(np.clip(narrow, -1, 1) * 127) / 127
            else:
                options = ("-C", str(int(rng.integers(0, 8)))) if codec == "amr-nb" else ()
                coded = sox_codec(narrow, 8000, codec, options)
            return fit_length(resample_poly(coded, SAMPLE_RATE, 8000), len(x)), codec
        codec = WIDEBAND_CODECS[int(rng.integers(len(WIDEBAND_CODECS)))]
        option = str(int(rng.choice([8, 16, 24, 32]))) if codec == "mp3" else str(int(rng.integers(-1, 3)))
        return sox_codec(x, SAMPLE_RATE, codec, ("-C", option)).astype(np.float64), codec


class ChannelMixer:
    """Conversations of a bank split, a share of them heard through a training channel.

    That share is mixed dry (no background noise, telephone band or distortion) and then passed
    through ``augmenter``; the rest is mixed by ``config`` as it stands. Used for the cached
    training conversations and for calibration, so that both hear the same channels.

    Parameters
    ----------
    bank, split
        As ``ConversationMixer``'s.
    config : MixerConfig
        The conversations' mix (lengths, speakers, overlap, and the noise and telephone band of
        the share not augmented).
    augmenter : ChannelAugmenter or None
        The training channels; needed when ``share`` > 0.
    share : float
        Probability that a conversation is heard through ``augmenter``.

    Examples
    --------
    >>> mixer = ChannelMixer(bank, "train", MixerConfig(1, 3, 8, 30), augmenter, 0.5)  # doctest: +SKIP
    >>> conversation = mixer.sample(np.random.default_rng(0))  # doctest: +SKIP
    """

    def __init__(self, bank, split: str, config: MixerConfig, augmenter: "ChannelAugmenter | None", share: float):
        if share and augmenter is None:
            raise WeighterError("augment > 0 needs a ChannelAugmenter (weighter.training.augment)")
        self.mixer = ConversationMixer(bank, split, config)
        self.dry = ConversationMixer(bank, split, replace(config, snr_db=None, telephone=0.0, distort=0.0))
        self.augmenter, self.share = augmenter, share

    def sample(self, rng: np.random.Generator):
        """One conversation (``weighter.corpus.mixer.Conversation``)."""
        if self.share and rng.random() < self.share:
            conversation = self.dry.sample(rng)
            conversation.audio = self.augmenter(conversation.audio, rng)[0]
            return conversation
        return self.mixer.sample(rng)


def simulated_rooms(count: int, rng: np.random.Generator, length: float = 0.8) -> list[np.ndarray]:
    """``count`` impulse responses of random shoebox rooms (pyroomacoustics, image-source method):
    2.5-12 x 2.5-9 x 2.3-4.5 m, each wall its own absorption (0.02-0.6), one source and one
    microphone at random places; the direct sound at sample 0, at most ``length`` seconds long."""
    import pyroomacoustics as pra

    out = []
    while len(out) < count:
        size = rng.uniform((2.5, 2.5, 2.3), (12.0, 9.0, 4.5))
        walls = {w: pra.Material(float(rng.uniform(0.02, 0.6))) for w in
                 ("east", "west", "north", "south", "floor", "ceiling")}
        room = pra.ShoeBox(size, fs=SAMPLE_RATE, materials=walls, max_order=int(rng.integers(6, 18)),
                           air_absorption=True)
        room.add_source(rng.uniform(0.4, size - 0.4))
        room.add_microphone(rng.uniform(0.4, size - 0.4))
        room.compute_rir()
        out.append(_aligned(np.asarray(room.rir[0][0], np.float64))[: int(length * SAMPLE_RATE)])
    return out


def _microphone_chain():
    """The microphone stage, from audiomentations: band edges, a 7-band EQ of +-10 dB, a gain
    ride over 0.5-4 s, sometimes saturation (each stage with its own probability)."""
    import audiomentations as A

    return A.Compose([
        A.HighPassFilter(min_cutoff_freq=60.0, max_cutoff_freq=400.0, p=0.6),
        A.LowPassFilter(min_cutoff_freq=3000.0, max_cutoff_freq=7800.0, p=0.5),
        A.SevenBandParametricEQ(min_gain_db=-10.0, max_gain_db=10.0, p=0.8),
        A.GainTransition(min_gain_db=-12.0, max_gain_db=6.0, min_duration=0.5, max_duration=4.0, p=0.2),
        A.TanhDistortion(min_distortion=0.05, max_distortion=0.5, p=0.1),
    ])


@contextmanager
def _seeded(rng: np.random.Generator):
    """Python's and numpy's global random states seeded from ``rng`` for the block, then restored."""
    saved = random.getstate(), np.random.get_state()
    seed = int(rng.integers(2 ** 32))
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])


def _read(path: Path) -> np.ndarray:
    """A mono 16 kHz recording as float64; a one-line error for anything else."""
    import soundfile as sf

    try:
        audio, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as error:  # libsndfile raises several types for unreadable files
        raise WeighterError(f"{path}: unreadable ({str(error).splitlines()[0][:120]})") from None
    if rate != SAMPLE_RATE:
        raise WeighterError(f"{path}: sample rate {rate} Hz, the augmenter needs {SAMPLE_RATE} Hz")
    return audio.mean(1)


def _aligned(response: np.ndarray) -> np.ndarray:
    """An impulse response with its direct sound (the first sample within 6 dB of the peak)
    moved to sample 0, scaled to unit peak: reverberation then neither delays nor shifts speech."""
    peak = float(np.abs(response).max(initial=0.0))
    if peak == 0:
        return np.ones(1)
    first = int(np.argmax(np.abs(response) >= peak / 2))
    return response[first:] / peak


def _stretch(sound: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of ``sound`` from a random start, looped when shorter (float64)."""
    start = int(rng.integers(len(sound)))
    reps = -(-(start + n) // len(sound))
    return np.tile(sound.astype(np.float64), reps)[start:start + n]
