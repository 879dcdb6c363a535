"""The conversation mixer: multi-speaker recordings drawn from an utterance bank (numpy, scipy).

Who holds the floor follows the research's bounded random walk, ``r <- clip(r + N(0, step))``
in [0, 1], read every ``tick`` seconds; the walk's position picks one of the file's speakers
(the interval [0, 1] is cut into one bin per speaker). The step shrinks with the number of
speakers so the mean turn stays a few seconds long whatever the count, as in real calls, and
turns shorter than ``min_turn`` are merged into the one before (a random walk that has just
crossed a bin edge tends to cross back at once; people do not hand over the floor for 250 ms).

On top of the speakers: optionally a room (``reverb``: each speaker through his own impulse
response of one shared room, ``weighter.corpus.rooms``), background noise, a telephone channel,
and optionally a distortion of the recording chain (``distort``: MP3, clipping, equaliser;
``weighter.corpus.channels``). Or, on a share of files (``channel``), a recording channel of
its own: a room on half of them, noise of one of three kinds (coloured noise, a non-speech
sound, babble of other speakers of the split) at 5-30 dB SNR, a microphone's band and colour,
a telephone line with a mu-law, A-law or GSM codec on 40% of them, and a level.

The same mixer writes corpora to disk (``weighter synth``) and feeds training on the fly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from weighter.corpus.bank import UtteranceBank
from weighter.corpus.channels import TELEPHONE_CODECS, distort, microphone, telephone
from weighter.corpus.rooms import room_responses
from weighter.corpus.sounds import coloured_noise, nonspeech
from weighter.corpus.voices import SIBLING_SUFFIX
from weighter.errors import CorpusError


@dataclass(frozen=True)
class MixerConfig:
    """How the mixer draws conversations: speakers, lengths, turns, noise and channels.

    Each field is described beside it; probabilities are in [0, 1] and checked on creation.

    Examples
    --------
    >>> from weighter import MixerConfig
    >>> MixerConfig(min_speakers=2, max_speakers=3, min_duration=10, max_duration=20, telephone=0.2).max_speakers
    3
    """

    min_speakers: int = 1
    max_speakers: int = 4
    min_duration: float = 10.0  # seconds per file
    max_duration: float = 60.0
    tick: float = 0.25  # seconds between steps of the floor random walk
    walk_step: float = 0.1  # std of one walk step for two speakers (scaled by 2 / speakers)
    min_turn: float = 1.0  # seconds; shorter turns are merged into the previous one
    pause: tuple[float, float] = (0.1, 0.8)  # seconds of silence between turns
    overlap: float = 0.0  # probability that a turn starts 0.2-1.0 s before the last one ends
    snr_db: tuple[float, float] | None = (10.0, 30.0)  # background noise; None = clean
    telephone: float = 0.0  # probability of a telephone channel (300-3400 Hz, 8 kHz mu-law)
    reverb: float = 0.0  # probability that the speakers share a reverberant room (weighter.corpus.rooms)
    distort: float = 0.0  # probability of a recording-chain distortion (weighter.corpus.channels)
    level_db: float = 4.0  # each speaker's level varies by +- this much per file
    min_heard: float = 1.0  # seconds a drawn speaker must be heard to count as a like
    # Probability that a file of two or more speakers also holds a relative of its first one:
    # another identity of the same person (another pitch) or of its source sibling. Drawn
    # uniformly from hundreds of identities, two near-identical voices almost never meet in one
    # training file, while in a 42-identity split they often do.
    related: float = 0.0
    # Non-speech (weighter.corpus.sounds): the probability that a file holds no speaker at all,
    # only a sound (music, tones, hum, noise; or nothing but the background noise), and that a
    # conversation also carries such a sound over a stretch of 2-15 s, 20 to 0 dB under its speech.
    empty: float = 0.0
    sounds: float = 0.0
    # A recording channel of the file's own (see the module docstring); it replaces the
    # background noise and telephone channel above for the files it is drawn for.
    channel: float = 0.0  # probability that a file gets one
    channel_snr_db: tuple[float, float] = (5.0, 30.0)  # its noise
    channel_telephone: float = 0.4  # probability that it is a telephone line with a codec

    def __post_init__(self):
        if not 1 <= self.min_speakers <= self.max_speakers:
            raise CorpusError(f"speakers per file: need 1 <= min ({self.min_speakers}) <= max ({self.max_speakers})")
        if not 0 < self.min_duration <= self.max_duration:
            raise CorpusError(f"duration: need 0 < min ({self.min_duration}) <= max ({self.max_duration})")
        if not all(0 <= p <= 1 for p in (self.overlap, self.telephone, self.reverb, self.distort, self.related,
                                         self.empty, self.sounds, self.channel, self.channel_telephone)):
            raise CorpusError("overlap, telephone, reverb, distort, related, empty, sounds, channel and "
                              "channel_telephone are probabilities in [0, 1]")


@dataclass(frozen=True)
class Segment:
    """One stretch of one speaker's speech in a conversation (a line of the RTTM truth)."""

    start: float  # seconds
    end: float  # seconds
    speaker: str


