"""How well files added after a clustering run are placed into its groups (issue #5's new
files: ``weighter cluster --assign FILE``, no re-clustering).

Per corpus: the first ``--fit`` files are indexed and clustered with the defaults; the others
are embedded and placed by ``assign_set``, as ``--assign`` does. Each placed active slot is
mapped to the speaker its weighting overlaps most (the RTTM), each group to its most frequent
speaker. A slot of a speaker who leads a group is *right* when placed in that group, *wrong*
in another, *missed* as an outlier; a slot of a speaker who leads no group (never heard in the
fitted files, or only as outliers there) should stay an outlier (*rejected*) rather than join
a group (*false accept*); those are counted apart for speakers *new* to the run (not heard
in any fitted file) and speakers heard there whose slots went to outliers or into another
speaker's group. ``--strangers N`` also places N files of voices all new to the run: how often
a stranger is told apart from the groups. For a held-out run they are validation voices; for
a validation run (where settings may be chosen, so held-out voices must not be used) the
voices of the first probe bank (``weighter bank --engines espeak --probe-voices 12``).

    python benchmarks/cluster_assign.py [--split heldout] [--seeds 7 8] [--files 100] [--fit 80]
                                        [--strangers 20]
"""

import argparse
import collections
import json
import tempfile
from pathlib import Path

import numpy as np

from common import corpus_truth, indexed_store, mixed_corpus
from weighter.cluster import SlotClusterer, assign_set, cluster_store
from weighter.cluster.clusterer import GROUP_SLACK
from weighter.corpus import BankSpec, open_or_build_bank
from weighter.embedder import Embedder
from weighter.evaluation import SetTruth, activity_grid, slot_speakers, store_items


def group_leaders(store, sources, rttm, run) -> dict[str, int]:
    """Each speaker who is the most frequent speaker of a group of the run: that group."""
    groups = dict(store.db.execute("SELECT slot_id, group_id FROM cluster_members WHERE run_id = ?", (run,)))
    items, file_ids, _ = store_items(store, sources, rttm)
    counts = collections.defaultdict(collections.Counter)
    for item, file_id in zip(items, file_ids):
        for n, speaker in slot_speakers(item, 0.5):
            group = groups.get(store.slot_id(file_id, n), -1)
            if group >= 0:
                counts[group][speaker] += 1
    return {c.most_common(1)[0][0]: group for group, c in counts.items()}


def placed(store, run, sources, sets, rttm, leaders, heard: set[str]) -> collections.Counter:
    """What became of the active slots of ``sets`` (the embedded ``sources``) placed into ``run``."""
    tally = collections.Counter()
    for source, s in zip(sources, sets):
        members = {m.slot: m.group for m in assign_set(store, run, s, persist=False)}
        activity = activity_grid(rttm.get(Path(source.path).stem, []), source.likes, s.timeline_rate,
                                 s.weightings.shape[1])
        truth = SetTruth(s.embeddings, s.active.astype(np.float32), s.weightings, tuple(source.likes), activity)
        for n, speaker in slot_speakers(truth, 0.5):
            group = members.get(n, -1)
            if speaker in leaders:
                tally["right" if group == leaders[speaker] else "wrong" if group >= 0 else "missed"] += 1
            else:
                kind = "new" if speaker not in heard else "led_none"
                tally[f"{kind}_accepted" if group >= 0 else f"{kind}_rejected"] += 1
    return tally


def shares(tally: collections.Counter) -> dict:
    known = tally["right"] + tally["wrong"] + tally["missed"]
    out = {"slots_of_group_speakers": known}
    out |= {kind: round(tally[kind] / known, 4) if known else None for kind in ("right", "wrong", "missed")}
    for kind in ("new", "led_none"):
        slots = tally[f"{kind}_rejected"] + tally[f"{kind}_accepted"]
        out[f"slots_of_{kind}_speakers"] = slots
        out[f"{kind}_rejected"] = round(tally[f"{kind}_rejected"] / slots, 4) if slots else None
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="heldout", choices=["validation", "heldout"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--fit", type=int, default=80, help="files clustered; the rest are placed afterwards")
    parser.add_argument("--strangers", type=int, default=20,
                        help="also place this many files of voices new to the run (see above)")
    parser.add_argument("--group-slack", type=float, nargs="+", default=[GROUP_SLACK],
                        help="how far beyond its farthest member a group takes a new slot (SlotClusterer)")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    if not 2 <= args.fit < args.files:
        parser.error("--fit must be at least 2 and below --files")
    bank = open_or_build_bank(BankSpec(), progress=False)
    stranger_bank = bank if args.split == "heldout" else \
        open_or_build_bank(BankSpec(engines=("espeak",), probe_voices=12), progress=False)
    embedder = Embedder.load(args.model)
    total = {slack: collections.Counter() for slack in args.group_slack}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            sources, rttm = corpus_truth(mixed_corpus(bank, Path(tmp) / "corpus", args.split, args.files, seed))
            store = indexed_store(embedder, sources[:args.fit], Path(tmp) / "store")
            heard = {like for source in sources[:args.fit] for like in source.likes}
            placing = [(sources[args.fit:], rttm)]
            if args.strangers:
                placing.append(corpus_truth(mixed_corpus(stranger_bank, Path(tmp) / "strangers", "validation",
                                                         args.strangers, seed + 1000)))
            placing = [(files, embedder.embed([f.path for f in files]), truth) for files, truth in placing]
            for slack in args.group_slack:
                run = cluster_store(store, SlotClusterer(group_slack=slack))
                leaders = group_leaders(store, sources[:args.fit], rttm, run)
                tally = sum((placed(store, run, files, sets, truth, leaders, heard) for files, sets, truth in placing),
                            collections.Counter())
                total[slack] += tally
                print(json.dumps({"split": args.split, "seed": seed, "group_slack": slack, "fitted_files": args.fit,
                                  "placed_files": args.files - args.fit, "stranger_files": args.strangers}
                                 | shares(tally)), flush=True)
    for slack in args.group_slack:
        print(json.dumps({"split": args.split, "seeds": args.seeds, "group_slack": slack, "all": True}
                         | shares(total[slack])))


if __name__ == "__main__":
    main()
