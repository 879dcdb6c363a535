"""The utterance bank: single-speaker clips per identity, made once by TTS and cached.

Layout of a bank directory::

    bank.json                      identities (voice, pitch, person, split), clips, checks
    clips/<identity>/<nnn>.flac    16 kHz mono, leading and trailing silence trimmed

Building is the only slow step of the corpus (TTS + sox, run in parallel processes); the
conversation mixer then draws unlimited conversations from the bank with numpy alone. A build
goes to ``DIR.partial`` and is renamed when complete, so a killed build never leaves a bank
that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from weighter.audio.io import SAMPLE_RATE
from weighter.corpus.text import sentence
from weighter.corpus.voices import (ENGINES, PITCHES, SPLITS, BaseVoice, Identity, available_voices, espeak_data,
                                    invent_voices, speak)
from weighter.errors import CorpusError

BANK_FORMAT = 1
DEFAULT_CLIPS = 12
MIN_CLIPS_TO_JUDGE = 6  # clips per identity below which the distinctness check rejects nothing
CONFUSED = 0.5  # share of one identity's clips landing on another that makes the pair "sound alike"
# An invented identity is dropped already when this share of its clips land on a validation or
# held-out identity, or of theirs on it: invented speakers must not be near-copies of the voices
# that the figures are measured on.
INVENTED_CONFUSED = 0.25
# libsndfile's Opus compression level for a compact bank: about 13 kbps of audio on these clips
# (15 with the Ogg pages of 5 s files) and still wideband (energy above 4 kHz kept; at 0.99 it
# drops to 10 kbps and narrowband): a ninth of FLAC's size.
COMPACT_LEVEL = 0.98
_SPLIT_CYCLE = ("train", "train", "train", "validation", "heldout")  # order when voices are capped


@dataclass(frozen=True)
class BankSpec:
    """Everything that decides a bank's content; equal specs give byte-identical banks."""

    engines: tuple[str, ...] = ENGINES
    clips_per_identity: int = DEFAULT_CLIPS
    max_voices: int | None = None  # cap on base voices (each gives len(PITCHES) identities)
    seed: int = 0
    invented_voices: int = 0  # invented espeak-ng speakers added to the train split (voices.invent_voices)
    source_siblings: int = 0  # of those, how many get a sibling differing only in voice source
    # A probe bank: only this many invented validation speakers, each with a source sibling
    # (voices.invent_voices(probe=True)): fresh voices to judge models on, no other voices.
    probe_voices: int = 0

    def key(self) -> str:
        """12 hex digits naming the bank these settings build (its cache directory)."""
        fields = [BANK_FORMAT, sorted(self.engines), self.clips_per_identity, self.max_voices, self.seed]
        if self.invented_voices:  # banks without invented voices keep the key (and cache) they had
            fields.append(self.invented_voices)
        if self.source_siblings:
            fields.append({"source_siblings": self.source_siblings})
        if self.probe_voices:
            fields.append({"probe_voices": self.probe_voices})
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:12]


def default_bank_dir(spec: BankSpec) -> Path:
    """Where a bank is cached by default: ``$WEIGHTER_CACHE`` (or ``~/.cache/weighter``)/bank-<key>."""
    root = Path(os.environ.get("WEIGHTER_CACHE", Path.home() / ".cache" / "weighter"))
    return root / f"bank-{spec.key()}"