@dataclass
class Conversation:
    """One mixed recording and its truth: who speaks when, and the speakers heard (its likes)."""

    audio: np.ndarray  # (samples,) float32 at sample_rate
    sample_rate: int
    segments: list[Segment]  # where each speaker's speech actually is
    likes: tuple[str, ...]  # speakers heard at least min_heard seconds, sorted
    channel: str  # "clean" | "telephone"; a recording channel: "microphone" | "telephone-<codec>"
    snr_db: float | None
    sources: dict[str, np.ndarray] | None = field(default=None, repr=False)  # per speaker, before noise
    reverb: bool = False  # recorded in a room (each speaker through his own impulse response)
    distortion: str | None = None  # weighter.corpus.channels: mp3, clipping, equaliser
    noise: str | None = None  # a recording channel's noise: "coloured" | "sound" | "babble"

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.audio) / self.sample_rate

    def activity(self, frame_rate: float, speakers: tuple[str, ...] | None = None) -> np.ndarray:
        """(len(speakers), frames) bool: who speaks in each frame of 1 / frame_rate seconds."""
        speakers = speakers or self.likes
        frames = int(np.ceil(self.duration * frame_rate))
        active = np.zeros((len(speakers), frames), bool)
        row = {s: i for i, s in enumerate(speakers)}
        for seg in self.segments:
            if seg.speaker in row:
                active[row[seg.speaker], int(seg.start * frame_rate): int(np.ceil(seg.end * frame_rate))] = True
        return active


