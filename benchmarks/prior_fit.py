"""Does the corpus-fitted base rate help p, and which clustering links files better, by corpus size?

Mixes corpora of the *validation* speakers (14 real readers; never the report split) in the
conditions of ``benchmarks/real_speech.py`` at several sizes, indexes each with the shipped
model (or ``--model``), and prints per size and condition, as means over the corpora:

- the expected calibration error of the query's ``p`` over every query's top 10 and the link
  F1 of thresholded ``p`` (p >= 0.5), with the base rate the store fitted to its own pairs
  (``weighter.index.pair_model``) and with the calibration's stated rate;
- the fitted minus the true share of file pairs that share a voice;
- the file-pair link F1 of the default clustering (``SlotClusterer``) and of the evidence-graph
  clustering (``GraphClusterer``, ``weighter cluster --on evidence``) on the fitted p.

    python benchmarks/prior_fit.py [--sizes 12 24 60] [--corpora 15 3 3] [--conditions noise channels clean]

Fourteen speakers make dense corpora (a speaker in about a sixth of the files, 22-30% of file
pairs sharing a voice): these figures say how p and the clusterers behave as the corpus grows,
not what a corpus of many people gives (``benchmarks/real_speech.py`` does that).
"""

import json
import tempfile
from pathlib import Path

import numpy as np

from common import corpus_truth, indexed_store
from real_speech import CONDITIONS, calibration_error, checked_voices, corpus_arguments
from weighter.cluster import SlotClusterer, cluster_store
from weighter.cluster.graph import GraphClusterer
from weighter.corpus import write_corpus
from weighter.corpus.recordings import RecordingBank
from weighter.embedder import Embedder
from weighter.evaluation import linking_f1


def main():
    parser = corpus_arguments(__doc__.split("\n\n")[0])
    parser.set_defaults(split="validation")
    parser.add_argument("--sizes", type=int, nargs="+", default=[12, 24, 60], help="files per corpus")
    parser.add_argument("--corpora", type=int, nargs="+", default=[15, 3, 3], help="corpora per size")
    args = parser.parse_args()
    if len(args.corpora) != len(args.sizes):
        raise SystemExit(f"--corpora needs one count per size ({len(args.sizes)}), got {len(args.corpora)}")
    bank = RecordingBank(checked_voices(args))
    embedder = Embedder.load(args.model)
    summaries = []
    for files, corpora in zip(args.sizes, args.corpora):
        for condition in args.conditions:
            rows = [corpus_figures(bank, embedder, args.split, files, 1000 * files + seed, CONDITIONS[condition])
                    for seed in range(corpora)]
            summary = {"files": files, "condition": condition, "corpora": corpora, "split": args.split} | {
                key: round(float(np.mean([r[key] for r in rows])), 4) for key in rows[0]}
            print(json.dumps(summary), flush=True)
            summaries.append(summary)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summaries, indent=1))


def corpus_figures(bank, embedder, split: str, files: int, seed: int, mix) -> dict:
    """One corpus: p's ECE and thresholded link F1 with the fitted and the stated base rate,
    the prior's error, and both clusterers' link F1."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_corpus(bank, tmp / "corpus", split, files, mix, seed=seed, progress=False)
        sources, _ = corpus_truth(tmp / "corpus")
        store = indexed_store(embedder, sources, tmp / "store")
        likes = [set(s.likes) for s in sources]
        true_share = float(np.mean([bool(likes[i] & likes[j]) for i in range(files) for j in range(i + 1, files)]))
        fitted = json.loads(store.meta("pair_prior") or "null")
        row = {"true_share": true_share, "prior_error": (fitted["prior"] if fitted else 0.03) - true_share}
        row["ece_fitted"], _, row["threshold_f1_fitted"] = calibration_error(store, sources)
        row["embedding_link_f1"] = _link_f1(store, SlotClusterer(), sources)
        row["graph_link_f1"] = _link_f1(store, GraphClusterer(), sources)
        with store.writing():
            store.set_meta("pair_prior", "")  # the calibration's stated rate
        row["ece_stated"], _, row["threshold_f1_stated"] = calibration_error(store, sources)
        store.close()
    return row


def _link_f1(store, clusterer, sources) -> float:
    run = cluster_store(store, clusterer)
    groups = {}
    for file_id, group in store.db.execute("SELECT s.file_id, m.group_id FROM cluster_members m JOIN slots s "
                                           "ON s.id = m.slot_id WHERE m.run_id = ? AND m.group_id >= 0", (run,)):
        groups.setdefault(file_id, set()).add(group)
    return linking_f1([groups.get(store.file_id(s.path), set()) for s in sources], [set(s.likes) for s in sources])["f1"]


if __name__ == "__main__":
    main()
