"""The research's claims (WEIGHTER.md), reproduced on its vector simulation; issue 6 §4.

a. Learned weighter vs time-blind clustering (k-means with the true k; HDBSCAN after PCA-5),
   next to the ceiling that perfect frame labels give and a time-aware baseline with nothing
   learnt (k-means on frames smoothed over 15 frames): sigma90 per method, at three turn lengths
   and one long file. The learned weighter is trained twice per setting: from file-level likes
   alone (the research's supervision) and with the frame truth added.
b-e. Variants of the weighter at one setting, each trained the same way: confidence from a
   separate output Y (averaged over time; averaged with W) vs X averaged with weights X; wBCE vs
   BCE; without the x15 time downsampling; transposed-convolution upsampling. Quality here;
   memory and speed of the downsampling choice on the audio model (60 s of audio, random weights).

Every figure is measured by this script; see weighter/research.py for the definitions.

    python benchmarks/claims.py [--steps 2500] [--slow-steps 1000] [--test-files 200] [--json docs/claims.json]
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np

from weighter.research import (Recipe, Setting, ceiling, count_accuracy, hdbscan_pca, kmeans, learned_share,
                               make_files, pools, separated_share, sigma90, smoothed_kmeans, train_vector_weighter,
                               vector_config)

GRID = np.round(np.concatenate([np.arange(0.05, 1.0, 0.05), np.arange(1.0, 3.01, 0.1)]), 3)
TURNS = [Setting(step=0.1), Setting(step=0.03), Setting(step=0.01)]
LONG = Setting(frames=1500, step=0.01)  # long calls: runs of ~100 frames, ~600 frames per speaker
VARIANT_SETTING = Setting(step=0.03)
VARIANT_SIGMA = 0.3  # where counting and separation are compared between variants
VARIANTS = {  # name: (model config changes, recipe changes, steps: None = --steps, else --slow-steps)
    "X weighted by X (default)": ({}, {}, None),
    "Y averaged over time": ({"confidence": "y_mean"}, {}, None),
    "Y weighted by W": ({"confidence": "y_weighted"}, {}, None),
    "BCE instead of wBCE": ({}, {"loss": "bce"}, None),
    "transposed-conv upsampling": ({"upsample": "transposed"}, {}, None),
    "X weighted by X (default), fewer steps": ({}, {}, "slow"),
    "no x15 downsampling, fewer steps": ({"time_strides": (1, 1)}, {}, "slow"),  # ~15x the CPU time per step
}
BASELINES = {"ceiling (true frame labels)": ceiling, "k-means, true k": kmeans, "HDBSCAN after PCA-5": hdbscan_pca,
             "k-means on 15-frame averages": smoothed_kmeans(15)}


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def baselines(setting: Setting, test, limit: int) -> dict:
    out = {}
    for name, estimator in BASELINES.items():
        started = time.perf_counter()
        value, _ = sigma90(lambda s: separated_share(test, s, estimator, limit=limit), GRID)
        out[name] = round(value, 3)
        log(f"  {setting.describe()}: {name} sigma90 {value:.3f} ({time.perf_counter() - started:.0f} s)")
    return out


def learned(setting: Setting, test, calibration, train_pool, recipe: Recipe, changes: dict) -> dict:
    config = vector_config(setting, **changes)
    model, info = train_vector_weighter(setting, config, recipe, train_pool)
    value, _ = sigma90(lambda s: learned_share(model, test, s), GRID)
    threshold, counted = count_accuracy(model, calibration, test, VARIANT_SIGMA)
    result = {"sigma90": round(value, 3), f"separated@{VARIANT_SIGMA}": round(learned_share(model, test, VARIANT_SIGMA), 3),
              f"count@{VARIANT_SIGMA}": round(counted, 3), "train_s": round(info["seconds"], 1),
              "final_loss": round(info["final_loss"], 3)}
    log(f"  {setting.describe()} {changes} {recipe.loss} frame_truth={recipe.frame_truth}: {result}")
    return result


def audio_cost(strides: tuple[int, int]) -> dict:
    """Peak RSS and time of one forward pass over 60 s of audio (random weights), in a fresh process."""
    code = f"""
import json, resource, time, torch
from weighter.embedder.model import WeighterConfig, WeighterModel
torch.manual_seed(0)
model = WeighterModel(WeighterConfig(time_strides={strides!r})).eval()
wave = torch.randn(1, 16000 * 60) * 0.1
with torch.inference_mode():
    model(wave[:, :16000 * 5])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    model(wave)
    seconds = time.perf_counter() - started