class ConversationMixer:
    """Draws conversations among the identities of one split of a bank."""

    def __init__(self, bank: UtteranceBank, split: str, config: MixerConfig = MixerConfig()):
        self.bank, self.split, self.config = bank, split, config
        self.speakers = bank.identities(split)
        if len(self.speakers) < config.max_speakers:
            raise CorpusError(
                f"split {split!r} of {bank.directory} has {len(self.speakers)} identities, "
                f"fewer than max_speakers {config.max_speakers}"
            )
        self.sample_rate = bank.sample_rate

    @cached_property
    def relatives(self) -> dict[str, list[str]]:
        """Each identity's relatives in the split: the other identities of its person and of that
        person's source sibling (invented ``X`` and ``Xs``). Found on first use: training makes a
        mixer per batch, and most never draw a relative."""
        def family(identity: str) -> str:
            entry = self.bank.identity(identity)
            person = entry["person"]
            return person.removesuffix(SIBLING_SUFFIX) if entry.get("variant") else person

        members: dict[str, list[str]] = {}
        for identity in self.speakers:
            members.setdefault(family(identity), []).append(identity)
        return {i: [k for k in members[family(i)] if k != i] for i in self.speakers}

    def sample(self, rng: np.random.Generator, keep_sources: bool = False) -> Conversation:
        """Draw one conversation.

        Parameters
        ----------
        rng : numpy.random.Generator
            The only source of randomness: the same generator state gives the same conversation.
        keep_sources : bool, default False
            Keep each speaker's signal before noise and channel (``Conversation.sources``).

        Returns
        -------
        Conversation

        Examples
        --------
        >>> import numpy as np
        >>> from weighter import ConversationMixer, MixerConfig
        >>> mixer = ConversationMixer(bank, "heldout", MixerConfig(max_speakers=3))  # doctest: +SKIP
        >>> conversation = mixer.sample(np.random.default_rng(0))  # doctest: +SKIP
        >>> conversation.likes, conversation.duration  # doctest: +SKIP
        (('espeak-en+3', 'flite-slt+0'), 23.75)
        """
        cfg, sr = self.config, self.sample_rate
        if cfg.empty and rng.random() < cfg.empty:  # no draw at 0: old corpora stay the same
            return self._empty(rng, keep_sources)
        count = int(rng.integers(cfg.min_speakers, cfg.max_speakers + 1))
        speakers = [self.speakers[i] for i in rng.choice(len(self.speakers), size=count, replace=False)]
        if count > 1 and cfg.related and rng.random() < cfg.related:  # no draw at 0: old corpora stay the same
            kin = [s for s in self.relatives[speakers[0]] if s not in speakers[2:]]
            if kin:
                speakers[1] = kin[int(rng.integers(len(kin)))]
        duration = float(rng.uniform(cfg.min_duration, cfg.max_duration))
        turns = self._turns(rng, count, duration)
        total = int(round(duration * sr))
        gains = 10 ** (rng.uniform(-cfg.level_db, cfg.level_db, size=count) / 20)
        sources = np.zeros((count, total), np.float32)  # (speakers, samples)
        segments: list[Segment] = []
        cursor = 0.0  # seconds
        for who, length in turns:
            if cursor >= duration:
                break
            turn_end = min(duration, cursor + length)
            t = cursor
            while t < turn_end - 0.3:
                clip = self._clip(rng, speakers[who])
                n = min(len(clip), int((turn_end - t) * sr))
                start = int(t * sr)
                n = min(n, total - start)
                if n <= 0:
                    break
                sources[who, start:start + n] += clip[:n] * gains[who]
                segments.append(Segment(start / sr, (start + n) / sr, speakers[who]))
                t = (start + n) / sr + float(rng.uniform(0.05, 0.3))  # breath between sentences
            gap = (-float(rng.uniform(0.2, 1.0)) if rng.random() < cfg.overlap
                   else float(rng.uniform(*cfg.pause)))
            cursor = max(cursor + 0.5, min(t, turn_end) + gap)
        segments = _merge(sorted(segments, key=lambda s: (s.speaker, s.start)), bridge=0.35)
        heard = {s: 0.0 for s in speakers}
        for seg in segments:
            heard[seg.speaker] += seg.end - seg.start
        likes = tuple(sorted(s for s in speakers if heard[s] >= cfg.min_heard))
        segments = sorted((s for s in segments if s.speaker in likes), key=lambda s: (s.start, s.speaker))

        return self.record(rng, sources, speakers, segments, likes, keep_sources)

    def record(self, rng: np.random.Generator, sources: np.ndarray, speakers: list[str], segments: list[Segment],
               likes: tuple[str, ...], keep_sources: bool = False) -> Conversation:
        """Pass speakers' clean signals through the recording chain this mixer's config draws,
        as ``sample`` does: a room, background noise or a sound, a recording channel or the
        telephone band, distortion, peak limit.

        Parameters
        ----------
        rng : numpy.random.Generator
        sources : ndarray of shape (speakers, samples), float32
            Each speaker's clean signal at ``sample_rate``, in place in the recording.
        speakers : list of str
            Their identities, one per row of ``sources``.
        segments : list of Segment
            Where each one speaks (the speech power the noise is scaled to).
        likes : tuple of str
            The speakers heard; the others' rows are left out of the mix.
        keep_sources : bool, default False

        Returns
        -------
        Conversation

        Examples
        --------
        >>> clip = bank.clips("1069")[0] / 32768  # doctest: +SKIP
        >>> seg = [Segment(0.0, len(clip) / 16000, "1069")]  # doctest: +SKIP
        >>> heard = mixer.record(np.random.default_rng(0), clip[None], ["1069"], seg, ("1069",))  # doctest: +SKIP
        """
        cfg, sr = self.config, self.sample_rate
        count, total = sources.shape
        recorded = bool(cfg.channel) and rng.random() < cfg.channel  # no draw at 0: old corpora stay the same
        reverberant = ((bool(cfg.reverb) and rng.random() < cfg.reverb)  # likewise
                       or (recorded and rng.random() < 0.5))
        if reverberant:
            from scipy.signal import fftconvolve

            responses = room_responses(rng, count, sample_rate=sr)
            sources = np.stack([fftconvolve(s, r)[:total] for s, r in zip(sources, responses)]).astype(np.float32)
        heard_rows = [i for i in range(count) if speakers[i] in likes]
        mix = sources[heard_rows].sum(0)  # (samples,): a speaker too briefly heard to be a like is not heard at all
        speech_power = _speech_power(mix, segments, sr)
        if cfg.sounds and rng.random() < cfg.sounds:  # no draw at 0: old corpora stay the same
            n = int(min(total, rng.uniform(2.0, 15.0) * sr))
            start = int(rng.integers(0, total - n + 1))
            sound, _ = nonspeech(rng, n, sr)
            mix[start:start + n] += sound * np.sqrt(speech_power * 10 ** (rng.uniform(-20, 0) / 10))
        snr, kind = None, None
        if recorded:
            snr = float(rng.uniform(*cfg.channel_snr_db))
            noise, kind = self._channel_noise(rng, total, speakers)
            mix = mix + noise * np.sqrt(speech_power / 10 ** (snr / 10) / (np.mean(noise ** 2) + 1e-20))
        elif cfg.snr_db is not None:
            snr = float(rng.uniform(*cfg.snr_db))
            mix = mix + _noise(rng, total, speech_power / 10 ** (snr / 10))
        conversation = self._finish(rng, mix, segments, likes, snr,
                                    {speakers[i]: sources[i] for i in range(count) if speakers[i] in likes}
                                    if keep_sources else None, reverberant, recorded)
        conversation.noise = kind
        return conversation

    def babble(self, rng: np.random.Generator, n: int, exclude: list[str], voices: int) -> np.ndarray:
        """``n`` samples of ``voices`` speakers of the split other than ``exclude`` talking on at
        once (each its clips one after another, each at unit RMS); (n,) float64, zeros when the
        split has no other speaker.

        Examples
        --------
        >>> noise = mixer.babble(np.random.default_rng(0), 16000 * 5, ["spk-a"], 4)  # doctest: +SKIP
        """
        others = [s for s in self.speakers if s not in exclude]
        out = np.zeros(n)
        for k in rng.choice(len(others), size=min(len(others), voices), replace=False) if others else []:
            parts, filled = [], 0
            while filled < n:
                parts.append(self._clip(rng, others[k]))
                filled += len(parts[-1])
            voice = np.concatenate(parts)[:n]
            out += voice / np.sqrt(np.mean(voice.astype(np.float64) ** 2) + 1e-12)
        return out

    def _channel_noise(self, rng: np.random.Generator, n: int, speakers: list[str]) -> tuple[np.ndarray, str]:
        """A recording channel's noise, ``n`` samples of one kind: coloured (white to brown), a
        non-speech sound (weighter.corpus.sounds), or babble of 3-6 other speakers of the split
        (coloured noise where the split has no other speaker)."""
        kind = ("coloured", "sound", "babble")[int(rng.integers(3))]
        if kind == "babble" and any(s not in speakers for s in self.speakers):
            return self.babble(rng, n, speakers, int(rng.integers(3, 7))), kind
        if kind == "sound":
            return nonspeech(rng, n, self.sample_rate)[0].astype(np.float64), kind
        return coloured_noise(rng, n, float(rng.uniform(0, 2))), "coloured"

    def _empty(self, rng: np.random.Generator, keep_sources: bool) -> Conversation:
        """A file without speakers: a non-speech sound over all or part of it (a quarter of
        files: none), under background noise at the mixer's SNR (a quarter of files: digital
        silence around the sound)."""
        cfg, sr = self.config, self.sample_rate
        total = int(round(float(rng.uniform(cfg.min_duration, cfg.max_duration)) * sr))
        mix = np.zeros(total, np.float32)
        level = 10 ** (rng.uniform(-30, -10) / 20)  # RMS re full scale
        sound = cfg.snr_db is None or rng.random() < 0.75  # without background noise, never an all-zero file
        if sound:
            n = int(total * rng.uniform(0.3, 1.0))
            start = int(rng.integers(0, total - n + 1))
            mix[start:start + n] = nonspeech(rng, n, sr)[0] * level
        snr = None
        if cfg.snr_db is not None and (not sound or rng.random() < 0.75):
            snr = float(rng.uniform(*cfg.snr_db)) if sound else None
            mix = mix + _noise(rng, total, level ** 2 / 10 ** ((snr or 0.0) / 10))
        return self._finish(rng, mix, [], (), snr, {} if keep_sources else None, False)

    def _finish(self, rng, mix, segments, likes, snr, sources, reverberant, recorded=False) -> Conversation:
        """The recording chain after the room: a recording channel's microphone, telephone codec
        and level, or the telephone channel; distortion; peak limit."""
        cfg, sr = self.config, self.sample_rate
        channel = "clean"
        if recorded:
            mix, channel = microphone(mix, sr, rng), "microphone"
            if rng.random() < cfg.channel_telephone:
                codec = TELEPHONE_CODECS[int(rng.integers(len(TELEPHONE_CODECS)))]
                mix, channel = telephone(mix, sr, codec), f"telephone-{codec}"
            mix = mix * 10 ** (rng.uniform(-20, 0) / 20)  # the recording level
        elif rng.random() < cfg.telephone:
            mix, channel = _telephone(mix, sr), "telephone"
        distortion = None
        if cfg.distort and rng.random() < cfg.distort:  # no draw at 0: old corpora stay the same
            mix, distortion = distort(mix, sr, rng)
        peak = float(np.abs(mix).max(initial=0.0))
        scale = 0.9 / peak if peak > 0.9 else 1.0  # never clip; all speakers scale together
        mix = (mix * scale).astype(np.float32)
        kept = {s: x * scale for s, x in sources.items()} if sources is not None else None
        return Conversation(mix, sr, segments, likes, channel, snr, kept, reverberant, distortion)

    def _turns(self, rng: np.random.Generator, count: int, duration: float) -> list[tuple[int, float]]:
        """(speaker index, seconds) per turn; retried until every speaker gets the floor."""
        cfg = self.config
        ticks = int(np.ceil(duration * 1.5 / cfg.tick)) + 1  # spare: pauses and short clips eat time
        step = cfg.walk_step * 2 / max(count, 2)
        order = rng.permutation(count)  # which speaker owns which bin of the walk
        best: list[tuple[int, float]] = []
        for _ in range(50):
            r = np.empty(ticks)
            r[0] = rng.uniform(0, 1)
            for t in range(1, ticks):
                x = r[t - 1] + rng.normal(0, step)
                r[t] = -x if x < 0 else 2 - x if x > 1 else x  # reflect: a bounded walk
            owner = order[np.minimum((r * count).astype(int), count - 1)]
            turns = _runs(owner, cfg.tick, cfg.min_turn)
            heard_early = {w for w, _ in _prefix(turns, duration)}
            if len(heard_early) == count:
                return turns
            if len(heard_early) > len({w for w, _ in _prefix(best, duration)}):
                best = turns
        return best

    def _clip(self, rng: np.random.Generator, speaker: str) -> np.ndarray:
        clips = self.bank.clips(speaker)
        return clips[int(rng.integers(len(clips)))].astype(np.float32) / 32768.0


