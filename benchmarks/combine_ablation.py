"""Ablation (issue #3.3): how the slots combine into one file-level prediction per like, and the
loss on it, trained from file-level likes alone (the user's case: no frame truth), from
scratch, on the bank's train identities; scored on its validation split. One variant per
argument; each is a separate training with the same seed, batches and step count.

    python benchmarks/combine_ablation.py --variants sum max noisy_or sum:bce [--steps 500]

A variant is COMBINE[:LOSS] (LOSS wbce by default). Variants are independent: run them as
separate processes side by side (OMP_NUM_THREADS=1 each) to use both cores. Prints one JSON
line per variant: the last validation (count accuracy, mAP, slot EER) and the best mAP.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from weighter.corpus import BankSpec, open_or_build_bank
from weighter.embedder.model import WeighterConfig
from weighter.training.train import TrainConfig, train


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["sum", "max", "noisy_or"])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    bank = open_or_build_bank(BankSpec(), progress=False)
    for variant in args.variants:
        combine, _, loss = variant.partition(":")
        cfg = TrainConfig(steps=args.steps, eval_every=args.eval_every, val_files=60, patience=10 ** 6, combine=combine,
                          loss=loss or "wbce", frame_supervision=0.0, seed=args.seed)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            result = train(Path(tmp) / "m.pt", cfg, WeighterConfig(), bank=bank, progress=False)
        last = result.history[-1]
        print(json.dumps({"combine": combine, "loss": cfg.loss, "steps": result.steps,
                          "count_accuracy": last["count_accuracy"], "map": round(last["map"], 4),
                          "slot_eer": round(last["slot_eer"], 4), "best_map": round(result.best_score, 4),
                          "minutes": round((time.perf_counter() - started) / 60, 1)}), flush=True)


if __name__ == "__main__":
    main()
