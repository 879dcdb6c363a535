"""Quality on held-out identities, end to end with the real commands' library calls.

Mixes a corpus from the bank's *held-out* split (never seen in training: 1-4 speakers,
background noise, 20% telephone channel, 10% overlapping turns), builds a store with the
model, clusters it, and scores everything with ``weighter.evaluation.evaluate_store``. Side by
side, in the same run: retrieval with one mean embedding per file (every frame weighted alike).

    python benchmarks/quality.py [--model M] [--files 150] [--seed 7] [--json out.json]

With ``--seeds 7 8 9 10 11`` it scores one corpus per seed (``--files`` each; baselines with
``--baselines NAME ...`` only) and ends with their mean, min and max: one 100-file corpus is
a small sample (the shipped model's link F1 was 0.78, 0.89 and 0.87 on seeds 7, 8 and 9).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import classic_figures, clustered_figures, corpus_truth, indexed_store, mean_min_max, mixed_corpus
from weighter.audio import load_audio
from weighter.corpus import BankSpec, open_or_build_bank
from weighter.embedder import Embedder
from weighter.evaluation import SetTruth, retrieval_map

VAL_FILES = 30  # validation files that calibrate the baselines' clustering threshold
BASELINES = ("classic-weighter", "classic-resemblyzer")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--speech-gate", type=float, default=None, help="embed with this speech gate (Silero VAD)")
    parser.add_argument("--files", type=int, default=150)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="one corpus per seed, then their mean, min and max (no baselines unless named)")
    parser.add_argument("--json", dest="json_out", default=None)
    parser.add_argument("--baselines", nargs="*", default=None,
                        help="diarize-then-link baselines to run side by side (default: classic-weighter and "
                             "classic-resemblyzer for one corpus, none with --seeds)")
    parser.add_argument("--val-files", type=int, default=VAL_FILES)
    args = parser.parse_args()
    globals()["VAL_FILES"] = args.val_files
    bank = open_or_build_bank(BankSpec(), progress=False)
    embedder = Embedder.load(args.model, speech_gate=args.speech_gate)
    baselines = args.baselines if args.baselines is not None else [] if args.seeds else list(BASELINES)
    if args.seeds:
        results = []
        for seed in args.seeds:
            results.append(score(bank, embedder, args.files, seed, baselines))
            print(json.dumps(results[-1]), flush=True)
        summary = seed_summary(results)
        print(json.dumps(summary))
        if args.json_out:
            Path(args.json_out).write_text(json.dumps({"corpora": results, "summary": summary}, indent=1))
        return
    result = score(bank, embedder, args.files, args.seed, baselines)
    print(json.dumps(result, indent=1))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1))


SUMMARISED = ("count_accuracy", "map", "map_cosine", "recall@1", "recall@10", "slot_eer", "der", "link_f1", "ari",
              "outlier_share")


def seed_summary(results: list[dict]) -> dict:
    """Mean, min and max of the headline figures over corpora, the Weighter's and each
    baseline's that ran ("classic-weighter": {...})."""
    out = {"seeds": [r["seed"] for r in results], "files_each": results[0]["corpus_files"]} | _stats(results)
    for name in BASELINES:
        if all(name in r and "skipped" not in r[name] for r in results):
            out[name] = _stats([r[name] for r in results])
    return out


def _stats(results: list[dict]) -> dict:
    return mean_min_max([r | {"link_f1": r["linking"]["f1"]} for r in results], SUMMARISED)


def score(bank, embedder, files: int, seed: int, baselines: list[str]) -> dict:
    """One held-out corpus of ``files`` conversations mixed with ``seed``: the Weighter's figures,
    one mean embedding per file, and the named classic baselines."""
    with tempfile.TemporaryDirectory() as tmp:
        sources, rttm = corpus_truth(mixed_corpus(bank, Path(tmp) / "corpus", "heldout", files, seed))
        started = time.perf_counter()
        store = indexed_store(embedder, sources, Path(tmp) / "store")
        embed_seconds = time.perf_counter() - started
        result = clustered_figures(store, sources, rttm)
        # baseline: one mean embedding per file, same model, same files
        means = []
        with torch.no_grad():
            for s in sources:
                wave = torch.from_numpy(load_audio(s.path))[None]
                e = embedder.model.mean_embedding(wave)[0].numpy()
                means.append(SetTruth(e[None], np.ones(1, np.float32), np.zeros((1, 1)), s.likes))
        result["map_mean_embedding_baseline"] = round(retrieval_map(means, 0.5), 4)
        for name in baselines:
            result[name] = classic_baseline(name, embedder, bank, sources, rttm, Path(tmp), seed)
        audio = sum(load_audio(s.path).shape[0] for s in sources) / 16000
        result.update({"model_id": embedder.model_id, "corpus_files": files, "corpus_seconds": round(audio, 1),
                       "embed_and_index_x_realtime": round(audio / embed_seconds, 1), "seed": seed})
    return result


def classic_baseline(name, embedder, bank, sources, rttm, tmp, seed) -> dict:
    """Diarize-then-link: window embeddings, per-file agglomerative clustering, centroids as the
    set; its threshold calibrated on the *validation* split; then the same store, clustering
    and figures as the Weighter."""
    from weighter.baselines import resemblyzer_windows, weighter_windows

    try:
        windows = weighter_windows(embedder.model) if name == "classic-weighter" else resemblyzer_windows()
    except ImportError:
        return {"skipped": "resemblyzer is not installed (pip install 'weighter[resemblyzer]')"}
    val_sources, _ = corpus_truth(mixed_corpus(bank, tmp / f"val-{name}", "validation", VAL_FILES, seed + 100))
    return classic_figures(name, windows, val_sources, sources, rttm, tmp / f"store-{name}")[0]


if __name__ == "__main__":
    main()
