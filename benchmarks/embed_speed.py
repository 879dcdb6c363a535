"""Embedder speed (x real time, frontend included) and peak memory on long files.

Speed: ``Embedder.embed`` over a corpus of 30-60 s files (decode, resample, log-mel, model,
merge), ``--repeats`` times: the median, and the slowest and fastest run (this kind of 2-core
machine varies by about 10% from run to run). Memory: peak RSS while embedding one synthetic 1-hour and one 3-hour FLAC file, each
in a fresh process (so the peaks do not mix). Side by side in the same run when the optional
``resemblyzer`` package is installed: its sliding-window partial embeddings on the same audio.

    python benchmarks/embed_speed.py [--model M] [--hours 1 3] [--threads 2] [--device auto] [--repeats 3]
        [--precision float32 auto]   (each timed alternately; their sets compared: same counts, slot cosines)
        [--bank DIR --split S]   (another bank, e.g. a compact one on a GPU machine; --hours alone skips memory)
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch


def make_long_file(bank, split: str, path: Path, hours: float) -> None:
    """A long FLAC written block by block (never whole in memory): one conversation repeated."""
    from weighter.corpus import ConversationMixer, MixerConfig

    conv = ConversationMixer(bank, split, MixerConfig(2, 3, 60, 60)).sample(np.random.default_rng(0))
    with sf.SoundFile(str(path), "w", 16000, 1, format="FLAC", subtype="PCM_16") as handle:
        for _ in range(int(hours * 60)):
            handle.write(conv.audio)


def child_peak(model: str | None, device: str, path: Path, speech_gate: float | None = None,
               precision: str = "auto") -> dict:
    code = f"""
import json, resource, time, sys
from weighter.embedder import Embedder
e = Embedder.load({model!r}, device={device!r}, speech_gate={speech_gate!r}, precision={precision!r})
t = time.perf_counter()
s = e.embed([{str(path)!r}])[0]
print(json.dumps({{"seconds": time.perf_counter() - t, "slots": int(s.active.sum()), "duration": s.duration,
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def agreement(reference: list, other: list) -> dict:
    """How alike two precisions' sets of the same files are: the share of files with as many
    active slots, and over those files the lowest and median cosine of their slots (in order)."""
    same = [(a, b) for a, b in zip(reference, other) if a.active.sum() == b.active.sum()]
    cos = np.concatenate([(a.embeddings[a.active] * b.embeddings[b.active]).sum(1) for a, b in same]) if same else []
    return {"same_active_count": round(len(same) / max(len(reference), 1), 3),
            "slot_cosine_min": round(float(np.min(cos)), 4) if len(cos) else None,
            "slot_cosine_median": round(float(np.median(cos)), 4) if len(cos) else None}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--hours", type=float, nargs="*", default=[1.0, 3.0])
    parser.add_argument("--files", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3, help="times the corpus is embedded (median reported)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--bank", default=None, help="an utterance bank directory (default: the default bank)")
    parser.add_argument("--split", default="heldout", help="the bank split the test audio is mixed from")
    parser.add_argument("--speech-gate", type=float, default=None, help="embed with this speech gate (Silero VAD)")
    parser.add_argument("--precision", nargs="+", default=["float32", "auto"], choices=["auto", "float32", "bfloat16"],
                        help="the encoder's number formats, timed alternately in one run (the last one for long files)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from weighter.corpus import BankSpec, MixerConfig, UtteranceBank, open_or_build_bank, write_corpus
    from weighter.embedder import Embedder

    bank = UtteranceBank(args.bank) if args.bank else open_or_build_bank(BankSpec(), progress=False)
    embedders = {p: Embedder.load(args.model, device=args.device, speech_gate=args.speech_gate, precision=p)
                 for p in args.precision}
    with tempfile.TemporaryDirectory() as tmp:
        info = write_corpus(bank, Path(tmp) / "c", args.split, args.files, MixerConfig(1, 4, 30, 60), progress=False)
        files = sorted((Path(tmp) / "c" / "audio").glob("*.flac"))
        runs, sets = {p: [] for p in embedders}, {}
        for p, embedder in embedders.items():
            sets[p] = embedder.embed(files)  # warm-up, and each precision's sets
        for _ in range(max(1, args.repeats)):  # alternately: the machine's drift falls on all alike
            for p, embedder in embedders.items():
                started = time.perf_counter()
                embedder.embed(files)
                runs[p].append(time.perf_counter() - started)
        what = "weighter embed (decode + log-mel + model + merge)"
        if args.speech_gate is not None:
            what = f"weighter embed with speech gate {args.speech_gate:g} (+ Silero VAD)"
        first = args.precision[0]
        for p, embedder in embedders.items():
            seconds = float(np.median(runs[p]))
            print(json.dumps({"what": what, "precision": p, "resolved": embedder.precision, "threads": args.threads,
                              "audio_s": info["audio_seconds"], "wall_s": round(seconds, 2),
                              "x_realtime": round(info["audio_seconds"] / seconds, 1),
                              "x_realtime_runs": [round(info["audio_seconds"] / s, 1)
                                                  for s in sorted(runs[p], reverse=True)],
                              "speed_vs_" + first: round(float(np.median(runs[first])) / seconds, 3),
                              "device": str(embedder.device)} | agreement(sets[first], sets[p])), flush=True)
        try:
            from resemblyzer import VoiceEncoder, preprocess_wav

            encoder = VoiceEncoder("cpu", verbose=False)
            started = time.perf_counter()
            for f in files:
                wav = preprocess_wav(f)
                encoder.embed_utterance(wav, return_partials=True, rate=1.6)
            seconds = time.perf_counter() - started
            print(json.dumps({"what": "resemblyzer partial embeddings (1.6 s windows, rate 1.6/s)",
                              "audio_s": info["audio_seconds"], "wall_s": round(seconds, 2),
                              "x_realtime": round(info["audio_seconds"] / seconds, 1)}), flush=True)
        except ImportError:
            print(json.dumps({"what": "resemblyzer", "skipped": "not installed (pip install 'weighter[resemblyzer]')"}))
        for hours in args.hours:
            path = Path(tmp) / f"long_{hours:g}h.flac"
            make_long_file(bank, args.split, path, hours)
            result = child_peak(args.model, args.device, path, args.speech_gate, args.precision[-1])
            result.update({"what": f"one {hours:g}-hour file", "x_realtime": round(result["duration"] / result["seconds"], 1)})
            print(json.dumps(result), flush=True)
            path.unlink()


if __name__ == "__main__":
    main()
