"""Runs the benchmarks and writes docs/results.md: every figure next to the command that
produced it, copied from the command's own output (nothing typed by hand).

    python benchmarks/results.py [--only synth embed train index cluster quality robustness real claims]

``claims`` trains 14 small models (over an hour on 2 cores) and the ``combine ablation``
runs train 4 and 2 (25 and 53 min, variants side by side); these run only when named in
``--only``, as do ``gpu session`` and ``gpu fine-tunes`` (they need a CUDA machine) and
``related run 13`` (a 37-min training, then calibration and two sweeps: recorded, its
command a summary) and ``candidates, whitened clustering`` (model files kept outside the
repo). ``--stdout-from FILE`` records a run's saved standard output (``python
benchmarks/claims.py > FILE``) instead of running it again, for one name given with ``--only``.
"""

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = "python"
RUNS = {
    "synth": [f"{PY} benchmarks/synth_speed.py"],
    "embed": [f"{PY} benchmarks/embed_speed.py --hours 1 3"],
    "train": [f"{PY} benchmarks/train_speed.py --cached"],
    "index": [f"{PY} benchmarks/index_speed.py --vectors 100000 1000000"],
    "index 100k as IVF": [f"{PY} benchmarks/index_speed.py --vectors 100000 --index-type IVF1024,SQfp16"],
    "index recall by nprobe": [f"{PY} benchmarks/index_speed.py --vectors 150000 1000000 --recall-curve"],
    "cluster": [f"{PY} benchmarks/cluster_speed.py --slots 100000 1000000"],
    "quality": [f"{PY} benchmarks/quality.py --files 100"],
    "quality, five corpora": [
        f"{PY} benchmarks/quality.py --files 100 --seeds 7 8 9 10 11 --baselines classic-weighter"],
    "score norm": [f"{PY} benchmarks/score_norm.py"],
    "robustness": [f"{PY} benchmarks/robustness.py --files 100"],
    "real": [f"{PY} benchmarks/real_speech.py"],
    "enrolment": [f"{PY} benchmarks/enrolment.py"],
    "index 1M, query against FAISS": [f"{PY} benchmarks/index_speed.py --vectors 1000000"],
    "index 1M busy, query against FAISS": [f"{PY} benchmarks/index_speed.py --vectors 1000000 --busy 1"],
    "index 1M and 10M slots of calls, query against FAISS": [
        f"{PY} benchmarks/index_speed.py --vectors 1000000 10000000 --active 2 --tmp /tmp"],
    "index 1M, 8-bit codes": [f"{PY} benchmarks/index_speed.py --vectors 1000000 --index-type IVF4096,SQ8"],
    "query by file length": [f"{PY} benchmarks/query_timelines.py"],
    "export of 100k slots of 30-minute files": [f"{PY} benchmarks/export_scale.py --tmp /tmp"],
    "serve pages, 1M clustered slots": [f"{PY} benchmarks/serve_load.py --slots 1000000 --cluster --seconds 0 --pages --json"],
    "writer deltas": [f"{PY} benchmarks/ray_scaling.py --skip-embed --writer-slots 100000 1000000 --build-slots 1000000"],
    "writer deltas 10M": [f"{PY} benchmarks/ray_scaling.py --skip-embed --writer-slots 100000 10000000 --build-slots "
                          "--tmp /tmp/bench10m"],
    # sweeps from before the fifteenth session's whitening carry --whiten off: they rerun as they ran (plain PCA)
    "cluster tuning": [f"{PY} benchmarks/cluster_tuning.py --whiten off"],
    "cluster tuning, five corpora": [
        f"{PY} benchmarks/cluster_tuning.py --seeds 5 6 7 8 9 --pca 64 --min-cluster-sizes 2 3 4 5 --whiten off"],
    "cluster tuning, probe voices": [f"{PY} benchmarks/cluster_tuning.py --probe-voices 12 --seeds 5 6 7 8 9 --pca 64 "
                                     "--min-samples 1 --methods eom --whiten off"],
    "cluster whitening": [f"{PY} benchmarks/cluster_tuning.py --seeds 5 6 7 8 9 --pca 32 64 --whiten on off "
                          "--min-samples 1 --methods eom"],
    "cluster whitening, probe voices": [f"{PY} benchmarks/cluster_tuning.py --seeds 5 6 7 8 9 --pca 32 64 --whiten on "
                                        "off --min-samples 1 --methods eom --probe-voices 12"],
    "cluster whitening, fresh validation": [f"{PY} benchmarks/cluster_tuning.py --seeds 10 11 12 13 14 --pca 32 64 "
                                           "--whiten on off --min-samples 1 --methods eom"],
    "cluster whitening, second probe": [
        f"{PY} benchmarks/cluster_tuning.py --probe-voices 12 --bank-seed 1 --seeds 5 6 7 8 9 --pca 32 64 "
        "--whiten on off --min-samples 1 --methods eom"],
    "cluster outlier assignment": [f"{PY} benchmarks/cluster_tuning.py --seeds 5 6 7 8 9 --pca 64 --min-samples 1 "
                                   "--methods eom --assign-outliers 0.0 0.1 0.3 0.5 --whiten off"],
    "cluster persistence": [f"{PY} benchmarks/cluster_persistence.py"],
    "cluster group split, fresh validation": [
        f"{PY} benchmarks/cluster_tuning.py --seeds 20 21 22 23 24 --pca 64 --min-samples 1 --methods eom "
        "--split-evidence none 5"],
    "cluster group split, third probe": [
        f"{PY} benchmarks/cluster_tuning.py --probe-voices 12 --bank-seed 3 --seeds 5 6 7 8 9 --pca 64 "
        "--min-samples 1 --methods eom --split-evidence none 5"],
    "cluster group split, speed": [f"{PY} benchmarks/cluster_speed.py --slots 100000 --split-evidence 5"],
    "cluster assign": [f"{PY} benchmarks/cluster_assign.py --split heldout --seeds 7 8 9 10 11"],
    "cluster assign, group slack": [
        f"{PY} benchmarks/cluster_assign.py --split validation --seeds 5 6 7 --group-slack 2.0 1.5 1.25 1.0"],
    "probe check": [f"{PY} benchmarks/probe_check.py"],
    "confusions": [f"{PY} benchmarks/confusions.py --split heldout"],
    "count errors": [f"{PY} benchmarks/count_errors.py"],
    "count errors, held-out": [f"{PY} benchmarks/count_errors.py --split heldout --seeds 7 8 9 10 11"],
    "no speech": [f"{PY} benchmarks/no_speech.py --files 12 --seed 1"],
    "no speech, held-out calls": [f"{PY} benchmarks/no_speech.py --files 12 --seed 2 --split heldout"],
    "speech gate, no speech": [f"{PY} benchmarks/no_speech.py --files 12 --seed 2 --split heldout --speech-gate 0.2"],
    "speech gate, five corpora": [f"{PY} benchmarks/quality.py --files 100 --seeds 7 8 9 10 11 --speech-gate 0.2"],
    "speech gate, speed": [f"{PY} benchmarks/embed_speed.py --hours 1 --speech-gate 0.2",
                           f"{PY} benchmarks/embed_speed.py --hours 1"],
    "claims": [f"{PY} benchmarks/claims.py --json docs/claims.json"],
    "gpu session": ["OUT=/tmp/gpu TRAIN_SECONDS=400 bash benchmarks/gpu_session.sh; "
                    "cat /tmp/gpu/env.txt /tmp/gpu/speed.jsonl"],
    "gpu fine-tunes": ["STEPS=4400 SPEEDS=0 WORKERS=12 TRAIN_SECONDS=500 bash benchmarks/gpu_session.sh; "
                       "INIT=.carry/init.pt LR=1e-4 SEED=9 STEPS=1800 EVALS=3 SPEEDS=0 WORKERS=12 TRAIN_SECONDS=200 "
                       "bash benchmarks/gpu_session.sh; then here weighter calibrate and cluster_tuning.py of each"],
    "related run 13": ["weighter -v train --synthetic --invented-voices 100 --source-siblings 100 --init default "
                       "--out r13.pt --steps 900 --lr 3e-4 --reverb 0.3 --distort 0.3 --related 0.2 --eval-every 300 "
                       "--patience 20 --seed 10; then weighter calibrate and cluster_tuning.py (probe, validation)"],
    "large-margin run 14": [
        "weighter -v train --synthetic --invented-voices 100 --source-siblings 100 --init default --out r14.pt --steps "
        "1200 --lr 3e-4 --margin 0.4 --reverb 0.3 --distort 0.3 --eval-every 400 --patience 20 --seed 11; weighter -v "
        "calibrate r14.pt --invented-voices 100 --source-siblings 100; then for M in shipped r14.pt: python "
        "benchmarks/cluster_tuning.py --probe-voices 12 --bank-seed 2 --seeds 5 6 7 8 9 --pca 64 --min-samples 1 "
        "--methods eom [--model M], and the same with --seeds 15 16 17 18 19 and no probe"],
    "non-speech run 15": [
        "weighter -v train --synthetic --invented-voices 100 --source-siblings 100 --init default --out ns.pt --steps "
        "1200 --lr 3e-4 --reverb 0.3 --distort 0.3 --empty 0.1 --sounds 0.2 --eval-every 400 --patience 20 --seed 12; "
        "weighter -v calibrate ns.pt --invented-voices 100 --source-siblings 100; then for M in shipped ns.pt: python "
        "benchmarks/no_speech.py --files 12 --seed 1 [--model M]; python benchmarks/cluster_tuning.py --seeds 25 26 27 "
        "28 29 --pca 64 --min-samples 1 --methods eom [--model M]; python benchmarks/real_speech.py [--model M]"],
    "six-speaker run 16": [
        "weighter -v train --synthetic --invented-voices 100 --source-siblings 100 --init default --out r16.pt --steps "
        "1200 --lr 3e-4 --reverb 0.3 --distort 0.3 --max-speakers 6 --eval-every 400 --patience 20 --seed 13; weighter "
        "-v calibrate r16.pt --invented-voices 100 --source-siblings 100 --max-speakers 4; then for M in shipped r16.pt: "
        "python benchmarks/cluster_tuning.py --seeds 25 26 27 28 29 --pca 64 --min-samples 1 --methods eom [--model M]; "
        "python benchmarks/robustness.py --split validation --files 100 --only 'as generated' '5-6 speakers' "
        "[--model M]; python benchmarks/count_errors.py --model r16.pt"],
    "separation run 17": [
        "weighter -v train --synthetic --invented-voices 100 --source-siblings 100 --init default --out r17.pt --steps "
        "1200 --lr 3e-4 --reverb 0.3 --distort 0.3 --separation 5 --eval-every 400 --patience 20 --seed 14; weighter "
        "-v calibrate r17.pt --invented-voices 100 --source-siblings 100; then for M in shipped r17.pt: python "
        "benchmarks/cluster_tuning.py --seeds 30 31 32 33 34 --pca 64 --min-samples 1 --methods eom [--model M]; "
        "python benchmarks/count_errors.py --model r17.pt"],
    "candidates, whitened clustering": [
        "for M in gpu11-step3300 avg-B; do for B in '' '--probe-voices 12'; do echo \"== $M $B\"; python "
        "benchmarks/cluster_tuning.py --seeds 5 6 7 8 9 --pca 32 --whiten on --min-samples 1 --methods eom $B "
        "--model ~/.cache/weighter/candidates/$M.pt; done; done"],
    "combine ablation 500": [f"{PY} benchmarks/combine_ablation.py --variants sum max noisy_or sum:bce"],
    "combine ablation 1500": [f"{PY} benchmarks/combine_ablation.py --variants sum max --steps 1500 --eval-every 500"],
}
# Run only when named in --only: long runs; runs on a lent GPU machine (the device tool) and
# runs of model files kept outside the repo, both recorded with --stdout-from.
SLOW = ("claims", "writer deltas 10M", "index 1M and 10M slots of calls, query against FAISS", "combine ablation 500", "combine ablation 1500", "gpu session", "gpu fine-tunes", "related run 13",
        "candidates, whitened clustering", "large-margin run 14", "non-speech run 15",
        "six-speaker run 16", "separation run 17")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", default=[name for name in RUNS if name not in SLOW])
    parser.add_argument("--stdout-from", help="the saved stdout of the one run named by --only (not run again)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    args = parser.parse_args()
    out = Path(args.out)
    sections = _read_sections(out)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    if args.stdout_from and (len(args.only) != 1 or len(RUNS[args.only[0]]) != 1):
        parser.error("--stdout-from needs exactly one run name in --only")
    for name in args.only:
        blocks = []
        for command in RUNS[name]:
            if args.stdout_from:
                lines = [l for l in Path(args.stdout_from).read_text().splitlines() if l.strip()]
                blocks.append(f"```\n$ {command}\n" + "\n".join(lines) + "\n```\n(recorded output of an earlier run)")
                continue
            started = time.time()
            done = subprocess.run(command.replace(PY, sys.executable, 1), shell=True, cwd=ROOT, capture_output=True,
                                  text=True, env=env)
            lines = [l for l in done.stdout.splitlines() if l.strip()]
            if done.returncode != 0:
                lines.append(f"FAILED (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
            blocks.append(f"```\n$ {command}\n" + "\n".join(lines)
                          + f"\n```\n({time.time() - started:.0f} s wall, {datetime.date.today().isoformat()}, {_cpu()})")
        sections[name] = "\n\n".join(blocks)
        _write(out, sections)
        print(f"{name}: done", flush=True)


def _cpu() -> str:
    """The CPU a block ran on: its model and widest vector unit. The machines this project
    gets differ: the same index benchmark built 1M vectors in 60 s on one and in 226 s on
    another (a 2 GHz AMD EPYC with AVX2, no AVX-512)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), "?")
    flags = set(next((l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")), []))
    vector = next((f for f in ("avx512f", "avx2", "avx") if f in flags), "no AVX")
    return f"{model}, {vector}"


def _read_sections(path: Path) -> dict:
    sections = {}
    if path.exists():
        current = None
        for line in path.read_text().splitlines():
            if line.startswith("## "):
                current = line[3:].strip()
                sections[current] = []
            elif current:
                sections[current].append(line)
        sections = {k: "\n".join(v).strip() for k, v in sections.items() if k in RUNS}
    return sections


def _write(path: Path, sections: dict) -> None:
    head = ["# Measured results", "",
            "Written by `python benchmarks/results.py`: each block is a command and its own output, run on",
            f"this project's machine ({os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()});",
            f"last written {datetime.date.today().isoformat()}. JSON lines are the scripts' figures.", ""]
    body = [f"## {name}\n\n{sections[name]}\n" for name in RUNS if name in sections]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(head + body))


if __name__ == "__main__":
    main()
