"""Time and peak memory of `weighter export` as the store grows and its files get long.

`weighter export` writes who speaks when in every stored file (RTTM and CSV): each active
slot's spans from its weighting over time (10 Hz: 36 KB of float16 an hour). For each store
size in ``--slots``: a store of files of 8 active slots and ``--seconds`` each, whose
weightings switch between speech and silence every 2-20 s (synthetic vectors, no clustering
run: every slot is ``unknown_S``, unless ``--cluster`` clusters it first), then `weighter
export --rttm --csv` in a fresh process, its wall time and its peak memory polled every 20 ms
(anonymous: what the process holds; file pages: SQLite's map, which the kernel can drop).

    python benchmarks/export_scale.py                          # 100k slots of 30-minute files
    python benchmarks/export_scale.py --slots 20000 200000 --seconds 300 --cluster
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from query_timelines import SLOTS, file_set, vectors
from weighter.index import Store
from weighter.scoring import COHORT_SIZE, Cohort

DIM = 256
WRITE_FILES = 2000  # files per apply while the store is built


def build(directory: Path, slots: int, seconds: float) -> None:
    """A store of ``slots`` active slots in files of ``seconds``, written WRITE_FILES files at a time."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2000, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cohort = Cohort(vectors(COHORT_SIZE, np.random.default_rng(2), centres))
    with Store(directory, create=True) as store:
        files = slots // SLOTS
        for first in range(0, files, WRITE_FILES):
            count = min(WRITE_FILES, files - first)
            part = vectors(count * SLOTS, rng, centres)
            with store.writing():
                store.apply([(file_set(f"/bench/f{first + f:07d}.flac", part[f * SLOTS:(f + 1) * SLOTS], rng, seconds),
                              f"h{first + f}") for f in range(count)], score_cohort=cohort)


def measured(command: list[str]) -> dict:
    """Run ``command`` in a fresh process: wall seconds and peak memory, polled every 20 ms."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = {"RssAnon": 0, "RssFile": 0}  # kB
    while process.poll() is None:
        try:
            for line in open(f"/proc/{process.pid}/status"):
                key, _, value = line.partition(":")
                if key in peak:
                    peak[key] = max(peak[key], int(value.split()[0]))
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.02)
    error = process.communicate()[1]
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed: {error.strip()[-500:]}")
    return {"seconds": round(time.perf_counter() - started, 1), "peak_anonymous_gb": round(peak["RssAnon"] / 2**20, 2),
            "peak_file_pages_gb": round(peak["RssFile"] / 2**20, 2)}


def run(slots: int, seconds: float, cluster: bool, tmp: str) -> dict:
    directory, out = Path(tmp) / "store", Path(tmp)
    started = time.perf_counter()
    build(directory, slots, seconds)
    row = {"slots": slots, "seconds_per_file": seconds, "build_s": round(time.perf_counter() - started, 1),
           "sqlite_gb": round((directory / "store.sqlite").stat().st_size / 2**30, 2)}
    weighter = [sys.executable, "-m", "weighter.cli", "-q"]
    if cluster:
        row["cluster"] = measured(weighter + ["cluster", "--store", str(directory)])
    row["export"] = measured(weighter + ["export", "--store", str(directory), "--rttm", str(out / "who.rttm"),
                                         "--csv", str(out / "who.csv")])
    row["rttm_lines"] = sum(1 for _ in open(out / "who.rttm"))
    return row


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, nargs="+", default=[100_000], help="active slots, one store per value")
    parser.add_argument("--seconds", type=float, default=1800, help="length of every stored file")
    parser.add_argument("--cluster", action="store_true", help="`weighter cluster` the store first (timed too)")
    parser.add_argument("--tmp", default=None, help="folder for the stores (default: the system's)")
    args = parser.parse_args()
    for slots in args.slots:
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            print(json.dumps(run(slots, args.seconds, args.cluster, tmp)), flush=True)
