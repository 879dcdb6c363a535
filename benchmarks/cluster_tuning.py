"""How the clustering defaults were chosen: a sweep on the bank's *validation* split (never the
held-out one), with the shipped model. Prints link F1, ARI and outlier share per setting.

    python benchmarks/cluster_tuning.py [--files 100] [--seed 5]
"""

import argparse
import itertools
import json
import tempfile
from pathlib import Path

from common import clustered_figures, corpus_truth, indexed_store, mixed_corpus
from weighter.cluster import SlotClusterer
from weighter.corpus import BankSpec, open_or_build_bank
from weighter.embedder import Embedder


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    bank = open_or_build_bank(BankSpec(), progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        sources, rttm = corpus_truth(mixed_corpus(bank, Path(tmp) / "corpus", "validation", args.files, args.seed))
        store = indexed_store(Embedder.load(args.model), sources, Path(tmp) / "store")
        for pca, min_samples, method in itertools.product([32, 64], [1, 2, 3], ["eom", "leaf"]):
            r = clustered_figures(store, sources, rttm, SlotClusterer(min_samples=min_samples, pca_dims=pca,
                                                                     cluster_selection_method=method))
            print(json.dumps({"pca_dims": pca, "min_samples": min_samples, "method": method,
                              "link_f1": r["linking"]["f1"], "ari": r["ari"], "outlier_share": r["outlier_share"]}))


if __name__ == "__main__":
    main()
