"""Store build time, peak memory, query latency and recall at 100k to 10M slots.

Synthetic unit vectors stand in for slot embeddings at scale (clustered, like speakers: 2000
centres plus noise as large as a centre); files of 8 slots, all active (in the FAISS index)
unless ``--active`` says fewer. Build = atomic ``Store.apply`` calls of 1M slots each (SQLite
rows, FAISS index with its nprobe tuned on the store's own slots, every slot's statistics
against a score cohort of 1000 vectors; past 1M the store grows by deltas and new bases). Query = ``query_store`` for one file of 8
active slots (the query slots' statistics, FAISS search, normalised scores, grouping by file,
spans of the 10 best), timed whole and its FAISS search alone, with recall@10 of that search
against exact (brute-force) search (with compressed codes, ``rescore_agreement``: the share of
queries whose 10 results stay the same when 4x as many candidate files are re-scored): first for query files of speakers the corpus holds (new
draws around its centres), then, under "unseen_speakers", of speakers it never heard (new
centres: their 10 nearest stored slots share no like with them and scatter over the index);
under "reader", the first kind again through a read-only store opened afresh (as ``weighter
query`` and ``weighter serve`` read), after 20 queries that load it. Then the removal of one file (an atomic ``apply``: SQLite rows, FAISS update, the FAISS file
written again); under "after_a_commit", a reader's first query after a one-file commit by the
writer, and its next (medians of 5); and, under "new_base", a new base index written from SQLite by a fresh process
(the writer's own peak memory for it).

    python benchmarks/index_speed.py --vectors 100000 1000000
    python benchmarks/index_speed.py --vectors 1000000 --busy 1   # one CPU-bound process beside the queries
    python benchmarks/index_speed.py --vectors 10000000 --active 2   # 10M slots of calls: 2.5M in the index
    python benchmarks/index_speed.py --vectors 150000 --recall-curve   # what nprobe is tuned on
    python benchmarks/index_speed.py --vectors 100000 --index-type IVF1024,SQfp16   # not exact
    python benchmarks/index_speed.py --vectors 1000000 --lists-on-disk   # inverted lists in a mapped file
"""

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from weighter.embedding_set import EmbeddingSet
from weighter.index import Store, query_store
from weighter.index.query import _one_thread, search_depth
from weighter.scoring import COHORT_SIZE, Cohort

DIM = 256
SLOTS = 8