def write_rttm(handle, file_id: str, segments: list[Segment]) -> None:
    """Write segments as RTTM ``SPEAKER`` lines (times in seconds, 3 decimals) to a text handle."""
    for seg in segments:
        handle.write(f"SPEAKER {file_id} 1 {seg.start:.3f} {seg.end - seg.start:.3f} <NA> <NA> {seg.speaker} <NA> <NA>\n")


def _runs(owner: np.ndarray, tick: float, min_turn: float) -> list[tuple[int, float]]:
    turns: list[list] = []
    for who in owner:
        if turns and turns[-1][0] == who:
            turns[-1][1] += tick
        else:
            turns.append([int(who), tick])
    merged: list[list] = []
    for who, length in turns:
        if merged and (length < min_turn or merged[-1][0] == who):
            merged[-1][1] += length
        else:
            merged.append([who, length])
    return [(w, l) for w, l in merged]


def _prefix(turns, duration):
    total = 0.0
    for w, l in turns:
        if total >= duration - 1.0:
            break
        total += l
        yield w, l


def _merge(segments: list[Segment], bridge: float) -> list[Segment]:
    """Join one speaker's segments separated by less than ``bridge`` seconds (RTTM convention)."""
    out: list[Segment] = []
    for seg in segments:
        if out and out[-1].speaker == seg.speaker and seg.start - out[-1].end < bridge:
            out[-1] = Segment(out[-1].start, max(out[-1].end, seg.end), seg.speaker)
        else:
            out.append(seg)
    return out


