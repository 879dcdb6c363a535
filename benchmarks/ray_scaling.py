"""Index building on Ray against the single-process path, and the single writer's commit rate.

Embedding: ``add_files`` into a fresh store over the same corpus (``--minutes`` of audio in
files of about 45 s, made of real recordings, three speakers' turns one after the other),
first in this process (torch on ``--threads`` threads), then with ``RayEmbedder`` for each
``--pools`` entry ACTORSxCPUS on a local Ray of this machine's cores (the Ray start-up is timed
apart; each run's time includes its model loads, and on Ray its actors' start). Printed per
run: seconds, x real time, and against the single-process path; and the same for the marginal
rate, from a second run over the first half of the files (the second half's audio over the
time it added), where fixed start-up costs cancel: what a long build sees. With a CUDA device,
one GPU actor per GPU too.

Writer: the driver's part alone, ``Store.apply`` of ``--commit-files`` files per commit (what
``add_files`` commits), into a store already holding each ``--writer-slots`` size (filled in
large applies first): seconds per commit, stored and active slots per second. Random unit
vectors stand in for embeddings; each file has ``--slots`` slots, ``--active`` of them active,
and weightings of ``--timeline`` steps (450: a 45-s file at 10 Hz), with the shipped model's
score cohort, as a real build writes them.

    python benchmarks/ray_scaling.py                       # 30 min of audio; writer at 100k and 1M slots
    python benchmarks/ray_scaling.py --minutes 2 --writer-slots 20000   # a quick check that it runs
    python benchmarks/ray_scaling.py --skip-embed --writer-slots 1000000 --commits 5
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

VOICES = Path("/work/shared/real-speech/librispeech")
FILE_SECONDS = 45.0


def make_corpus(out: Path, minutes: float, voices: Path | None) -> float:
    """Files of about FILE_SECONDS made of recordings one after the other; returns the seconds written."""
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    if voices is not None and voices.is_dir():
        clips = [sf.read(str(p), dtype="float32")[0] for p in sorted(voices.rglob("*.flac"))]
    else:  # no recordings: the synthetic corpus of the default utterance bank (built once, cached)
        from weighter.corpus import BankSpec, MixerConfig, open_or_build_bank, write_corpus

        info = write_corpus(open_or_build_bank(BankSpec(), progress=False), out / "c", "heldout",
                            int(np.ceil(minutes * 60 / FILE_SECONDS)), MixerConfig(1, 4, 30, 60), progress=False)
        return float(info["audio_seconds"])
    total, n = 0.0, 0
    while total < minutes * 60:
        parts, seconds = [], 0.0
        while seconds < FILE_SECONDS:
            clip = clips[rng.integers(len(clips))]
            parts.append(np.roll(clip, int(rng.integers(len(clip)))))  # each file's bytes differ
            seconds += len(clip) / 16000
        audio = np.concatenate(parts)[:int(FILE_SECONDS * 16000)]
        sf.write(str(out / f"f{n:05d}.flac"), audio, 16000)
        total, n = total + len(audio) / 16000, n + 1
    return total


def build(files: list[Path], store_dir: Path, model: str | None, ray_embedder=None) -> tuple[float, dict]:
    from weighter.embedder import Embedder
    from weighter.index import Store, add_files

    started = time.perf_counter()
    embedder = Embedder.load(model, device="cpu")  # a command loads it too (on Ray: the driver, for hashing)
    with Store(store_dir, create=True) as store:
        result = add_files(store, embedder, files, errors=[],
                           embed=None if ray_embedder is None else ray_embedder.stream)
    return time.perf_counter() - started, result.to_dict()


def embedding_runs(args) -> None:
    import ray
    import torch

    from weighter.embedder.distributed import RayEmbedder, RayOptions

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        audio_s = make_corpus(Path(tmp) / "audio", args.minutes, Path(args.voices) if args.voices else None)
        files = sorted((Path(tmp) / "audio").rglob("*.flac"))
        print(json.dumps({"corpus_files": len(files), "audio_s": round(audio_s, 1)}), flush=True)

        half = files[:len(files) // 2]
        half_s = sum(sf.info(str(f)).duration for f in half)

        def report(what: str, seconds: float, result: dict, half_seconds: float,
                   single: tuple[float, float] | None = None) -> tuple[float, float]:
            rate, marginal = audio_s / seconds, (audio_s - half_s) / max(seconds - half_seconds, 1e-9)
            print(json.dumps({"what": what, "wall_s": round(seconds, 2), "x_realtime": round(rate, 1),
                              "half_wall_s": round(half_seconds, 2), "x_realtime_marginal": round(marginal, 1),
                              "files": result["added"], "active_slots": result["active_slots"],
                              **({"vs_single_process": round(rate / single[0], 3),
                                  "vs_single_process_marginal": round(marginal / single[1], 3)} if single else {})}),
                  flush=True)
            return rate, marginal

        build(files[:1], Path(tmp) / "warm", args.model)  # warm-up: caches
        half_seconds, _ = build(half, Path(tmp) / "single-half", args.model)
        seconds, result = build(files, Path(tmp) / "single", args.model)
        single = report(f"single process, torch {args.threads} threads", seconds, result, half_seconds)

        started = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        print(json.dumps({"what": "ray.init (local, start-up)", "wall_s": round(time.perf_counter() - started, 2)}),
              flush=True)
        pools = [tuple(int(v) for v in p.split("x")) for p in args.pools]
        runs = [(f"ray {a} actor(s) x {c} CPU", RayOptions(actors=a, cpus_per_actor=c, batch_size=args.batch))
                for a, c in pools]
        if torch.cuda.is_available():
            gpus = torch.cuda.device_count()
            runs.append((f"ray {gpus} GPU actor(s)",
                         RayOptions(actors=gpus, gpus_per_actor=1.0, batch_size=args.batch)))
        else:
            print(json.dumps({"what": "ray GPU actors", "skipped": "no CUDA device on this machine"}), flush=True)
        for i, (what, options) in enumerate(runs):
            with RayEmbedder(args.model, options) as ray_embedder:
                half_seconds, _ = build(half, Path(tmp) / f"ray{i}-half", args.model, ray_embedder)
            with RayEmbedder(args.model, options) as ray_embedder:
                seconds, result = build(files, Path(tmp) / f"ray{i}", args.model, ray_embedder)
            report(what, seconds, result, half_seconds, single)
        ray.shutdown()


def writer_runs(args) -> None:
    from weighter.embedder import Embedder
    from weighter.embedding_set import EmbeddingSet
    from weighter.index import Store
    from weighter.index.store import DELTA_SHARE

    cohort = Embedder.load(args.model, device="cpu").score_cohort
    rng = np.random.default_rng(0)
    dim, slots, active = 256, args.slots, args.active
    flags = np.arange(slots) < active
    weightings = rng.random((slots, args.timeline)).astype(np.float32)
    counter = iter(range(10**9))

    def file_sets(n: int) -> list:
        out = []
        for _ in range(n):
            f = next(counter)
            emb = rng.normal(size=(slots, dim)).astype(np.float32)
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
            s = EmbeddingSet(f"/bench/f{f:08d}.flac", emb, np.where(flags, 0.9, 0.1).astype(np.float32), flags,
                             weightings, 10.0, args.timeline / 10.0, "bench")
            out.append((s, f"h{f}"))
        return out

    def commits(store, n: int, share: float) -> list[float]:
        """Seconds of ``n`` commits of --commit-files files each, deltas allowed up to ``share``."""
        store.delta_share = share
        times = []
        for _ in range(n):
            batch = file_sets(args.commit_files)
            t = time.perf_counter()
            store.apply(batch, score_cohort=cohort)
            times.append(time.perf_counter() - t)
        return times

    baseline = None
    for size in args.writer_slots:
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp, Store(Path(tmp) / "s", create=True) as store, \
                store.writing():
            started, stored = time.perf_counter(), 0
            while stored < size:  # fill in large applies (each writes a new base)
                n = min(20_000, (size - stored) // slots) or 1
                store.apply(file_sets(n), score_cohort=cohort)
                stored += n * slots
            fill, before = time.perf_counter() - started, store.info().to_dict()
            new = commits(store, args.commits, DELTA_SHARE)  # deltas: what a commit costs now
            t = time.perf_counter()
            store.optimize()  # the new base those deltas lead to, sooner or later
            merge = time.perf_counter() - t
            old = commits(store, args.commits, 0.0)  # every commit writes a new base: the cost before deltas
            commit, rewrite = float(np.median(new)), float(np.median(old))
            # a new base is written once the deltas reach DELTA_SHARE of the base: per commit, its share of one merge
            per_base = DELTA_SHARE * before["active_slots"] / (args.commit_files * active)
            amortised = commit + merge / max(per_base, 1.0)
            baseline = baseline or (commit, amortised, rewrite)
            info = store.info().to_dict()
            print(json.dumps({"what": f"writer: commits of {args.commit_files} files into a store of {size} slots",
                              "store_slots": before["slots"], "store_active_slots": before["active_slots"],
                              "index_type": info["index_type"], "fill_s": round(fill, 1),
                              "commit_s_median": round(commit, 3), "commit_s_runs": [round(t, 3) for t in new],
                              "new_base_s": round(merge, 3), "commit_with_its_share_of_a_new_base_s": round(amortised, 3),
                              "commit_rewriting_the_index_s_median": round(rewrite, 3),
                              "commit_rewriting_the_index_s_runs": [round(t, 3) for t in old],
                              "commit_vs_smallest_store": round(commit / baseline[0], 2),
                              "amortised_vs_smallest_store": round(amortised / baseline[1], 2),
                              "rewriting_vs_smallest_store": round(rewrite / baseline[2], 2),
                              "files_per_s": round(args.commit_files / commit, 1),
                              "slots_per_s": round(args.commit_files * slots / commit),
                              "active_slots_per_s": round(args.commit_files * active / commit),
                              "peak_rss_gb": round(_peak_rss_gb(), 2),
                              "store_mb": round(sum(p.stat().st_size for p in store.directory.iterdir()) / 2**20)}),
                  flush=True)
    for size in args.build_slots:  # a build by commits, as add_files makes it: deltas against rewrites
        result = {"what": f"build of {size} slots by commits of {args.commit_files} files"}
        for label, share in (("deltas", DELTA_SHARE), ("rewriting", 0.0)):
            with tempfile.TemporaryDirectory(dir=args.tmp) as tmp, Store(Path(tmp) / "s", create=True) as store, \
                    store.writing():
                t, stored = time.perf_counter(), 0
                while stored < size:
                    commits(store, 1, share)
                    stored += args.commit_files * slots
                result[f"{label}_s"] = round(time.perf_counter() - t, 1)
                result[f"{label}_check"] = store.check() == []
        result["speed_up"] = round(result["rewriting_s"] / result["deltas_s"], 2)
        print(json.dumps(result), flush=True)


def _peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of audio in the corpus")
    parser.add_argument("--voices", default=str(VOICES) if VOICES.is_dir() else None,
                        help="recordings (*.flac, 16 kHz) the corpus is made of; none: the synthetic bank")
    parser.add_argument("--model", default=None, help="model file (default: the shipped model)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the single-process path")
    parser.add_argument("--pools", nargs="*", default=["1x2", "1x1", "2x1"], help="Ray pools, ACTORSxCPUS each")
    parser.add_argument("--batch", type=int, default=16, help="files per Ray task")
    parser.add_argument("--writer-slots", type=int, nargs="*", default=[100_000, 1_000_000],
                        help="store sizes (slots) the writer's commits are timed at")
    parser.add_argument("--commit-files", type=int, default=500, help="files per commit (add_files' default)")
    parser.add_argument("--commits", type=int, default=5, help="timed commits per size and kind (median reported)")
    parser.add_argument("--build-slots", type=int, nargs="*", default=[1_000_000],
                        help="builds by commits timed with deltas and with a rewrite at every commit")
    parser.add_argument("--tmp", default=None, help="folder for the benchmark's stores (default: the system's)")
    parser.add_argument("--slots", type=int, default=8, help="slots per file")
    parser.add_argument("--active", type=int, default=2, help="active slots per file")
    parser.add_argument("--timeline", type=int, default=450, help="weighting steps per slot (10 Hz)")
    parser.add_argument("--skip-embed", action="store_true")
    parser.add_argument("--skip-writer", action="store_true")
    args = parser.parse_args()
    if not args.skip_embed:
        embedding_runs(args)
    if not args.skip_writer:
        writer_runs(args)


if __name__ == "__main__":
    main()