class UtteranceBank:
    """A built bank on disk; clips are decoded on first use and kept in memory as int16."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        meta_path = self.directory / "bank.json"
        if not meta_path.exists():
            raise CorpusError(f"{self.directory}: not an utterance bank (no bank.json; build one with `weighter bank`)")
        try:
            self.meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as error:
            raise CorpusError(f"{meta_path}: corrupt bank index ({error})") from None
        if self.meta.get("format") != BANK_FORMAT:
            raise CorpusError(f"{meta_path}: bank format {self.meta.get('format')} is not {BANK_FORMAT}; rebuild it")
        self.sample_rate = int(self.meta["sample_rate"])
        self._by_id = {entry["id"]: entry for entry in self.meta["identities"]}
        self._audio: dict[str, list[np.ndarray]] = {}

    def identities(self, split: str | None = None, include_rejected: bool = False) -> list[str]:
        """Identity ids of a split (all splits when None), without those the check rejected."""
        if split is not None and split not in SPLITS:
            raise CorpusError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
        rejected = set() if include_rejected else set(self.meta.get("check", {}).get("rejected", []))
        return [i for i, e in self._by_id.items() if (split is None or e["split"] == split) and i not in rejected]

    def identity(self, identity_id: str) -> dict:
        """An identity's entry in the bank index: its split, voice, pitch and clips."""
        return self._by_id[identity_id]

    def clips(self, identity_id: str) -> list[np.ndarray]:
        """The identity's clips, int16 at ``sample_rate`` (scale by 1/32768 for float)."""
        if identity_id not in self._audio:
            entry = self._by_id[identity_id]
            clips = []
            for clip in entry["clips"]:
                path = self.directory / clip["file"]
                try:
                    audio, rate = sf.read(str(path), dtype="int16")
                except (sf.LibsndfileError, RuntimeError) as error:
                    raise CorpusError(f"{path}: unreadable bank clip ({error})") from None
                if rate != self.sample_rate or audio.ndim != 1 or len(audio) == 0:
                    raise CorpusError(f"{path}: bank clip is not {self.sample_rate} Hz mono audio")
                clips.append(audio)
            self._audio[identity_id] = clips
        return self._audio[identity_id]

    def preload(self, split: str | None = None, jobs: int = 1, progress: bool = False) -> None:
        """Decode every clip of ``split`` (all splits when None) now, ``jobs`` at a time (libsndfile
        decodes outside the GIL). Batch-making processes forked afterwards share these clips
        instead of each decoding its own copy as it goes."""
        todo = [i for i in self.identities(split) if i not in self._audio]
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for _ in tqdm(pool.map(self.clips, todo), total=len(todo), disable=not progress, desc="decoding bank",
                          unit="identity", mininterval=1.0):
                pass

    def split_table(self) -> dict[str, list[str]]:
        """split -> sorted persons; the documented identity split."""
        table: dict[str, set[str]] = {s: set() for s in SPLITS}
        for entry in self._by_id.values():
            table[entry["split"]].add(entry["person"])
        return {s: sorted(p) for s, p in table.items()}

    def summary(self) -> dict:
        """Counts (identities, per split, clips, seconds of audio) and the distinctness check."""
        seconds = sum(c["duration"] for e in self._by_id.values() for c in e["clips"])
        per_split = {s: len(self.identities(s)) for s in SPLITS}  # usable identities
        return {"directory": str(self.directory), "identities": len(self._by_id), "per_split": per_split,
                "clips": sum(len(e["clips"]) for e in self._by_id.values()), "audio_seconds": round(seconds, 1),
                "check": self.meta.get("check", {}), "duplicates_dropped": self.meta.get("duplicates", {})}


def open_or_build_bank(spec: BankSpec, directory: str | Path | None = None, jobs: int = 2,
                       progress: bool = True) -> UtteranceBank:
    """Open the bank of ``spec``, building it first when it is not there.

    Parameters
    ----------
    spec : BankSpec
        The bank's settings (TTS engines, voices, clips per identity, seed, ...).
    directory : str, Path or None
        Where the bank is; None: ``default_bank_dir(spec)``, a cache shared by runs.
    jobs : int, default 2
        Parallel TTS processes while building.
    progress : bool, default True
        Show a progress bar while building.

    Returns
    -------
    UtteranceBank

    Examples
    --------
    >>> from weighter import BankSpec, open_or_build_bank
    >>> bank = open_or_build_bank(BankSpec(max_voices=5, clips_per_identity=3))  # doctest: +SKIP
    >>> len(bank.identities("heldout"))  # doctest: +SKIP
    3
    """
    directory = Path(directory) if directory else default_bank_dir(spec)
    if (directory / "bank.json").exists():
        return UtteranceBank(directory)
    return build_bank(spec, directory, jobs=jobs, progress=progress)


