"""Where speaker counting fails: count accuracy by how long a file's least-heard speaker is
heard, and what became of each speaker an undercounted file misses.

    python benchmarks/count_errors.py [--split validation] [--seeds 5 6 7 8 9] [--files 100] [--model M]

For every file of the standard mixed corpora (one per seed) the active slots are counted as
the store counts them. A missed speaker is one that no active slot weighs most (its
activity in the RTTM against each slot's weightings); it had either no slot at all (its
speech went to other slots' weightings), a slot below the activity threshold, or a slot above
it that the duplicate merge dropped as repeating another. Prints one JSON object.
"""

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from common import corpus_truth, mixed_corpus
from weighter.corpus import BankSpec, open_or_build_bank
from weighter.embedder import Embedder
from weighter.evaluation import activity_grid

HEARD_BINS = (0, 2, 4, 8, float("inf"))  # seconds the least-heard speaker of a file is heard


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="validation", choices=["validation", "heldout"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[5, 6, 7, 8, 9])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    bank = open_or_build_bank(BankSpec(), progress=False)
    embedder = Embedder.load(args.model)
    files, missed = [], Counter()
    missed_heard = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            sources, rttm = corpus_truth(mixed_corpus(bank, Path(tmp) / "corpus", args.split, args.files, seed))
            sets = embedder.embed([s.path for s in sources])
        for source, s in zip(sources, sets):
            activity = activity_grid(rttm.get(Path(source.path).stem, []), source.likes, s.timeline_rate,
                                     s.weightings.shape[1]).astype(np.float32)  # (speakers, T)
            heard = activity.sum(1) / s.timeline_rate
            files.append((len(source.likes), int(s.active.sum()), float(heard.min()) if len(heard) else 0.0))
            if s.active.sum() >= len(source.likes):
                continue
            owner = np.argmax(activity @ s.weightings.T, 0)  # the speaker each slot weighs most
            held = set(owner[s.active].tolist())
            for k in sorted(set(range(len(source.likes))) - held):
                mine = np.flatnonzero(owner == k)
                kind = ("no slot of its own" if not len(mine) else
                        "a slot dropped as a duplicate" if (s.confidence[mine] >= embedder.threshold).any() else
                        "a slot below the threshold")
                missed[kind] += 1
                missed_heard.append(float(heard[k]))
    true, predicted, least = (np.array(v) for v in zip(*files))
    right = true == predicted
    by_heard = {}
    for lo, hi in zip(HEARD_BINS, HEARD_BINS[1:]):
        m = (least >= lo) & (least < hi)
        by_heard[f"{lo}-{hi} s"] = {"files": int(m.sum()), "count_accuracy": round(float(right[m].mean()), 3),
                                    "undercounted": round(float((predicted[m] < true[m]).mean()), 3),
                                    "overcounted": round(float((predicted[m] > true[m]).mean()), 3)}
    confusion = {int(t): {int(p): int(((true == t) & (predicted == p)).sum()) for p in np.unique(predicted[true == t])}
                 for t in np.unique(true)}
    print(json.dumps({"split": args.split, "seeds": args.seeds, "files": len(files), "model": embedder.model_id,
                      "count_accuracy": round(float(right.mean()), 4),
                      "true_to_counted": confusion, "by_least_heard_speaker": by_heard,
                      "missed_speakers": dict(missed),
                      "missed_heard_seconds_quartiles": np.percentile(missed_heard, [25, 50, 75]).round(1).tolist()
                      if missed_heard else []}, indent=1))


if __name__ == "__main__":
    main()
