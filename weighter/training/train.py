"""Training the Weighter: from file-level likes (any manifest of real files) or from the
synthetic utterance bank with conversations mixed on the fly (how the default model is made).

The loop alone: the batches come from data.py, the losses each step minimises from losses.py
(its docstring says what each one teaches), the validation that ranks checkpoints from
calibration.py, and the settings from config.py (TrainConfig).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from weighter.audio import AudioSource, load_audio
from weighter.corpus import UtteranceBank
# The loop's parts live in calibration.py, config.py, data.py and losses.py; the names it does
# not use itself are re-exported for existing imports (weighter.training.train.<name>).
from weighter.training.calibration import (SPLIT_GRID, embed_items, embed_parts, recalibrate,  # noqa: F401
                                           score_cohort, set_input_level, split_items, validation_items)
from weighter.embedder.checkpoint import load_model, save_model
from weighter.training.config import TrainConfig, TrainResult
from weighter.training.data import (BankBatches, BankClips, ManifestBatches, StepBatches,  # noqa: F401
                                    auto_workers, made_batches, step_batches, training_threads, usable_cores)
from weighter.embedder.device import pick_device
from weighter.training.losses import (BALANCE_CAP, SEPARATION_COSINE, balanced_weights, bce,  # noqa: F401
                                      file_prediction, losses, margin_cross_entropy, match_slots,
                                      oracle_identity_loss, separation_loss, wbce)
from weighter.embedder.model import WeighterConfig, WeighterModel
from weighter.errors import AudioError, WeighterError
from weighter.evaluation import pair_calibrations, summarize

log = logging.getLogger(__name__)


def train(out: str | Path, cfg: TrainConfig, model_cfg: WeighterConfig, bank: UtteranceBank | None = None,
          sources: list[AudioSource] | None = None, resume: bool = False, progress: bool = True,
          init: str | Path | None = None) -> TrainResult:
    """Train and write the best model (by validation mAP) to ``out``; ``out``.ckpt resumes.

    Parameters
    ----------
    out : str or Path
        The model file to write (atomically) at each better validation.
    cfg : TrainConfig
        Steps, batch size, learning rate, conversation and validation settings.
    model_cfg : WeighterConfig
        The network to train (ignored with ``init``).
    bank : UtteranceBank or None
        Mix training conversations from its train split, validate on its validation split.
    sources : list of AudioSource or None
        Instead of a bank: real files with their likes (a tenth, whole files, validates).
    resume : bool, default False
        Continue from ``out``.ckpt where a run stopped.
    progress : bool, default True
        Show a progress bar.
    init : str, Path or None
        A trained model file to start from (fine-tuning): its configuration replaces
        ``model_cfg`` and its weights are loaded, all but the classifier head when its likes
        differ.

    Returns
    -------
    TrainResult
        The best validation mAP, its step, steps run and the validation history.

    Examples
    --------
    >>> result = train("m.pt", TrainConfig(steps=500), WeighterConfig(), bank=bank)  # doctest: +SKIP
    >>> result.best_step  # doctest: +SKIP
    500
    """
    out = Path(out)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    frame_rate = model_cfg.sample_rate / model_cfg.hop
    if bank is not None:
        data = BankBatches(bank, "train", cfg)
        val = validation_items(bank, "validation", cfg.val_files, cfg.seed + 1, frame_rate, telephone=cfg.telephone,
                               max_speakers=cfg.max_speakers)
    elif sources is not None:
        if len(sources) < 2:
            raise WeighterError(f"the manifest lists {len(sources)} file{'' if len(sources) == 1 else 's'}; training "
                                "needs at least 2 (a tenth of the files, at least one, is held out for validation)")
        cut = max(1, len(sources) // 10)  # a tenth of the manifest (whole files) for validation
        order = np.random.default_rng(cfg.seed).permutation(len(sources))
        held = [sources[i] for i in order[:cut]]
        data = ManifestBatches([sources[i] for i in order[cut:]], cfg)
        cfg.frame_supervision = 0.0
        val = []
        for s in held:
            try:
                val.append((load_audio(s.path, min_seconds=0.5)[: int(60 * 16000)], s.likes, None))
            except AudioError as error:
                log.warning("skipped: %s", error)
    else:
        raise WeighterError("train needs a bank or a manifest")
    if init is not None:  # fine-tuning: the init's architecture and weights, its head rows for the likes it knew
        start, init_meta = load_model(init)
        model_cfg = WeighterConfig.from_dict(init_meta.config)
    model_cfg.num_likes = len(data.likes)
    if cfg.margin is not None:
        model_cfg.margin = cfg.margin
    if cfg.input_level is not None:
        set_input_level(model_cfg, cfg.input_level)
    model = WeighterModel(model_cfg).to(device)
    if init is not None:
        weights = start.state_dict()
        known = {like: row for row, like in enumerate(init_meta.likes)}  # a head row per like
        new_rows = [row for row, like in enumerate(data.likes) if like in known]
        old_rows = [known[data.likes[row]] for row in new_rows]
        for name, fresh in model.state_dict().items():
            if name.startswith("like_"):  # rows of likes the init knew are kept, the others start fresh
                old, weights[name] = weights.get(name), fresh.clone()
                if new_rows:
                    weights[name][new_rows] = old[old_rows].to(fresh.device)  # the init loads on the CPU
        model.load_state_dict(weights)
        log.info("started from %s (head rows kept for %d of %d likes, the others new)", init, len(new_rows),
                 len(data.likes))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / cfg.steps))))
    step, best, best_step, stale, history = 0, -1.0, None, 0, []
    ckpt = out.with_name(out.name + ".ckpt")
    if resume and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        step, best, stale = int(state["step"]), float(state["best"]), int(state["stale"])
        best_step = state.get("best_step")  # None in checkpoints written before it was kept
        log.info("resumed from %s at step %d", ckpt, step)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="training", unit="step", disable=not progress, mininterval=1.0)
    metrics = {}
    clips = BankClips(bank, cfg, data.likes) if bank is not None and cfg.pretrain_steps else None
    loader = step_batches(data, clips, cfg, frame_rate, step, device, progress)
    with training_threads(device, loader.num_workers):
        batches = made_batches(loader)
        for kind, *batch in batches:
            with amp:
                if kind == "clips":
                    wave, who = batch
                    frames = model.frames(wave.to(device))  # (B, T, Cf)
                    uniform = torch.full((len(who), 1, frames.shape[1]), 1.0 / frames.shape[1], device=device)
                    pooled = model.pool(uniform, frames)[:, 0]
                    parts = {"pretrain": margin_cross_entropy(model, pooled, who.to(device))}
                    parts["total"] = parts["pretrain"]
                else:
                    wave, lengths, y, activity, speakers = batch
                    out_t = model(wave.to(device), None if lengths is None else lengths.to(device))
                    parts = losses(model, out_t, y.to(device), activity, speakers, cfg)
            opt.zero_grad(set_to_none=True)
            parts["total"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            schedule.step()
            step += 1
            bar.update(1)
            bar.set_postfix({k: f"{float(v.detach()):.3f}" for k, v in parts.items()}
                            | {"val_map": metrics.get("map", "-")})
            if (step % cfg.eval_every == 0 or step == cfg.steps) and step > cfg.pretrain_steps * (clips is not None):
                truths = embed_items(model, val, device)
                metrics = summarize(truths)
                metrics["step"] = step
                history.append(metrics)
                log.info("step %d: %s", step, metrics)
                score = metrics["map"] if math.isfinite(metrics["map"]) else 0.0  # nan: too few validation files
                if score > best:
                    best, best_step, stale = score, step, 0
                    save_model(out, model, data.likes, metrics["threshold"],
                               train=asdict(cfg) | {"init": str(init or "")}, metrics=metrics,
                               history=history, merge_cosine=metrics["merge_cosine"],
                               **pair_calibrations(truths, metrics["threshold"], metrics["merge_cosine"]))
                else:
                    stale += 1
                partial = ckpt.with_name(ckpt.name + ".tmp")  # a killed save leaves the previous checkpoint
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                            "schedule": schedule.state_dict(), "step": step, "best": best, "best_step": best_step,
                            "stale": stale}, partial)
                os.replace(partial, ckpt)
                if stale >= cfg.patience:
                    log.info("early stop at step %d: no better validation mAP in %d evaluations", step, stale)
                    break
        del batches  # an early stop leaves batches unmade: the workers stop here
    bar.close()
    return TrainResult(model=str(out), steps=step, best_step=best_step, best_score=best, score="map", history=history)
