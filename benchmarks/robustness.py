"""Quality on conditions the generator never makes and training never saw.

The held-out corpus of ``quality.py`` (same seed: held-out voices, 1-4 speakers, coloured
noise, 20% telephone, 10% overlapping turns) is measured as generated, then

* through channels the generator has none of, applied to every file after mixing:
  ``reverb`` (a synthetic room per file: exponentially decaying noise tail, RT60 0.3-0.8 s,
  direct-to-reverberant ratio 0-8 dB), ``mp3`` (24 kbps, the files the store reads are MP3),
  ``opus`` (Ogg Opus at its lowest quality), ``hum+tones`` (mains hum with harmonics and
  sustained tones changing every 0.5 s, 10 dB below the speech), ``clipped`` (+20 dB, then
  hard clipping), ``quiet`` (-30 dB);
* and with turn-taking outside the training mixer's settings, freshly mixed from the same
  held-out voices: ``long turns`` (a floor walk 4x slower: monologues of tens of seconds),
  ``rapid turns`` (3x faster, turns down to 0.5 s), ``heavy overlap`` (half the turns start
  over the last one), ``5-6 speakers`` (more than training's 4: count accuracy must fail,
  retrieval need not).

Each corpus is indexed and clustered with the default model and scored by
``weighter.evaluation.evaluate_store``: count accuracy, mAP, slot EER, DER, link F1, ARI,
outlier share.

    python benchmarks/robustness.py [--files 100] [--seed 7] [--only reverb mp3 ...] [--split validation]
                                    [--json out.json]
"""

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import fftconvolve

from common import STANDARD_MIX, clustered_figures, corpus_truth, indexed_store, mixed_corpus
from weighter.audio import AudioSource, read_manifest, write_manifest
from weighter.corpus import BankSpec, open_or_build_bank
from weighter.embedder import Embedder

RATE = 16000
BASE = STANDARD_MIX  # quality.py's held-out corpus


def reverb(audio: np.ndarray, rng) -> np.ndarray:
    rt60, drr_db = rng.uniform(0.3, 0.8), rng.uniform(0.0, 8.0)
    t = np.arange(int(rt60 * RATE)) / RATE
    tail = rng.normal(size=len(t)) * 10 ** (-3 * t / rt60)  # -60 dB at rt60
    tail[: int(0.002 * RATE)] = 0.0  # the first reflections arrive after the direct sound
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail ** 2))  # energy relative to the direct path's 1
    out = fftconvolve(audio, np.concatenate([[1.0], tail[1:]]))[: len(audio)]
    return out * (np.max(np.abs(audio)) / max(np.max(np.abs(out)), 1e-9))


def hum_and_tones(audio: np.ndarray, rng) -> np.ndarray:
    t = np.arange(len(audio)) / RATE
    mains = rng.choice([50.0, 60.0])
    noise = sum(np.sin(2 * np.pi * mains * h * t + rng.uniform(0, 2 * np.pi)) / h for h in range(1, 8))
    step = RATE // 2  # a new chord of three tones every half second
    for start in range(0, len(audio), step):
        seg = slice(start, start + step)
        for f in 220.0 * 2 ** (rng.integers(0, 24, 3) / 12):
            noise[seg] += 0.5 * np.sin(2 * np.pi * f * t[seg])
    speech = np.mean(audio ** 2)
    return audio + noise * np.sqrt(speech / 10 / np.mean(noise ** 2))  # 10 dB below the speech


CHANNELS = {
    "reverb": (reverb, "flac"),
    "mp3": (None, "mp3"),
    "opus": (None, "opus"),
    "hum+tones": (hum_and_tones, "flac"),
    "clipped": (lambda a, rng: np.clip(a * 10.0, -1.0, 1.0), "flac"),
    "quiet": (lambda a, rng: a * 10 ** (-30 / 20), "flac"),
}
TURNS = {
    "long turns": replace(BASE, walk_step=BASE.walk_step / 4),
    "rapid turns": replace(BASE, walk_step=BASE.walk_step * 3, min_turn=0.5),
    "heavy overlap": replace(BASE, overlap=0.5),
    "5-6 speakers": replace(BASE, min_speakers=5, max_speakers=6, min_duration=30.0),
}


def write_channel(corpus: Path, out: Path, name: str, seed: int) -> Path:
    """The corpus's files through one channel, with its manifest and RTTM (same file stems)."""
    effect, ext = CHANNELS[name]
    (out / "audio").mkdir(parents=True)
    rows = []
    for i, source in enumerate(read_manifest(corpus / "manifest.csv")):
        audio, rate = sf.read(str(source.path), dtype="float32")
        if effect is not None:
            audio = effect(audio.astype(np.float64), np.random.default_rng([seed, i])).astype(np.float32)
        path = out / "audio" / f"{source.path.stem}.{ext}"
        if ext == "mp3":
            sf.write(str(path), audio, rate, format="MP3", subtype="MPEG_LAYER_III", compression_level=0.9,
                     bitrate_mode="CONSTANT")
        elif ext == "opus":
            sf.write(str(path), audio, rate, format="OGG", subtype="OPUS", compression_level=1.0)
        else:
            sf.write(str(path), audio, rate, subtype="PCM_16", format="FLAC")
        rows.append(AudioSource(path, source.likes))
    write_manifest(out / "manifest.csv", rows)
    (out / "reference.rttm").write_text((corpus / "reference.rttm").read_text())
    return out


def measure(embedder: Embedder, corpus: Path, tmp: Path) -> dict:
    sources, rttm = corpus_truth(corpus)
    r = clustered_figures(indexed_store(embedder, sources, tmp / "store"), sources, rttm)
    return {"count_accuracy": r["count_accuracy"], "map": r["map"], "recall@1": r["recall@1"],
            "slot_eer": r["slot_eer"], "der": r["der"], "link_f1": r["linking"]["f1"], "ari": r["ari"],
            "outlier_share": r["outlier_share"], "files": r["files"]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", nargs="*", default=None, help="conditions to run (default: all)")
    parser.add_argument("--split", default="heldout", choices=["heldout", "validation"],
                        help="whose voices: validation, to choose between models; heldout, to report")
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args()
    names = ["as generated", *CHANNELS, *TURNS]
    unknown = set(args.only or []) - set(names)
    if unknown:
        parser.error(f"unknown conditions {sorted(unknown)}; choose from {names}")
    bank = open_or_build_bank(BankSpec(), progress=False)
    embedder = Embedder.load(args.model)
    results = {"model_id": embedder.model_id, "split": args.split, "files": args.files, "seed": args.seed,
               "conditions": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "as generated"
        mixed_corpus(bank, base, args.split, args.files, args.seed)
        for name in names:
            if args.only and name not in args.only:
                continue
            started = time.perf_counter()
            work = tmp / f"work-{len(results['conditions'])}"
            if name == "as generated":
                corpus = base
            elif name in CHANNELS:
                corpus = write_channel(base, work / "corpus", name, args.seed)
            else:
                corpus = mixed_corpus(bank, work / "corpus", args.split, args.files, args.seed, TURNS[name])
            work.mkdir(exist_ok=True)
            figures = measure(embedder, corpus, work) | {"seconds": round(time.perf_counter() - started, 1)}
            results["conditions"][name] = figures
            print(json.dumps({"condition": name} | figures), flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