def _speech_power(mix: np.ndarray, segments: list[Segment], sr: int) -> float:
    mask = np.zeros(len(mix), bool)
    for seg in segments:
        mask[int(seg.start * sr):int(seg.end * sr)] = True
    voiced = mix[mask] if mask.any() else mix
    return float(np.mean(voiced.astype(np.float64) ** 2)) + 1e-12


def _noise(rng: np.random.Generator, n: int, power: float) -> np.ndarray:
    """Background noise of the given mean power: white, pink or brown (sounds.coloured_noise)."""
    beta = float(rng.choice([0.0, 1.0, 2.0]))
    noise = coloured_noise(rng, n, beta)
    return (noise * np.sqrt(power / (np.mean(noise ** 2) + 1e-20))).astype(np.float32)


def _telephone(mix: np.ndarray, sr: int) -> np.ndarray:
    """Narrowband call: 300-3400 Hz band, 8 kHz sampling, 8-bit mu-law, back to ``sr``."""
    from scipy.signal import butter, resample_poly, sosfiltfilt

    sos = butter(4, [300, 3400], btype="bandpass", fs=sr, output="sos")
    band = sosfiltfilt(sos, mix)
    narrow = resample_poly(band, 8000, sr)
    peak = max(float(np.abs(narrow).max(initial=0.0)), 1e-9)
    x = narrow / peak
    mu = 255.0
    coded = np.round((np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu) + 1) / 2 * mu)
    y = (2 * coded / mu - 1)
    decoded = np.sign(y) * ((1 + mu) ** np.abs(y) - 1) / mu * peak
    return resample_poly(decoded, sr, 8000)[: len(mix)].astype(np.float32)
