"""Does a group's persistence say how far to trust it? And does a corpus where nobody speaks
in two files give itself away?

    python benchmarks/cluster_persistence.py [--model M] [--files 100]

For six standard 100-file corpora (held-out seeds 7 and 8, validation 5 and 6, the probe of
near-identical voices 5 and 6, `weighter bank --engines espeak --probe-voices 12`), every
group of the default clustering run is binned by its persistence (hdbscan's
cluster_persistence_) with its link precision: the share of its file pairs that truly share a
speaker. Then corpora with no recurring speaker: from each corpus, one single-speaker file per
speaker (clustered alone), and random unit vectors of 256 dimensions (12, 50, 300). For each,
the strongest persistence of any group, against clusterer.LOW_PERSISTENCE. Prints one JSON
object.
"""

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from common import corpus_truth, indexed_store, mixed_corpus
from weighter.cluster import SlotClusterer, cluster_store, run_result
from weighter.cluster.clusterer import LOW_PERSISTENCE
from weighter.corpus import BankSpec, open_or_build_bank
from weighter.embedder import Embedder

CORPORA = (("heldout", 7), ("heldout", 8), ("validation", 5), ("validation", 6), ("probe", 5), ("probe", 6))
BINS = (0, 0.02, 0.05, 0.1, 0.2, 0.4, 1.01)


def strongest(x: np.ndarray) -> dict:
    c = SlotClusterer().fit(x)
    return {"slots": len(x), "groups": len(c.persistence_),
            "strongest_persistence": round(float(c.persistence_.max()), 3) if len(c.persistence_) else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--files", type=int, default=100)
    args = parser.parse_args()
    embedder = Embedder.load(args.model)
    banks = {"default": open_or_build_bank(BankSpec(), progress=False),
             "probe": open_or_build_bank(BankSpec(engines=("espeak",), probe_voices=12), progress=False)}
    groups, corpora, no_recurring = [], [], {}
    for kind, seed in CORPORA:
        bank, split = (banks["probe"], "validation") if kind == "probe" else (banks["default"], kind)
        with tempfile.TemporaryDirectory() as tmp:
            sources, _ = corpus_truth(mixed_corpus(bank, Path(tmp) / "corpus", split, args.files, seed))
            store = indexed_store(embedder, sources, Path(tmp) / "store")
            result = run_result(store, cluster_store(store, SlotClusterer()), with_spans=False)
            likes = {str(Path(s.path).resolve()): set(s.likes) for s in sources}
            for g in result["groups"]:
                files = sorted({m["file"] for m in g["members"]})
                pairs = [(a, b) for i, a in enumerate(files) for b in files[i + 1:]]
                precision = float(np.mean([bool(likes[a] & likes[b]) for a, b in pairs])) if pairs else None
                groups.append((g["persistence"], precision))
            corpora.append({"corpus": f"{kind} {seed}", "groups": result["run"]["groups"],
                            "strongest_persistence": result["run"]["strongest_persistence"]})
            # nobody recurs: one single-speaker file per speaker, its active slots
            seen, keep = set(), []
            for s in sources:
                if len(s.likes) == 1 and s.likes[0] not in seen:
                    seen.add(s.likes[0])
                    keep.append(store.active_slots_of([store.file_id(s.path)])[2])
            no_recurring[f"{kind} {seed}, one file per speaker"] = strongest(np.concatenate(keep))
            store.close()
    rng = np.random.default_rng(0)
    for n in (12, 50, 300):
        r = rng.standard_normal((n, 256))
        no_recurring[f"random, {n} unit vectors"] = strongest((r / np.linalg.norm(r, axis=1, keepdims=True)).astype(np.float32))
    table = []
    p = np.array([g[0] for g in groups])
    for lo, hi in zip(BINS, BINS[1:]):
        inside = [prec for per, prec in groups if lo <= per < hi and prec is not None]
        table.append({"persistence": f"{lo}-{min(hi, 1)}", "groups": int(((p >= lo) & (p < hi)).sum()),
                      "link_precision": round(float(np.mean(inside)), 3) if inside else None})
    print(json.dumps({"model": embedder.model_id, "low_persistence": LOW_PERSISTENCE, "corpora": corpora,
                      "groups_by_persistence": table, "no_recurring_speaker": no_recurring}, indent=1))


if __name__ == "__main__":
    main()