def make_vectors(n: int, rng, centres: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """n unit vectors around 2000 random centres (new ones unless given), and the centres."""
    if centres is None:
        centres = rng.normal(size=(2000, DIM)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 0.06, (n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), centres


def file_set(path: str, emb: np.ndarray) -> EmbeddingSet:
    """A file's embedding set of SLOTS slots: ``emb`` (A, E) its active ones, the rest inactive
    noise (in SQLite, not in the FAISS index)."""
    active = len(emb)
    if active < SLOTS:
        rest = np.random.default_rng(len(path)).normal(size=(SLOTS - active, DIM)).astype(np.float32)
        emb = np.concatenate([emb, rest / np.linalg.norm(rest, axis=1, keepdims=True)])
    flags = np.arange(SLOTS) < active
    return EmbeddingSet(path, emb, np.where(flags, 0.9, 0.1).astype(np.float32), flags,
                        np.zeros((SLOTS, 4), np.float32), 10.0, 0.4, "bench")


def sets_from(vectors: np.ndarray, active: int = SLOTS, first: int = 0):
    """(EmbeddingSet, hash) of files ``first``, ``first`` + 1, ...: ``active`` rows of ``vectors`` each."""
    for f in range(len(vectors) // active):
        yield file_set(f"/bench/f{first + f:08d}.flac", vectors[f * active:(f + 1) * active]), f"h{first + f}"


def active_ids(store: Store) -> np.ndarray:
    """The store's active slot ids in insertion order: row i of the vectors -> ids[i]."""
    return np.array([r[0] for r in store.db.execute("SELECT id FROM slots WHERE active = 1 ORDER BY id")])


def recall_at_10(found: np.ndarray, truth: np.ndarray, own: np.ndarray | None = None) -> float:
    """Mean share of each row's 10 true nearest (rows of the vectors) that the search found,
    each query's own row (``own``; stored slots used as queries) left out of both."""
    own = np.full(len(found), -1) if own is None else own
    return float(np.mean([len(set(f[f != o][:10]) & set(t[t != o][:10])) / 10 for f, t, o in zip(found, truth, own)]))


def timed_queries(store: Store, ids: np.ndarray, exact, qs: np.ndarray, queries: int) -> dict:
    """Latency of ``query_store`` for query files of SLOTS slots, of the FAISS search alone,
    and recall@10 of that search against ``exact`` search (``ids``: the store's active slots).
    Each query file is timed whole, then its search alone on the one thread a query searches
    on: side by side, so that the machine's drift moves both alike. FAISS on all its threads
    is timed after them (its idle OpenMP threads spin for a while after each search and would
    slow whatever runs next beside them)."""
    latencies, one_thread, search_only = [], [], []  # the whole query; FAISS alone on one thread; on all
    wanted = search_depth(store, 10)
    for q in range(queries):
        vectors = qs[q * SLOTS:(q + 1) * SLOTS]
        qset = file_set("/bench/query.flac", vectors)
        t = time.perf_counter()
        query_store(store, qset, k=10)
        latencies.append((time.perf_counter() - t) * 1000)
        with _one_thread():
            t = time.perf_counter()
            store.search(vectors, wanted)
            one_thread.append((time.perf_counter() - t) * 1000)
    for q in range(queries):
        t = time.perf_counter()
        store.search(qs[q * SLOTS:(q + 1) * SLOTS], wanted)
        search_only.append((time.perf_counter() - t) * 1000)
    probe = qs[:queries]
    recall = recall_at_10(np.searchsorted(ids, store.search(probe, 10)[1]), exact.search(probe, 10)[1])
    p50, faiss_p50, faiss_one = (float(np.percentile(x, 50)) for x in (latencies, search_only, one_thread))
    return {"query_p50_ms": round(p50, 2), "query_p99_ms": round(float(np.percentile(latencies, 99)), 2),
            "faiss_search_p50_ms": round(faiss_p50, 2), "faiss_search_one_thread_p50_ms": round(faiss_one, 2),
            "query_vs_faiss_p50": round(p50 / faiss_p50, 2), "query_vs_faiss_one_thread_p50": round(p50 / faiss_one, 2),
            "p99_vs_p50": round(float(np.percentile(latencies, 99)) / p50, 2), "recall@10": round(recall, 4)}


def rescore_agreement(store: Store, qs: np.ndarray, queries: int) -> float | None:
    """For compressed codes (8-bit, PQ): the share of query files whose 10 results (files and
    scores) are the same when 4x as many candidate files are re-scored exactly
    (``weighter.index.query.RESCORE_FILES``); None where the index scores exactly."""
    from weighter.index import query

    if store.exact_scores():
        return None
    sets = [file_set("/bench/query.flac", qs[q * SLOTS:(q + 1) * SLOTS]) for q in range(queries)]
    shipped = query.RESCORE_FILES
    try:
        ranked = [[(m.file, m.score) for m in query_store(store, s)] for s in sets]
        query.RESCORE_FILES = 4 * shipped
        wider = [[(m.file, m.score) for m in query_store(store, s)] for s in sets]
    finally:
        query.RESCORE_FILES = shipped
    return round(float(np.mean([a == b for a, b in zip(ranked, wider)])), 4)


def after_commits(store: Store, qs: np.ndarray, commits: int = 5) -> dict:
    """A reader's query after each of ``commits`` one-file commits by the writer (it catches up:
    the new delta, the statistics, what it keeps per generation), and its next query; medians in
    ms. The files are removed again after."""
    first, then = [], []
    query = file_set("/bench/query.flac", qs[:SLOTS])
    with Store(store.directory, read_only=True) as reader:
        for _ in range(3):  # loaded
            query_store(reader, query)
        for c in range(commits):
            with store.writing():
                store.apply([(file_set(f"/bench/after{c}.flac", make_vectors(SLOTS, np.random.default_rng(500 + c))[0]),
                              f"after{c}")])
            for times in (first, then):
                started = time.perf_counter()
                query_store(reader, query)
                times.append((time.perf_counter() - started) * 1000)
    with store.writing():
        store.apply([], [f"/bench/after{c}.flac" for c in range(commits)])
    return {"first_query_ms": round(float(np.median(first)), 2), "next_query_ms": round(float(np.median(then)), 2)}


def exact_index(vectors: np.ndarray):
    import faiss

    exact = faiss.IndexFlatIP(DIM)
    exact.add(vectors)
    return exact


def recall_curve(n: int, queries: int = 400) -> list[dict]:
    """Recall@10 by nprobe of the auto IVF index (the store's tuned nprobe aside) for three
    kinds of query: fresh draws of the corpus's speakers, stored slots that did not train the
    index (``tuning_slots``, what the store tunes on) and stored slots that did; each stored
    slot leaves out its own vector. Does tuning on the held-out slots stand for new recordings?"""
    import faiss

    from weighter.index.store import tuning_slots

    vectors, centres = make_vectors(n, np.random.default_rng(0))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "s", create=True)
        with store.writing():
            store.apply(list(sets_from(vectors)))
        ids = active_ids(store)
        index = store._load_index()
        exact = exact_index(vectors)
        held = np.flatnonzero(tuning_slots(ids))
        kinds = {"fresh": (make_vectors(queries, np.random.default_rng(3), centres)[0], None),
                 "held_out_slots": (vectors[held[:queries]], held[:queries])}
        trained = np.random.default_rng(9).choice(np.flatnonzero(~tuning_slots(ids)), queries, replace=False)
        kinds["training_slots"] = (vectors[trained], trained)
        truth = {kind: exact.search(q, 11)[1] for kind, (q, _) in kinds.items()}
        for nprobe in (1, 2, 4, 8, 16, 32):
            faiss.extract_index_ivf(index).nprobe = nprobe
            row = {"vectors": n, "nprobe": nprobe}
            for kind, (q, own) in kinds.items():
                row[kind] = round(recall_at_10(np.searchsorted(ids, index.search(q, 11)[1]), truth[kind], own), 4)
            rows.append(row)
    return rows


CHUNK_SLOTS = 1_000_000  # slots per apply while building: larger stores grow as a user's would, by writes


def run(n: int, queries: int = 200, index_type: str | None = None, busy: int = 0, active: int = SLOTS,
        tmp_dir: str | None = None, lists_on_disk: bool = False) -> dict:
    """One store of ``n`` slots (``active`` of each file's SLOTS in the index), built by applies
    of CHUNK_SLOTS slots, then timed queries, recall, a removal and a new base written by a fresh process; ``lists_on_disk``: an IVF
    base keeps its inverted lists in a file whatever its size (``Store.map_from_bytes`` 0)."""
    rng = np.random.default_rng(0)  # one apply of n <= CHUNK_SLOTS: the same vectors as one draw of n
    chunks, centres, files = [], None, 0
    with tempfile.TemporaryDirectory(dir=tmp_dir) as tmp:
        store = Store(Path(tmp) / "s", create=True)
        store.map_from_bytes = 0 if lists_on_disk else store.map_from_bytes
        started = time.perf_counter()
        while files * SLOTS < n:
            count = min(CHUNK_SLOTS, n - files * SLOTS) // SLOTS
            part, centres = make_vectors(count * active, rng, centres)
            with store.writing():  # with a score cohort as large as a model file carries: queries normalise
                store.apply(list(sets_from(part, active, files)), index_type=index_type,
                            score_cohort=Cohort(make_vectors(COHORT_SIZE, np.random.default_rng(2))[0]))
            chunks.append(part)
            files += count
            rng = np.random.default_rng(10 + len(chunks))
        build = time.perf_counter() - started
        build_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB, the build's peak
        vectors = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        del chunks
        info = store.info()
        # a query file of speakers the corpus holds (new recordings: fresh noise around its
        # centres), and one of speakers it never heard (new centres: no like to find)
        ids, exact = active_ids(store), exact_index(vectors)
        known_q = make_vectors(queries * SLOTS, np.random.default_rng(3), centres)[0]
        unseen_q = make_vectors(queries * SLOTS, np.random.default_rng(1))[0]
        with Busy(busy):
            known = timed_queries(store, ids, exact, known_q, queries)
            unseen = timed_queries(store, ids, exact, unseen_q, queries)
            # as `weighter query` and `weighter serve` read: a read-only store opened afresh
            with Store(store.directory, read_only=True) as reader:
                for q in range(20):  # its first queries load the index and the statistics
                    query_store(reader, file_set("/bench/query.flac", unseen_q[q * SLOTS:(q + 1) * SLOTS]))
                fresh = timed_queries(reader, ids, exact, known_q, queries)
        known["rescore_agreement"] = rescore_agreement(store, known_q, queries)
        unseen["rescore_agreement"] = rescore_agreement(store, unseen_q, queries)
        started = time.perf_counter()
        with store.writing():
            store.apply([], ["/bench/f00000000.flac"])
        remove = time.perf_counter() - started
        after = after_commits(store, known_q)
        new_base = rebuilt(store.directory, lists_on_disk)
    return {"vectors": n, "active_slots": int(len(ids)),
            "index_type": info.index_type, "nprobe": info.nprobe, "build_s": round(build, 1),
            "applies": -(-n // CHUNK_SLOTS), "deltas": info.deltas,
            "remove_one_file_s": round(remove, 1), "after_a_commit": after, "lists_file": info.lists_file,
            "new_base": new_base,
            "build_peak_rss_gb": round(build_rss, 2), "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            **known, "unseen_speakers": unseen, "reader": fresh, "query_slots": SLOTS, "scoring": info.scoring, "busy": busy}


def rebuilt(directory: Path, lists_on_disk: bool) -> dict:
    """A new base written from SQLite (``Store.apply(rebuild=True)``) by a fresh process: its
    time and that process's peak resident memory (the writer's cost of a new base alone),
    polled every 20 ms: its anonymous part (what the process holds) and its mapped file pages
    (SQLite's map, the lists file: the kernel drops them when memory runs short)."""
    import subprocess
    import sys

    code = f"""
import json, threading, time
from weighter.index import Store
# kB, polled: ru_maxrss counts mapped file pages (SQLite's, the lists'), and a child starts with its parent's
peak = {{"RssAnon": 0, "RssFile": 0}}
def poll():
    while True:
        for line in open("/proc/self/status"):
            key, _, value = line.partition(":")
            if key in peak:
                peak[key] = max(peak[key], int(value.split()[0]))
        time.sleep(0.02)
threading.Thread(target=poll, daemon=True).start()
store = Store({str(directory)!r})
store.map_from_bytes = {0 if lists_on_disk else 'store.map_from_bytes'}
started = time.perf_counter()
with store.writing():
    store.apply([], [], rebuild=True)
print(json.dumps({{"seconds": round(time.perf_counter() - started, 1), "lists_file": store.info().lists_file,
                  "peak_anonymous_gb": round(peak["RssAnon"] / 2**20, 2), "peak_file_pages_gb": round(peak["RssFile"] / 2**20, 2)}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


class Busy:
    """``count`` CPU-bound processes beside the queries (a machine that also indexes or trains),
    each stopping by itself after ``seconds`` at the latest."""

    def __init__(self, count: int, seconds: float = 900.0):
        import subprocess
        import sys

        code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    sum(range(10000))"
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]

    def __enter__(self):
        time.sleep(0.5 if self.procs else 0)  # let them start
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
            p.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--vectors", type=int, nargs="+", default=[100_000],
                        help="store sizes in slots (all active unless --active)")
    parser.add_argument("--active", type=int, default=SLOTS,
                        help=f"active slots (in the index) of each file's {SLOTS}, e.g. 2: a store of calls")
    parser.add_argument("--tmp", default=None, help="folder for the stores (default: the system's)")
    parser.add_argument("--index-type", default=None, help="a FAISS factory string instead of the store's choice")
    parser.add_argument("--busy", type=int, default=0,
                        help="CPU-bound processes running beside the queries (not the build), e.g. 1")
    parser.add_argument("--lists-on-disk", action="store_true",
                        help="an IVF base keeps its inverted lists in a memory-mapped file whatever its size")
    parser.add_argument("--recall-curve", action="store_true",
                        help="recall@10 by nprobe for fresh queries and for held-out and training slots, instead")
    args = parser.parse_args()
    for n in args.vectors:
        rows = recall_curve(n) if args.recall_curve else [run(n, index_type=args.index_type, busy=args.busy,
                                                               active=args.active, tmp_dir=args.tmp,
                                                               lists_on_disk=args.lists_on_disk)]
        for row in rows:
            print(json.dumps(row), flush=True)
