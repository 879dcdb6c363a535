"""How the clustering defaults were chosen: a sweep on the bank's *validation* split (never the
held-out one), with the shipped model (or ``--model``). Prints link F1, ARI and outlier share per
setting, and the store's count accuracy and retrieval mAP (the same for every setting).

    python benchmarks/cluster_tuning.py [--files 100] [--seed 5]

With ``--seeds 5 6 7 8 9`` it scores every setting on one corpus per seed and prints each
setting's mean, min and max over them (one 100-file corpus is a small sample: on the
held-out split the shipped model's link F1 ranged 0.78-0.90 over five); ``--min-cluster-sizes``,
``--pca`` and ``--whiten on off`` widen or narrow the grid. ``--probe-voices 12`` mixes the validation corpora from a
probe bank of fresh voices instead (``weighter bank --engines espeak --probe-voices 12``, built
if missing; ``--bank-seed 1`` another probe of other voices), ``--bank DIR`` from any built bank.
"""

import argparse
import itertools
import json
import tempfile
from pathlib import Path

from common import clustered_figures, corpus_truth, indexed_store, mean_min_max, mixed_corpus
from weighter.cluster import SlotClusterer
from weighter.corpus import BankSpec, UtteranceBank, open_or_build_bank
from weighter.embedder import Embedder

FIGURES = ("link_f1", "ari", "outlier_share", "count_accuracy", "map")  # the last two do not depend on the setting


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="one validation corpus per seed; each setting's mean, min and max over them")
    parser.add_argument("--pca", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--whiten", nargs="+", choices=["on", "off"], default=["on"],
                        help="whitened, unit-length PCA space (on, the default) and/or plain PCA (off)")
    parser.add_argument("--min-cluster-sizes", type=int, nargs="+", default=[None],
                        help="HDBSCAN min_cluster_size values (default: the clusterer's own, by corpus size)")
    parser.add_argument("--assign-outliers", type=float, nargs="+", default=None,
                        help="also assign outliers to their nearest group at these membership strengths")
    parser.add_argument("--min-samples", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--methods", nargs="+", default=["eom", "leaf"])
    parser.add_argument("--split-evidence", nargs="+", default=["default"],
                        help="BIC evidence at which a group holding two voices is split (weighter.cluster.split): "
                             "numbers, 'none' (no splitting) or 'default' (the clusterer's)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--bank", default=None, help="a built bank whose validation split to mix (default: the default bank)")
    parser.add_argument("--probe-voices", type=int, default=0, help="mix from the probe bank of this many fresh voices")
    parser.add_argument("--bank-seed", type=int, default=0,
                        help="with --probe-voices: another probe bank of other voices (weighter bank --bank-seed)")
    args = parser.parse_args()
    if args.bank and args.probe_voices:
        parser.error("--bank and --probe-voices both name the bank: give one")
    if args.bank_seed and not args.probe_voices:
        parser.error("--bank-seed picks a probe bank: give --probe-voices too")
    spec = BankSpec(engines=("espeak",), probe_voices=args.probe_voices, seed=args.bank_seed) if args.probe_voices \
        else BankSpec()
    bank = UtteranceBank(args.bank) if args.bank else open_or_build_bank(spec, progress=False)
    embedder = Embedder.load(args.model)
    grid = list(itertools.product(args.pca, args.whiten, args.min_samples, args.methods, args.min_cluster_sizes,
                                  [None] + (args.assign_outliers or []), args.split_evidence))
    scores = {setting: [] for setting in grid}
    for seed in args.seeds or [args.seed]:
        with tempfile.TemporaryDirectory() as tmp:
            sources, rttm = corpus_truth(mixed_corpus(bank, Path(tmp) / "corpus", "validation", args.files, seed))
            store = indexed_store(embedder, sources, Path(tmp) / "store")
            for setting in grid:
                pca, whiten, min_samples, method, min_size, assign, split = setting
                evidence = {} if split == "default" else {"split_evidence": None if split == "none" else float(split)}
                r = clustered_figures(store, sources, rttm, SlotClusterer(
                    min_cluster_size=min_size, min_samples=min_samples, pca_dims=pca, cluster_selection_method=method,
                    whiten=whiten == "on", **evidence), assign_outliers=assign)
                scores[setting].append({"link_f1": r["linking"]["f1"], "ari": r["ari"],
                                        "outlier_share": r["outlier_share"], "count_accuracy": r["count_accuracy"],
                                        "map": r["map"]})
                if not args.seeds:
                    print(json.dumps(_name(setting) | scores[setting][-1]))
    if args.seeds:
        for setting, rows in scores.items():
            print(json.dumps(_name(setting) | {"seeds": args.seeds} | mean_min_max(rows, FIGURES)))


def _name(setting) -> dict:
    pca, whiten, min_samples, method, min_size, assign, split = setting
    return {"pca_dims": pca, "whiten": whiten, "min_samples": min_samples, "method": method} | (
        {} if split == "default" else {"split_evidence": split}) | (
        {} if min_size is None else {"min_cluster_size": min_size}) | (
        {} if assign is None else {"assign_outliers": assign})


if __name__ == "__main__":
    main()