print(json.dumps({{"forward_s": round(seconds, 3), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "rss_growth_mb": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2500, help="training steps per learned model")
    parser.add_argument("--slow-steps", type=int, default=1000,
                        help="steps for the pair compared with and without the x15 downsampling")
    parser.add_argument("--test-files", type=int, default=200)
    parser.add_argument("--baseline-files", type=int, default=100, help="test files for the (slower) baselines")
    parser.add_argument("--frame-truth", type=float, default=10.0, help="weight of the frame-truth loss when used")
    parser.add_argument("--json", help="also write all figures to this file")
    args = parser.parse_args()
    started = time.time()
    report = {"separated_cosine": 0.9, "steps": args.steps, "test_files": args.test_files, "turns": [], "variants": {}}

    def prepare(setting: Setting):
        train_pool, test_pool = pools(setting)
        return (train_pool, make_files(setting, args.test_files, test_pool, seed=11),
                make_files(setting, args.test_files, train_pool, seed=12))

    from weighter.corpus.vectors import switch_rate

    variant_base = None
    for setting in TURNS + [LONG]:
        train_pool, test, calibration = prepare(setting)
        row = {"setting": setting.describe(), "switches_per_frame": round(switch_rate(test.labels), 4),
               "mean_speakers": round(float(test.likes.sum(1).mean()), 2),
               "frames_per_speaker": round(setting.frames / float(test.likes.sum(1).mean()), 1)}
        row.update(baselines(setting, test, args.baseline_files))
        recipe = Recipe(steps=args.steps, sigma_max=1.2 if setting is not LONG else 2.5)
        row["learned, likes alone"] = learned(setting, test, calibration, train_pool, recipe, {})
        row["learned, likes + frame truth"] = learned(setting, test, calibration, train_pool,
                                                      replace(recipe, frame_truth=args.frame_truth), {})
        if setting == VARIANT_SETTING:
            variant_base = row["learned, likes alone"]
        report["turns"].append(row)
        print(json.dumps(row), flush=True)

    train_pool, test, calibration = prepare(VARIANT_SETTING)
    for name, (changes, recipe_changes, budget) in VARIANTS.items():
        steps = args.steps if budget is None else args.slow_steps
        if not changes and not recipe_changes and budget is None and variant_base is not None:
            result = variant_base
        else:
            result = learned(VARIANT_SETTING, test, calibration, train_pool,
                             replace(Recipe(steps=steps, sigma_max=1.2), **recipe_changes), changes)
        report["variants"][name] = {"steps": steps, **result}
        print(json.dumps({"variant": name, "setting": VARIANT_SETTING.describe(), "supervision": "likes alone",
                          **report["variants"][name]}), flush=True)
    for strides in [(3, 5), (1, 1)]:
        cost = audio_cost(strides)
        report.setdefault("audio_cost_60s", {})[f"time/{strides[0] * strides[1]}"] = cost
        print(json.dumps({"audio model, 60 s, time /": strides[0] * strides[1], **cost}), flush=True)

    _table(report)
    print(f"total {time.time() - started:.0f} s, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


def _sigma(value: float) -> str:
    return f"< {GRID[0]}" if value == 0 else str(value)


def _table(report: dict) -> None:
    methods = list(BASELINES) + ["learned, likes alone", "learned, likes + frame truth"]
    print("\nsigma90 (largest noise with >= 90% of files separated):")
    print("| setting | switches/frame | " + " | ".join(methods) + " | best learned / k-means | ceiling / k-means |")
    print("|" + "---|" * (len(methods) + 4))
    for row in report["turns"]:
        cells = [_sigma(row[m] if m in BASELINES else row[m]["sigma90"]) for m in methods]
        km = row["k-means, true k"] or float("nan")
        best = max(row[m]["sigma90"] for m in methods[-2:])
        print(f"| {row['setting']} | {row['switches_per_frame']} | " + " | ".join(cells)
              + f" | {best / km:.2f} | {row['ceiling (true frame labels)'] / km:.2f} |")
    print(f"\nvariants ({VARIANT_SETTING.describe()}, likes alone):")
    keys = list(next(iter(report["variants"].values())))
    print("| variant | " + " | ".join(keys) + " |")
    print("|" + "---|" * (len(keys) + 1))
    for name, result in report["variants"].items():
        print(f"| {name} | " + " | ".join(str(result[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
