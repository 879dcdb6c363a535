"""Clustering time and peak memory at 100k and 1M slots on this machine.

Synthetic slot embeddings (2000 speakers, unit vectors plus noise) go through the same
``SlotClusterer`` that ``weighter cluster`` uses (its default space: PCA 64 with capped
whitening and unit length; HDBSCAN on a sample of at most 30k,
the rest assigned); ARI against the true speakers shows it still finds them.

    python benchmarks/cluster_speed.py --slots 100000 1000000 [--pca-dims 64] [--split-evidence 5]
    python benchmarks/cluster_speed.py --slots 100000 --on evidence

``--split-evidence`` also tests every group for two voices (``weighter cluster --split-evidence``).
``--on evidence`` times ``GraphClusterer`` (``weighter cluster --on evidence``) instead, each slot
its own file, p a logistic of the cosine (p = 0.5 at cosine 0.5; one speaker's slots meet at about 0.7), neighbours by exact FAISS search;
past 100k slots by the IVF index a store of that size holds (its build and nprobe tuning timed too).
"""

import argparse
import json
import resource
import time

import numpy as np
from sklearn.metrics import adjusted_rand_score

from weighter.cluster import SlotClusterer
from weighter.cluster.graph import GraphClusterer
from weighter.index.faiss_index import EXACT_LIMIT


def outliers_alone(labels: np.ndarray) -> np.ndarray:
    """Each outlier its own label (as ``weighter evaluate`` scores them), not one giant group."""
    out = labels.copy()
    noise = np.flatnonzero(out < 0)
    out[noise] = out.max() + 1 + np.arange(len(noise))
    return out


def link_probability(cos, a=None, b=None):
    """The benchmark's p of a slot pair: 0.5 at cosine 0.5 (one speaker's slots meet at about 0.7)."""
    return 1 / (1 + np.exp(-40 * (cos - 0.5)))


def ivf_graph(x: np.ndarray, neighbours: int):
    """The evidence graph as ``cluster_store`` builds it for a store past EXACT_LIMIT slots: each
    slot's nearest slots by the IVF index the store would hold (``auto_factory``, nprobe tuned
    on its own slots), every slot its own file."""
    from weighter.cluster.graph import neighbour_graph, other_file_neighbours
    from weighter.index.faiss_index import SlotSource, auto_factory, build_index, tuned_nprobe

    ids = np.arange(len(x), dtype=np.int64)
    source = SlotSource.of(ids, x)
    index = build_index(auto_factory(len(x)), x.shape[1], source)
    index.nprobe = tuned_nprobe(index, source)
    cos, idx = [], []
    for start in range(0, len(x), 65_536):
        c, i = index.search(x[start:start + 65_536], neighbours + 2)
        cos.append(c)
        idx.append(i)
    cos, idx = np.concatenate(cos), np.concatenate(idx)
    files = np.arange(len(x))
    idx = other_file_neighbours(idx, files, neighbours)
    return neighbour_graph(idx, np.where(idx >= 0, link_probability(cos), 0.0), files)


def run(n: int, pca_dims: int, split_evidence: float | None = None, on: str = "embeddings") -> dict:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2000, 256)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = rng.integers(0, 2000, n)
    x = centres[truth] + rng.normal(0, 0.04, (n, 256)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    started = time.perf_counter()
    if on == "evidence" and n > EXACT_LIMIT:  # as a store of that size: neighbours from its IVF index
        c = GraphClusterer().fit_graph(ivf_graph(x, GraphClusterer().neighbours), np.arange(n))
    elif on == "evidence":
        c = GraphClusterer().fit(x, pair_probability=link_probability)
    else:
        c = SlotClusterer(pca_dims=pca_dims, split_evidence=split_evidence).fit(x)
    seconds = time.perf_counter() - started
    return {"slots": n, "on": on} | ({"pca_dims": pca_dims} if on == "embeddings" else {}) | ({} if split_evidence is None else {
            "split_evidence": split_evidence, "groups_split": c.groups_split_}) | {
            "seconds": round(seconds, 1), "groups": int(c.labels_.max() + 1),
            "outlier_share": round(float((c.labels_ < 0).mean()), 4),
            "ari": round(float(adjusted_rand_score(truth, outliers_alone(c.labels_))), 4),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--slots", type=int, nargs="+", default=[100_000])
    parser.add_argument("--pca-dims", type=int, default=SlotClusterer().pca_dims)
    parser.add_argument("--split-evidence", type=float, default=None,
                        help="split groups holding two voices at this BIC evidence (default: no splitting)")
    parser.add_argument("--on", choices=["embeddings", "evidence"], default="embeddings",
                        help="what HDBSCAN groups, as weighter cluster --on")
    args = parser.parse_args()
    for n in args.slots:
        print(json.dumps(run(n, args.pca_dims, args.split_evidence, args.on)), flush=True)
