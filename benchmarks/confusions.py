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

from weighter.audio import read_manifest
from weighter.cluster import SlotClusterer, cluster_store
from weighter.corpus import BankSpec, MixerConfig, open_or_build_bank, write_corpus
from weighter.embedder import Embedder
from weighter.evaluation import SetTruth, activity_grid, equal_error_rate, read_rttm, slot_speakers
from weighter.index import Store, add_files


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
        corpus = Path(tmp) / "corpus"
        write_corpus(bank, corpus, args.split, args.files, MixerConfig(overlap=0.1, telephone=0.2), seed=args.seed,
                     progress=False)
        sources = read_manifest(corpus / "manifest.csv")
        rttm = read_rttm(corpus / "reference.rttm")
        store = Store(Path(tmp) / "store", create=True)
        add_files(store, Embedder.load(args.model), sources)
        run = cluster_store(store, SlotClusterer())
        group_of = dict(store.db.execute("SELECT slot_id, group_id FROM cluster_members WHERE run_id = ?", (run,)))
        vectors, speakers, owners, groups = [], [], [], []
        for i, source in enumerate(sources):
            file_id = store.file_id(source.path)
            s = store.embedding_set(file_id)
            item = SetTruth(s.embeddings, s.active.astype(np.float32), s.weightings, tuple(source.likes),
                            activity_grid(rttm.get(Path(source.path).stem, []), source.likes, s.timeline_rate,
                                          s.weightings.shape[1]))
            for n, speaker in slot_speakers(item, 0.5):
                vectors.append(s.embeddings[n])
                speakers.append(speaker)
                owners.append(i)
                groups.append(group_of.get(store.slot_id(file_id, n), -1))
    v, speakers, owners = np.stack(vectors), np.array(speakers), np.array(owners)
    scores = v @ v.T
    iu = np.triu_indices(len(v), 1)
    other_file = owners[iu[0]] != owners[iu[1]]
    same = speakers[iu[0]] == speakers[iu[1]]
    s = scores[iu]
    eer = equal_error_rate(s[same & other_file], s[~same & other_file])
    cut = float(np.quantile(s[same & other_file], eer))  # the score where both error rates meet
    wrong = other_file & ~same & (s >= cut)
    pairs = Counter(tuple(sorted((speakers[a], speakers[b]))) for a, b in zip(iu[0][wrong], iu[1][wrong]))
    impostors = int((other_file & ~same).sum())
    mixed = []
    for g in sorted(set(groups) - {-1}):
        members = Counter(speakers[np.array(groups) == g].tolist())
        if len(members) > 1:
            mixed.append({"group": int(g), "speakers": dict(members.most_common())})
    print(json.dumps({"split": args.split, "files": args.files, "slots": len(v), "slot_eer": round(eer, 4),
                      "eer_cosine": round(cut, 4), "impostor_pairs_above": int(wrong.sum()),
                      "impostor_pairs": impostors,
                      "most_confused": [{"speakers": list(p), "pairs_above": c} for p, c in pairs.most_common(args.top)],
                      "groups": len(set(groups) - {-1}), "mixed_groups": mixed}, indent=1))


if __name__ == "__main__":
    main()
