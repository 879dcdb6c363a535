"""How the clustering defaults were chosen: a sweep on the bank's *validation* split (never the
held-out one), with the shipped model. Prints link F1, ARI and outlier share per setting.

    python benchmarks/cluster_tuning.py [--files 100] [--seed 5]
"""

import argparse
import itertools
import json
import tempfile
from pathlib import Path

from weighter.audio import read_manifest
from weighter.cluster import SlotClusterer, cluster_store
from weighter.corpus import BankSpec, MixerConfig, open_or_build_bank, write_corpus
from weighter.embedder import Embedder
from weighter.evaluation import evaluate_store, read_rttm
from weighter.index import Store, add_files


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    bank = open_or_build_bank(BankSpec(), progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        write_corpus(bank, corpus, "validation", args.files, MixerConfig(overlap=0.1, telephone=0.2), seed=args.seed,
                     progress=False)
        sources = read_manifest(corpus / "manifest.csv")
        rttm = read_rttm(corpus / "reference.rttm")
        store = Store(Path(tmp) / "store", create=True)
        add_files(store, Embedder.load(args.model), sources)
        for pca, min_samples, method in itertools.product([32, 64], [1, 2, 3], ["eom", "leaf"]):
            run = cluster_store(store, SlotClusterer(min_samples=min_samples, pca_dims=pca,
                                                     cluster_selection_method=method))
            r = evaluate_store(store, sources, rttm, run)
            print(json.dumps({"pca_dims": pca, "min_samples": min_samples, "method": method,
                              "link_f1": r["linking"]["f1"], "ari": r["ari"], "outlier_share": r["outlier_share"]}))


if __name__ == "__main__":
    main()