def compact_bank(bank: UtteranceBank, directory: str | Path, splits: tuple[str, ...] = ("train", "validation"),
                 clips_per_identity: int | None = None, jobs: int = 2, progress: bool = True) -> UtteranceBank:
    """A copy of ``bank`` small enough to carry to a machine that cannot build one (no TTS there,
    a size limit on what travels): the identities of ``splits``, at most ``clips_per_identity``
    clips each (the first ones), as Ogg Opus at COMPACT_LEVEL. Conversations mixed from it are
    coded speech: a model trained on it is judged on the full bank's FLAC clips."""
    directory = Path(directory)
    if (directory / "bank.json").exists():
        raise CorpusError(f"{directory}: a bank already exists there (delete it to replace it)")
    if clips_per_identity is not None and clips_per_identity < 1:
        raise CorpusError("clips per identity must be at least 1")
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise CorpusError(f"unknown split {', '.join(sorted(unknown))} (known: {', '.join(SPLITS)})")
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    entries = [dict(e, clips=e["clips"][:clips_per_identity]) for e in bank.meta["identities"] if e["split"] in splits]
    jobs_list = [(e["id"], n) for e in entries for n in range(len(e["clips"]))]

    def code(job) -> dict:
        identity_id, n = job
        audio = bank.clips(identity_id)[n]
        name = f"clips/{identity_id}/{n:03d}.ogg"
        (partial / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(partial / name), audio, bank.sample_rate, format="OGG", subtype="OPUS",
                 compression_level=COMPACT_LEVEL)
        return {"file": name, "duration": round(sf.info(str(partial / name)).duration, 4)}

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        coded = list(tqdm(pool.map(code, jobs_list), total=len(jobs_list), disable=not progress,
                          desc="compact bank", unit="clip", mininterval=1.0))
    by_id: dict[str, list[dict]] = {}
    for (identity_id, _), clip in zip(jobs_list, coded):
        by_id.setdefault(identity_id, []).append(clip)
    meta = dict(bank.meta, identities=[dict(e, clips=by_id[e["id"]]) for e in entries],
                compact={"source": str(bank.directory), "codec": "opus", "compression_level": COMPACT_LEVEL,
                         "splits": list(splits), "clips_per_identity": clips_per_identity})
    (partial / "bank.json").write_text(json.dumps(meta, indent=1))
    if directory.exists():
        shutil.rmtree(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(directory)
    return UtteranceBank(directory)


def build_bank(spec: BankSpec, directory: str | Path, jobs: int = 2, progress: bool = True) -> UtteranceBank:
    """Build a new bank in ``directory``: speak every identity's clips with the TTS engines,
    check that identities are distinct, and write the bank index last.

    Parameters
    ----------
    spec : BankSpec
    directory : str or Path
        Must not hold a bank yet.
    jobs : int, default 2
        Parallel TTS processes.
    progress : bool, default True

    Returns
    -------
    UtteranceBank

    Raises
    ------
    CorpusError
        A bank already there, a missing TTS engine, or impossible settings.
    """
    directory = Path(directory)
    if (directory / "bank.json").exists():
        raise CorpusError(f"{directory}: a bank already exists there (delete it to rebuild)")
    if spec.clips_per_identity < 1:
        raise CorpusError("clips per identity must be at least 1")
    if spec.probe_voices:
        if spec.invented_voices or spec.source_siblings or "espeak" not in spec.engines:
            raise CorpusError("a probe bank holds only its own invented espeak-ng voices: it needs the espeak "
                              "engine and no invented voices or source siblings")
        voices, duplicates = invent_voices(spec.probe_voices, spec.seed, spec.probe_voices, probe=True), {}
    else:
        voices, duplicates = available_voices(tuple(spec.engines))
        voices = _select_voices(voices, spec.max_voices)
    if not voices:
        raise CorpusError(f"no voices available for engines {', '.join(spec.engines)}")
    if spec.invented_voices or spec.source_siblings:  # siblings without invented voices: invent_voices refuses
        if "espeak" not in spec.engines:
            raise CorpusError("invented voices are espeak-ng variants: the bank needs the espeak engine")
        voices += invent_voices(spec.invented_voices, spec.seed, spec.source_siblings)
    identities = [Identity(v, p) for v in voices for p in PITCHES]

    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    espeak_path = espeak_data(voices, partial / ".espeak")  # removed before the bank is renamed into place
    jobs_list = [(ident, n) for ident in identities for n in range(spec.clips_per_identity)]
    durations: dict[tuple[str, int], float] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:  # the work runs in TTS/sox processes
        work = pool.map(lambda job: _make_clip(partial, spec.seed, *job, espeak_path=espeak_path), jobs_list)
        for (ident, n), seconds in tqdm(zip(jobs_list, work), total=len(jobs_list), disable=not progress,
                                        desc="utterance bank", unit="clip", mininterval=1.0):
            durations[(ident.id, n)] = seconds

    entries = []
    for ident in identities:
        entries.append({
            "id": ident.id, "engine": ident.voice.engine, "voice": ident.voice.name,
            "person": ident.voice.person, "pitch": ident.pitch, "split": ident.split,
            **({"variant": ident.voice.variant} if ident.voice.variant else {}),
            "clips": [{"file": _clip_name(ident.id, n), "duration": round(durations[(ident.id, n)], 4)}
                      for n in range(spec.clips_per_identity)],
        })
    meta = {"format": BANK_FORMAT, "sample_rate": SAMPLE_RATE, "spec": {
        "engines": list(spec.engines), "clips_per_identity": spec.clips_per_identity,
        "max_voices": spec.max_voices, "seed": spec.seed,
        **({"invented_voices": spec.invented_voices} if spec.invented_voices else {}),
        **({"source_siblings": spec.source_siblings} if spec.source_siblings else {}),
        **({"probe_voices": spec.probe_voices} if spec.probe_voices else {})}, "pitches": list(PITCHES),
        "duplicates": duplicates, "identities": entries}
    (partial / "bank.json").write_text(json.dumps(meta, indent=1))
    meta["check"] = check_identities(UtteranceBank(partial))
    (partial / "bank.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(partial / ".espeak", ignore_errors=True)
    if directory.exists():
        shutil.rmtree(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(directory)
    return UtteranceBank(directory)


def check_identities(bank: UtteranceBank) -> dict:
    """Are the identities acoustically distinct? Leave-one-out nearest-centroid test.

    Each clip becomes a vector of log-mel statistics (mean and spread of 40 bands); each clip is
    assigned to the nearest identity centroid computed without it. A pair of identities is
    *confused* when more than half of one's clips land on the other; of each confused pair the
    one with the larger id is *rejected* (kept on disk, never drawn), so that no two identities
    that sound alike are ever told apart as different likes. Exact duplicates were already
    removed when the voices were listed.

    Invented train identities (``variant`` in their entry) are judged after the installed ones,
    whose verdict they never change: one is rejected when confused with another identity, or when
    INVENTED_CONFUSED of its clips land on a validation or held-out identity (or of theirs on it).
    A probe bank's voices are judged as installed ones (it holds nothing else); whether one sounds
    like a train voice is ``sounds_like``'s question, asked of the training bank.
    """
    ids = bank.identities(include_rejected=True)
    # a probe bank's invented validation speakers are judged as installed voices are
    invented = {i for i in ids if bank.identity(i).get("variant") and bank.identity(i)["split"] == "train"}
    installed = [i for i in ids if i not in invented]
    vectors = {i: [_clip_signature(c.astype(np.float32) / 32768.0, bank.sample_rate) for c in bank.clips(i)]
               for i in ids}
    confusion, counts = _confusion([vectors[i] for i in installed])
    confused = [(installed[a], installed[b], round(float(confusion[a, b]), 3))
                for a, b in zip(*np.nonzero(confusion > CONFUSED)) if a != b]
    enough = min(counts) >= MIN_CLIPS_TO_JUDGE  # with fewer clips, one odd clip decides: report only
    rejected = sorted({max(a, b) for a, b, _ in confused}) if enough else []
    result = {"method": "leave-one-out nearest centroid on log-mel statistics",
              "clip_accuracy": round(float(np.trace(confusion) / len(installed)), 4), "confused_pairs": confused,
              "rejected": rejected}
    if invented:
        confusion, counts = _confusion([vectors[i] for i in ids])
        measured = {i for i in ids if bank.identity(i)["split"] != "train"}  # the figures' voices
        dropped: dict[str, tuple[str, float]] = {}
        for a, b in zip(*np.nonzero(np.maximum(confusion, confusion.T) > INVENTED_CONFUSED)):
            first, second, share = ids[a], ids[b], float(max(confusion[a, b], confusion[b, a]))
            if a == b or first not in invented:
                continue
            if second in measured or (share > CONFUSED and (second not in invented or first > second)):
                dropped.setdefault(first, (second, round(share, 3)))
        result["invented_rejected"] = {i: list(v) for i, v in sorted(dropped.items())} if enough else {}
        result["rejected"] = sorted(set(rejected) | set(result["invented_rejected"]))
    return result


def sounds_like(bank: UtteranceBank, reference: UtteranceBank, split: str = "train",
                bank_split: str | None = None) -> dict[str, tuple[str, float]]:
    """Which of ``bank``'s identities sound like one of ``reference``'s ``split`` identities,
    by the test check_identities applies to invented voices: leave-one-out nearest centroid on
    log-mel statistics over both banks' identities together; an identity is flagged when more
    than INVENTED_CONFUSED of its clips land on a reference identity, or of that identity's on
    it. For a probe bank against the training bank: are its "fresh" voices fresh? ``bank_split``
    limits ``bank``'s identities to one split. Returns {identity: (the reference identity, the
    larger share)}."""
    mine, theirs = bank.identities(bank_split), reference.identities(split)
    signatures = [[_clip_signature(c.astype(np.float32) / 32768.0, source.sample_rate) for c in source.clips(i)]
                  for source, ids in ((bank, mine), (reference, theirs)) for i in ids]
    confusion, _ = _confusion(signatures)  # (mine + theirs) x (mine + theirs)
    n = len(mine)
    both = np.maximum(confusion[:n, n:], confusion[n:, :n].T)  # (mine, theirs)
    flagged = {}
    for a in np.flatnonzero(both.max(1, initial=0) > INVENTED_CONFUSED):
        b = int(np.argmax(both[a]))
        flagged[mine[a]] = (theirs[b], round(float(both[a, b]), 3))
    return flagged


def _confusion(signatures: list[list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out nearest-centroid confusion (rows: true identity, shares of its clips) and
    clips per identity, for per-identity lists of clip signatures."""
    x = np.stack([v for clips in signatures for v in clips])
    owners = np.repeat(np.arange(len(signatures)), [len(clips) for clips in signatures])
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    sums = np.zeros((len(signatures), x.shape[1]))
    np.add.at(sums, owners, x)
    counts = np.bincount(owners, minlength=len(signatures)).astype(float)
    confusion = np.zeros((len(signatures), len(signatures)))
    for vec, own in zip(x, owners):
        centroids = sums / counts[:, None]
        if counts[own] > 1:
            centroids[own] = (sums[own] - vec) / (counts[own] - 1)
        guess = int(np.argmin(((centroids - vec) ** 2).sum(1)))
        confusion[own, guess] += 1
    return confusion / counts[:, None], counts


def _clip_signature(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    import torch
    import torchaudio

    mel = torchaudio.compliance.kaldi.fbank(torch.from_numpy(audio)[None] * 32768, num_mel_bins=40,
                                            sample_frequency=sample_rate)  # (frames, 40)
    return torch.cat([mel.mean(0), mel.std(0)]).numpy()


def _select_voices(voices: list[BaseVoice], cap: int | None) -> list[BaseVoice]:
    """All voices, or ``cap`` of them taken so that every split is represented."""
    if cap is None or cap >= len(voices):
        return voices
    pools = {s: _interleave_engines([v for v in voices if v.split == s]) for s in SPLITS}
    chosen: list[BaseVoice] = []
    cycle = 0
    while len(chosen) < cap and any(pools.values()):
        split = _SPLIT_CYCLE[cycle % len(_SPLIT_CYCLE)]
        if pools[split]:
            chosen.append(pools[split].pop(0))
        cycle += 1
    return chosen


def _interleave_engines(voices: list[BaseVoice]) -> list[BaseVoice]:
    by_engine = {e: [v for v in voices if v.engine == e] for e in ENGINES}
    out = []
    while any(by_engine.values()):
        for engine in sorted(by_engine, key=lambda e: e != "flite"):  # the few real people first
            if by_engine[engine]:
                out.append(by_engine[engine].pop(0))
    return out


def _clip_name(identity_id: str, n: int) -> str:
    return f"clips/{identity_id}/{n:03d}.flac"


def _make_clip(root: Path, seed: int, identity: Identity, n: int, espeak_path: Path | None = None) -> float:
    """Speak one sentence with the identity's voice; returns the clip's duration in seconds."""
    key = int(hashlib.sha256(identity.id.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng([seed, key, n])
    text = sentence(rng)
    wpm = int(rng.integers(150, 191))  # espeak speaking rate: prosody varies clip to clip
    tempo = float(rng.uniform(0.88, 1.12))  # within-speaker variation (keeps identity)
    eq_hz, eq_db = float(rng.uniform(300, 3500)), float(rng.uniform(-6, 6))
    wav = speak(identity.voice.engine, identity.voice.name, text, wpm,
                espeak_path if identity.voice.variant else None)
    path = root / _clip_name(identity.id, n)
    path.parent.mkdir(parents=True, exist_ok=True)
    command = ["sox", "-D", "-V1", "-t", "wav", "-", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(path),
               "gain", "-6", "pitch", str(100 * identity.pitch), "tempo", "-s", f"{tempo:.4f}",
               "equalizer", f"{eq_hz:.0f}", "1q", f"{eq_db:.2f}",
               "silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%", "reverse",
               "gain", "-n", "-3"]
    result = subprocess.run(command, input=wav, capture_output=True)
    if result.returncode != 0:
        raise CorpusError(f"sox failed on {identity.id} clip {n}: {result.stderr.decode(errors='replace').strip()}")
    return sf.info(str(path)).duration
