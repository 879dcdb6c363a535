"""Where the errors are: which true speakers the model confuses, on a generated corpus.

Mixes a corpus from one split of the bank, embeds it, clusters it, and prints
(1) the speaker pairs with the most different-speaker slot pairs scoring above the
same/different equal-error threshold (the confusable identities), and (2) the groups of the
clustering run that hold slots of more than one true speaker. Analysis only: nothing here
chooses a default (tune on --split validation, the default; read --split heldout to report).

    python benchmarks/confusions.py [--model M] [--split validation|heldout] [--files 100] [--top 12]
"""

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from common import corpus_truth, indexed_store, mixed_corpus
from weighter.cluster import SlotClusterer, cluster_store
from weighter.corpus import BankSpec, open_or_build_bank
from weighter.embedder import Embedder
from weighter.evaluation import equal_error_rate, slot_pairs, store_items


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--split", choices=["validation", "heldout"], default="validation")
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    bank = open_or_build_bank(BankSpec(), progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        sources, rttm = corpus_truth(mixed_corpus(bank, Path(tmp) / "corpus", args.split, args.files, args.seed))
        store = indexed_store(Embedder.load(args.model), sources, Path(tmp) / "store")
        run = cluster_store(store, SlotClusterer())
        group_of = dict(store.db.execute("SELECT slot_id, group_id FROM cluster_members WHERE run_id = ?", (run,)))
        items, file_ids, _ = store_items(store, sources, rttm)
    who, speakers, a, b, scores, same = slot_pairs(items, 0.5)
    groups = np.array([group_of.get(store.slot_id(file_ids[i], n), -1) for i, n in who])
    eer = equal_error_rate(scores[same], scores[~same])
    cut = float(np.quantile(scores[same], eer))  # the score where both error rates meet
    wrong = ~same & (scores >= cut)
    pairs = Counter(tuple(sorted((speakers[i], speakers[j]))) for i, j in zip(a[wrong], b[wrong]))
    mixed = []
    for g in sorted(set(groups) - {-1}):
        members = Counter(speakers[groups == g].tolist())
        if len(members) > 1:
            mixed.append({"group": int(g), "speakers": dict(members.most_common())})
    print(json.dumps({"split": args.split, "files": args.files, "slots": len(who), "slot_eer": round(eer, 4),
                      "eer_cosine": round(cut, 4), "impostor_pairs_above": int(wrong.sum()),
                      "impostor_pairs": int((~same).sum()),
                      "most_confused": [{"speakers": list(p), "pairs_above": c} for p, c in pairs.most_common(args.top)],
                      "groups": len(set(groups) - {-1}), "mixed_groups": mixed}, indent=1))


if __name__ == "__main__":
    main()
