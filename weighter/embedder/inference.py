"""``Embedder.load().embed(paths) -> list[EmbeddingSet]``: batching, windows, device inside.

Files are read in windows of ``window_seconds`` (60 s by default) straight from the decoder, so
memory stays bounded however long a file is. Short files are batched together, sorted by
length so little padding is computed. A file longer than one window gets one slot set per
window; active slots of different windows that embed alike (cosine >= ``merge_cosine``) are
merged into one slot of the file, whose weightings timeline runs across the whole file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from weighter.audio import SAMPLE_RATE, AudioSource, audio_info, load_audio, stream_audio
from weighter.audio.io import SILENCE_PEAK
from weighter.embedder.checkpoint import ModelMetadata, load_model
from weighter.embedder.device import pick_device, pick_precision
from weighter.embedder.slots import output_row, row_slots
from weighter.embedder.speech import SpeechDetector, speech_mask, speech_share, speech_timeline
from weighter.embedding_set import EmbeddingSet
from weighter.errors import AudioError, WeighterError
from weighter.evaluation import distinct_active
from weighter.scoring import LEGACY_TOP_SHARE, Cohort

log = logging.getLogger(__name__)
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "default.pt"
TIMELINE_RATE = 10.0  # Hz of the stored weightings (frames are 100 Hz: mean over 10)


class Embedder:
    """A trained Weighter model ready to embed audio files into embedding sets.

    Make one with ``Embedder.load`` (a model file, or the model shipped with the package);
    the constructor takes a model already loaded.

    Parameters
    ----------
    model : WeighterModel
        The network (moved to ``device`` and set to evaluation mode).
    metadata : ModelMetadata
        The model file's metadata (``model_id``, calibrated ``threshold`` and ``merge_cosine``,
        score cohort, ...), as ``weighter.embedder.checkpoint.load_model`` returns it.
    device : torch.device
    window_seconds : float, default 60.0
        Files are read in windows of this many seconds, so memory stays bounded.
    batch_seconds : float, default 240.0
        Seconds of audio run through the model at once.
    merge_cosine : float, default 0.7
        Active slots of different windows of one long file this alike become one slot.
    speech_gate : float or None, default None
        In (0, 1]: a slot stays active only if this share of its weighting falls on speech, by
        a voice-activity detector (needs the ``silero-vad`` package); None: no gate.
    precision : {"auto", "float32", "bfloat16"}, default "auto"
        The number format of the speaker encoder's windows (``pick_precision``): "auto" runs
        them in bfloat16 on a CPU that computes it natively (about 1.6x the embedding speed),
        else in float32.

    Attributes
    ----------
    metadata : ModelMetadata
        The model file's metadata.
    model_id : str
        Identifies the model; a store holds one model's embeddings.
    threshold : float
        Confidence at or above which a slot is active.
    score_cohort : Cohort or None
        The model's score cohort (``weighter.scoring``).
    precision : str
        "float32" or "bfloat16": what ``precision`` resolved to on this device.

    Examples
    --------
    >>> from weighter import Embedder
    >>> embedder = Embedder.load()  # the shipped model, on CUDA when available  # doctest: +SKIP
    >>> sets = embedder.embed(["calls/a.flac", "calls/b.flac"])  # doctest: +SKIP
    >>> [int(s.active.sum()) for s in sets]  # speakers heard per file  # doctest: +SKIP
    [2, 3]
    """

    def __init__(self, model, metadata: ModelMetadata, device: torch.device, window_seconds: float = 60.0,
                 batch_seconds: float = 240.0, merge_cosine: float = 0.7, speech_gate: float | None = None,
                 precision: str = "auto"):
        if speech_gate is not None and not 0 < speech_gate <= 1:
            raise WeighterError(f"speech gate {speech_gate}: a share of a slot's weighting, in (0, 1]")
        self.speech_gate = speech_gate  # a slot is active only if this share of its weighting is on speech
        self.speech = SpeechDetector() if speech_gate is not None else None
        self.model = model.to(device).eval()
        self.precision = pick_precision(precision, device)
        model.set_precision(self.precision)
        self.metadata = metadata
        self.device = device
        self.window_seconds = window_seconds
        self.batch_seconds = batch_seconds
        self.merge_cosine = merge_cosine
        self.threshold = float(metadata.threshold)
        self.distinct_cosine = metadata.merge_cosine  # two active slots this alike are one like
        self.model_id = metadata.model_id
        cohort = metadata.score_cohort  # (C, E) slots of training voices: weighter.scoring
        share = LEGACY_TOP_SHARE if metadata.score_top_share is None else metadata.score_top_share
        self.score_cohort = None if cohort is None else Cohort(cohort.float().numpy(), float(share))

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "auto", **kw) -> "Embedder":
        """Load a model file, or the default model shipped inside the package.

        Parameters
        ----------
        path : str, Path or None
            A model file (``weighter train`` writes one); None: ``DEFAULT_MODEL``.
        device : str, default "auto"
            ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        **kw
            ``window_seconds``, ``batch_seconds``, ``merge_cosine``, ``speech_gate`` and
            ``precision``, as for the class.

        Returns
        -------
        Embedder

        Raises
        ------
        WeighterError
            A missing, corrupt or incompatible model file, or no CUDA device for ``"cuda"``.

        Examples
        --------
        >>> embedder = Embedder.load("model.pt", device="cpu", speech_gate=0.2)  # doctest: +SKIP
        """
        path = Path(path) if path else DEFAULT_MODEL
        if not path.exists() and path == DEFAULT_MODEL:
            raise WeighterError(f"{path}: the bundled default model is missing (reinstall weighter, or pass a model "
                                "file's path)", cli_hint="give a model file with --model")
        model, metadata = load_model(path)
        return cls(model, metadata, pick_device(device), **kw)

    def embed(self, inputs: Iterable[str | Path | AudioSource], progress: bool = False,
              errors: list | None = None) -> list[EmbeddingSet]:
        """Embed audio files: one embedding set per file, in input order.

        Short files are batched together by length; files longer than ``window_seconds`` are
        streamed window by window and their slots merged across windows.

        Parameters
        ----------
        inputs : iterable of str, Path or AudioSource
            Audio files (``weighter.audio.discover`` expands directories and manifests).
        progress : bool, default False
            Show a progress bar (seconds of audio).
        errors : list or None
            Where unusable files go (as ``AudioError``) while the rest go on; None: the first
            unusable file raises.

        Returns
        -------
        list of EmbeddingSet
            One per usable file, in input order; weightings at 10 Hz.

        Raises
        ------
        AudioError
            An unusable file (unreadable, empty, silent...), when ``errors`` is None.

        Examples
        --------
        >>> errors = []
        >>> sets = Embedder.load().embed(["a.flac", "broken.wav"], errors=errors)  # doctest: +SKIP
        >>> len(sets), str(errors[0])  # doctest: +SKIP
        (1, 'broken.wav: not readable as audio (Format not recognised.)')
        """
        paths = [Path(i.path if isinstance(i, AudioSource) else i) for i in inputs]
        durations = {}
        for p in paths:
            try:
                durations[p] = audio_info(p).duration
            except AudioError as error:
                if errors is None:
                    raise
                errors.append(error)
        order = sorted(durations, key=lambda p: durations[p])  # batching by length
        results: dict[Path, EmbeddingSet] = {}
        bar = tqdm(total=sum(durations.values()), desc="embedding", unit="s", disable=not progress,
                   mininterval=1.0, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]")
        pending: list[tuple[Path, np.ndarray]] = []  # short files waiting for a batch
        short = iter([p for p in order if durations[p] <= self.window_seconds])
        ahead: dict[Path, Future] = {}  # short files decoding in the background, in order

        def flush():
            if pending:
                for (p, _), out in zip(pending, self._run([a for _, a in pending])):
                    results[p] = self._assemble(p, [out], durations[p])
                pending.clear()

        # short files decode one batch ahead in a second thread while the model runs (libsndfile
        # lets go of the GIL): decoding in series took a tenth of the embedding time
        with ThreadPoolExecutor(1, thread_name_prefix="weighter-decode") as decoder:
            for p in order:
                try:
                    if durations[p] <= self.window_seconds:  # one window: batched with its neighbours in length
                        for q in short:
                            ahead[q] = decoder.submit(load_audio, q, SAMPLE_RATE, 0.5)
                            if sum(durations[f] for f in ahead) >= 2 * self.batch_seconds:
                                break
                        pending.append((p, ahead.pop(p).result()))
                        if sum(len(a) for _, a in pending) >= self.batch_seconds * SAMPLE_RATE:
                            flush()
                    else:  # a long file: streamed window by window, never whole in memory
                        results[p] = self._long_file(p, durations[p])
                    bar.update(durations[p])
                except AudioError as error:
                    if errors is None:
                        raise
                    errors.append(error)
        flush()
        bar.close()
        return [results[p] for p in paths if p in results]

    def embed_audio(self, audio: np.ndarray, name: str = "<array>") -> EmbeddingSet:
        """Embed one signal already in memory.

        Parameters
        ----------
        audio : ndarray of shape (samples,), float32
            Mono, 16 kHz, full scale 1.0.
        name : str, default "<array>"
            The ``path`` the set carries.

        Returns
        -------
        EmbeddingSet

        Examples
        --------
        >>> import numpy as np
        >>> s = Embedder.load().embed_audio(np.zeros(16000, np.float32) + 0.01, name="tone")  # doctest: +SKIP
        >>> s.weightings.shape[1]  # 1 s at 10 Hz  # doctest: +SKIP
        10
        """
        step = int(self.window_seconds * SAMPLE_RATE)
        parts = [self._run([audio[i:i + step]])[0] for i in range(0, max(1, len(audio)), step)]
        return self._assemble(Path(name), parts, len(audio) / SAMPLE_RATE)

    def embed_clip(self, path: str | Path, span: tuple[float, float] | None = None) -> EmbeddingSet:
        """Embed one file, or the part of it between ``span``'s start and end (seconds).

        Parameters
        ----------
        path : str or Path
            An audio file.
        span : (float, float) or None
            Start and end in seconds, inside the file; None: the whole file.

        Returns
        -------
        EmbeddingSet
            Its ``path`` is ``"FILE"`` or ``"FILE@START-END"``; weightings count from the
            span's start.

        Raises
        ------
        AudioError
            An unusable file, a span outside it or shorter than 0.5 s, or silence in the span.

        Examples
        --------
        >>> s = Embedder.load().embed_clip("call.flac", (12.5, 30.0))  # doctest: +SKIP
        >>> s.path, round(s.duration, 1)  # doctest: +SKIP
        ('call.flac@12.5-30', 17.5)
        """
        if span is None:
            return self.embed([path])[0]
        start, end = span
        duration = audio_info(path).duration
        if not 0 <= start < end <= duration + 1e-3:
            raise AudioError(path, f"span {start:g}-{end:g} s is outside the file (0-{duration:.2f} s)")
        if end - start < 0.5:
            raise AudioError(path, f"span {start:g}-{end:g} s is shorter than 0.5 s")
        audio = load_audio(path)[int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)]
        if float(np.abs(audio).max(initial=0.0)) < SILENCE_PEAK:
            raise AudioError(path, f"span {start:g}-{end:g} s is all silent")
        return self.embed_audio(audio, name=f"{path}@{start:g}-{end:g}")

    def _long_file(self, path: Path, duration: float) -> EmbeddingSet:
        parts, batch, peak = [], [], 0.0  # windows run batch_seconds at a time, as short files do
        for chunk in stream_audio(path, SAMPLE_RATE, self.window_seconds):
            peak = max(peak, float(np.abs(chunk).max(initial=0.0)))
            batch.append(chunk)
            if sum(len(c) for c in batch) >= self.batch_seconds * SAMPLE_RATE:
                parts += self._run(batch)
                batch = []
        parts += self._run(batch) if batch else []
        if peak < SILENCE_PEAK:
            raise AudioError(path, f"all silent (peak {peak:.1e} < {SILENCE_PEAK:.0e} full scale)")
        return self._assemble(path, parts, duration)

    @torch.no_grad()
    def _run(self, audios: list[np.ndarray]) -> list[tuple]:
        """Padded batch through the model -> per window (embeddings (N, E), confidence (N,), x (N, T),
        speech probabilities at speech.FRAME_RATE or None without a speech gate)."""
        lengths = torch.tensor([max(len(a), 1024) for a in audios])
        wave = torch.zeros(len(audios), int(lengths.max()))
        for b, a in enumerate(audios):
            wave[b, :len(a)] = torch.from_numpy(a)
        out = self.model(wave.to(self.device), lengths.to(self.device))
        frames = out["mask"].sum(1).tolist()
        hop = self.model.config.hop
        config = self.model.config
        speech = self.speech.probabilities(audios) if self.speech else [None] * len(audios)
        parts = []
        for b, a in enumerate(audios):  # a slot holding two voices becomes two (slots.py)
            emb, conf, x = row_slots(output_row(out, b, frames[b]), config.split_cosine, config.split_min_share)
            # the frontend yields a few frames fewer than len / hop (its window overhangs the end);
            # padding each window back to len / hop keeps the windows of a long file aligned in time
            parts.append((emb, conf, np.pad(x, ((0, 0), (0, max(0, len(a) // hop - frames[b])))), speech[b]))
        return parts

    @staticmethod
    def _on_speech(weightings: np.ndarray, rate: float, speech: np.ndarray | None) -> tuple:
        """Each slot's share of its weighting (N, T at ``rate`` Hz) on speech (N,), and the
        detector's probabilities on that timeline (T,); (None, None) without a gate."""
        if speech is None:
            return None, None
        timeline = speech_timeline(speech, rate, weightings.shape[1])
        return speech_share(weightings, timeline), timeline

    def _gated(self, conf: np.ndarray, share: np.ndarray | None) -> np.ndarray:
        """Confidences with the slots that weigh too little speech at 0 (unchanged without a gate),
        so that the duplicate merge never keeps a sound's slot in place of a speaker's."""
        return conf if share is None else np.where(share >= self.speech_gate, conf, 0.0)

    def _assemble(self, path: Path, parts: list, duration: float) -> EmbeddingSet:
        pool = int(round(self.model.frame_rate / TIMELINE_RATE))
        frame_rate = self.model.frame_rate
        if len(parts) == 1:
            emb, conf, x, speech = parts[0]
            weightings = _pool(x, pool, duration)
            share, on_speech = self._on_speech(weightings, TIMELINE_RATE, speech)
            active = np.zeros(len(conf), bool)
            active[distinct_active(self._gated(conf, share), emb, self.threshold, self.distinct_cosine)] = True
            return self._with_speech(EmbeddingSet(str(path), emb, conf, active, weightings, TIMELINE_RATE, duration,
                                                  self.model_id), share, on_speech)
        slots: list[dict] = []  # merged across windows
        for w, (emb, conf, x, speech) in enumerate(parts):  # each window's slots as for one window
            share, _ = self._on_speech(x, frame_rate, speech)
            distinct = distinct_active(self._gated(conf, share), emb, self.threshold, self.distinct_cosine)
            for n in distinct[np.argsort(-conf[distinct], kind="stable")]:
                free = [s for s in slots if w not in s["rows"]]
                sims = [float(emb[n] @ (s["sum"] / np.linalg.norm(s["sum"]))) for s in free]
                if sims and max(sims) >= self.merge_cosine:
                    s = free[int(np.argmax(sims))]
                    s["sum"] = s["sum"] + conf[n] * emb[n]
                    s["conf"] = max(s["conf"], float(conf[n]))
                    s["rows"][w] = n
                else:
                    slots.append({"sum": conf[n] * emb[n], "conf": float(conf[n]), "rows": {w: n}})
        if not slots:  # nothing confident anywhere: keep the most confident slot of the file
            w, n = max(((w, int(np.argmax(p[1]))) for w, p in enumerate(parts)), key=lambda t: parts[t[0]][1][t[1]])
            slots = [{"sum": parts[w][0][n], "conf": float(parts[w][1][n]), "rows": {w: n}}]
        timelines = []
        for s in slots:
            rows = [parts[w][2][s["rows"][w]] if w in s["rows"] else np.zeros(parts[w][2].shape[1], np.float32)
                    for w in range(len(parts))]
            timelines.append(np.concatenate(rows))
        emb = np.stack([s["sum"] / np.linalg.norm(s["sum"]) for s in slots]).astype(np.float32)
        conf = np.array([s["conf"] for s in slots], np.float32)
        weightings = _pool(np.stack(timelines), pool, duration)
        speech = None if self.speech is None else np.concatenate([p[3] for p in parts])
        share, on_speech = self._on_speech(weightings, TIMELINE_RATE, speech)  # the merged slots, on the whole file
        return self._with_speech(EmbeddingSet(str(path), emb, conf, conf >= self.threshold, weightings, TIMELINE_RATE,
                                              duration, self.model_id), share, on_speech)

    def _with_speech(self, s: EmbeddingSet, share: np.ndarray | None, on_speech: np.ndarray | None) -> EmbeddingSet:
        """With a speech gate: the file's slots with their speech shares, only those at the gate
        or above left active, and every weighting zeroed where the detector (``on_speech``, its
        probabilities on the timeline) hears no speech within ``speech.PAD_SECONDS``, so that a
        slot's spans keep to speech (a slot that holds a speaker and the music before him no
        longer spans the music)."""
        if share is not None:
            s.speech_share, s.speech_gate = share, self.speech_gate
            s.active = s.active & (share >= self.speech_gate)
            s.weightings = s.weightings * speech_mask(on_speech, TIMELINE_RATE)[None]
        return s


def _pool(x: np.ndarray, factor: int, duration: float) -> np.ndarray:
    """(N, T) at the frame rate -> (N, ceil(duration * TIMELINE_RATE)) by averaging."""
    steps = int(np.ceil(duration * TIMELINE_RATE))
    t = x.shape[1]
    padded = np.zeros((x.shape[0], steps * factor), np.float32)
    padded[:, :min(t, steps * factor)] = x[:, : steps * factor]
    return padded.reshape(x.shape[0], steps, factor).mean(2)
