"""Training speed: seconds per step of the shipped recipe's training, and what makes a batch cost.

A step = one batch of 12 synthetic conversations (8-20 s, 1-4 speakers of the bank's train
split, noise, 20% telephone, 30% reverberant rooms, 30% MP3 / clipping / equaliser, as the
shipped model's later runs) through the shipped architecture (randomly initialised, a head
over the bank's train identities): forward, the losses, backward, AdamW. Each step's batch is
drawn with its own seeded generator, so every configuration trains on the same batches.

Printed per number of batch-making workers (``weighter train --workers``; the torch threads
are what ``train`` leaves itself): seconds per step over ``--steps`` steps after two of
warm-up. With ``--cached``, also the model's step alone: the same steps on batches made
beforehand and kept in memory (if it is much shorter than with workers, making batches sets
the pace, not the device). Then one process making batches alone, and its costliest parts
(cProfile).

    python benchmarks/train_speed.py [--workers 0 1 2] [--steps 20] [--cached] [--device cpu] [--bank DIR]
"""

import argparse
import cProfile
import json
import pstats
import time

import numpy as np
import torch

from weighter.corpus import BankSpec, UtteranceBank, open_or_build_bank
from weighter.embedder import DEFAULT_MODEL
from weighter.embedder.checkpoint import read_model_file
from weighter.embedder.model import WeighterConfig, WeighterModel
from weighter.training.train import (BankBatches, TrainConfig, auto_workers, losses, made_batches, step_batches,
                                     training_threads)

WARMUP = 2


def step_seconds(bank, cfg: TrainConfig, device: torch.device, cached: bool = False) -> tuple[float, int]:
    """Mean seconds per training step after WARMUP steps, and the torch threads it trained with;
    ``cached``: every batch made before the first step (the model's time alone)."""
    data = BankBatches(bank, "train", cfg)
    model_cfg = WeighterConfig.from_dict(read_model_file(DEFAULT_MODEL)["config"])
    model_cfg.num_likes = len(data.likes)
    model = WeighterModel(model_cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    frame_rate = model_cfg.sample_rate / model_cfg.hop
    loader = step_batches(data, None, cfg, frame_rate, 0, device)
    with training_threads(device, loader.num_workers):
        threads = torch.get_num_threads()
        batches = list(made_batches(loader)) if cached else made_batches(loader)
        for step, (_, wave, lengths, y, activity, speakers) in enumerate(batches):
            if step == WARMUP:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                started = time.perf_counter()
            out = model(wave.to(device))
            loss = losses(model, out, y.to(device), activity, speakers, cfg)["total"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - started) / (cfg.steps - WARMUP), threads


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, nargs="*", default=None,
                        help="numbers of workers to time (default: 0, 1 and train's default)")
    parser.add_argument("--steps", type=int, default=20, help="steps timed per configuration (after 2 of warm-up)")
    parser.add_argument("--batches", type=int, default=12, help="batches made alone for the cost breakdown")
    parser.add_argument("--cached", action="store_true", help="also time the steps on batches made beforehand")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bank", default=None, help="an utterance bank directory (default: the default bank)")
    args = parser.parse_args()
    device = torch.device(args.device)
    bank = UtteranceBank(args.bank) if args.bank else open_or_build_bank(BankSpec(), progress=False)
    recipe = dict(batch_size=12, min_seconds=8, max_seconds=20, reverb=0.3, distort=0.3, seed=0)
    for workers in args.workers if args.workers is not None else sorted({0, 1, auto_workers(device)}):
        cfg = TrainConfig(steps=args.steps + WARMUP, workers=workers, **recipe)
        seconds, threads = step_seconds(bank, cfg, device)
        print(json.dumps({"device": device.type, "workers": workers, "torch_threads": threads,
                          "s_per_step": round(seconds, 3), "steps_timed": args.steps}), flush=True)
    if args.cached:
        seconds, threads = step_seconds(bank, TrainConfig(steps=args.steps + WARMUP, workers=0, **recipe), device, True)
        print(json.dumps({"device": device.type, "batches": "made beforehand", "torch_threads": threads,
                          "model_s_per_step": round(seconds, 3), "steps_timed": args.steps}), flush=True)

    if not args.batches:
        return
    data = BankBatches(bank, "train", TrainConfig(**recipe))
    data.sample(np.random.default_rng([0, 0]), 100.0)  # the clips it needs decoded once, as a worker would
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    for k in range(1, args.batches + 1):
        data.sample(np.random.default_rng([0, k]), 100.0)
    profile.disable()
    total = (time.perf_counter() - started) / args.batches
    stats = pstats.Stats(profile).stats  # (file, line, name) -> (calls, _, own time, cumulative time, _)
    parts = {"noise (coloured, FFT)": "_noise", "telephone channel": "_telephone",
             "rooms (responses)": "room_responses", "rooms (convolution)": "fftconvolve",
             "distortions (mp3, clipping, equaliser)": "distort", "turn-taking walk": "_turns",
             "clips (decode, pick)": "_clip"}
    breakdown = {label: round(sum(v[3] for k, v in stats.items() if k[2] == name) / args.batches, 3)
                 for label, name in parts.items()}
    print(json.dumps({"one_process_s_per_batch": round(total, 3), "of_which_s": breakdown}))


if __name__ == "__main__":
    main()
