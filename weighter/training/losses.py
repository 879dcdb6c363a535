"""The training losses of the Weighter, and the per-slot pieces they are made of.

Per batch of B files, K training likes, N slots:
- file loss (always): p = sigmoid(cosine logits) (B, N, K); the slots combine into one
  prediction per like, P = file_prediction(p, C) (B, K); wBCE(y, P) summed over likes.
- frame supervision (synthetic corpora only, weight ``frame_supervision``; 0 = likes alone):
  slots are matched one-to-one to the true speakers (Hungarian, on BCE between X and each
  speaker's activity); matched slots learn that activity and their speaker's identity
  (cross-entropy), unmatched slots learn silence. This fights two traps:
  several slots on one speaker, and confident slots that cover only a few frames.

Kept apart from the network (model.py), so that inference loads none of them, and from the
loop (train.py), so that cached.py's trainer and research.py's simulation use them without it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from weighter.training.config import TrainConfig
from weighter.embedder.model import WeighterModel

BALANCE_CAP = 8.0  # TrainConfig.balance_activity: at most this weight on a frame
SEPARATION_COSINE = 0.4  # TrainConfig.separation: two speakers' slots of one file should be less alike than this


def file_prediction(p: torch.Tensor, confidence: torch.Tensor, combine: str) -> torch.Tensor:
    """How N slots make one prediction per like. p (B, N, K) per-slot probabilities, confidence
    (B, N) -> (B, K).

    sum: expected number of slots that hold the like (a Poisson rate, paired with wBCE: a second
         slot on the same like costs, which fights slot collapse); max: the best slot; noisy_or:
         1 - prod(1 - C p).
    """
    q = confidence[..., None] * p  # (B, N, K)
    if combine == "sum":
        return q.sum(1)
    if combine == "max":
        return q.max(1).values
    if combine == "noisy_or":
        return 1 - torch.prod(1 - q.clamp(max=1 - 1e-6), dim=1)
    raise ValueError(f"unknown slot combination {combine!r} (sum, max, noisy_or)")


def wbce(y: torch.Tensor, p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Elementwise -y ln p + p: BCE's minimum (p = y), a gradient bounded by 1 where y = 0, and
    the Poisson log-loss, so p may exceed 1 (the ``sum`` combination) and is penalised for it."""
    return -y * torch.log(p.clamp(min=eps)) + p


def bce(y: torch.Tensor, p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Elementwise binary cross-entropy (p clipped into (0, 1)); written out, as CUDA autocast
    refuses F.binary_cross_entropy."""
    p = p.clamp(eps, 1 - eps)
    return -(y * torch.log(p) + (1 - y) * torch.log1p(-p))


def match_slots(x: torch.Tensor, activity: torch.Tensor) -> tuple:
    """Slots matched one-to-one to speakers (Hungarian) by the BCE between each slot's X (N, T)
    and each speaker's activity (S, T): index arrays (rows, cols), slot rows[i] <-> speaker cols[i]."""
    from scipy.optimize import linear_sum_assignment

    xc = x.detach().float().clamp(1e-5, 1 - 1e-5)[:, None]  # (N, 1, T)
    a = activity.to(xc)[None]  # (1, S, T)
    cost = -(a * torch.log(xc) + (1 - a) * torch.log(1 - xc)).mean(-1)  # (N, S)
    return linear_sum_assignment(cost.cpu().numpy())


def losses(model: WeighterModel, out: dict, y: torch.Tensor, activity, speakers, cfg: TrainConfig) -> dict:
    """The batch's losses by name (the file loss always; the frame, identity and separation
    losses as ``cfg`` and the frame truth allow); see the module docstring."""
    logits = model.like_logits(out["embeddings"])  # (B, N, K)
    p_file = file_prediction(torch.sigmoid(logits), out["confidence"], cfg.combine)  # (B, K)
    per_like = wbce(y, p_file) if cfg.loss == "wbce" else bce(y, p_file.clamp(max=1.0))
    result = {"file": per_like.sum(1).mean()}
    if activity is not None and cfg.frame_supervision > 0:
        x, mask = out["x"].float(), out["mask"]  # (B, N, T), (B, T); float32 under autocast too
        act_loss, id_loss, sep_loss = [], [], []
        for b, a in enumerate(activity):
            t = x.shape[2]
            a = F.pad(a, (0, max(0, t - a.shape[1])))[:, :t].to(x.device)  # (S_b, T)
            target = torch.zeros_like(x[b])
            weight = mask[b].to(x.dtype).expand_as(x[b])  # (N, T), a view: copied only when balanced
            if len(a):
                rows, cols = match_slots(x[b], a)
                target[rows] = a[cols]
                matched = out["embeddings"][b, rows]
                id_loss.append(margin_cross_entropy(model, matched, torch.tensor(speakers[b], device=x.device)[cols]))
                if cfg.separation > 0 and len(rows) > 1:
                    sep_loss.append(separation_loss(matched))
                if cfg.balance_activity:
                    weight = weight.clone()
                    weight[rows] = balanced_weights(target[rows], weight[rows])
            act_loss.append((bce(target, x[b]) * weight).sum() / mask[b].sum().clamp(min=1))
        result["activity"] = torch.stack(act_loss).mean()
        if id_loss:
            result["identity"] = torch.stack(id_loss).mean()
        if sep_loss:
            result["separation"] = torch.stack(sep_loss).mean()
        result["oracle"] = oracle_identity_loss(model, out["frames"], activity, speakers)
    result["total"] = result["file"] + cfg.frame_supervision * (
        result.get("activity", 0) + result.get("identity", 0) + result.get("oracle", 0)) + \
        cfg.separation * result.get("separation", 0)
    return result


def separation_loss(embeddings: torch.Tensor) -> torch.Tensor:
    """Slots of one file matched to different speakers (M, E), unit length: the mean over
    their pairs of how far their cosine exceeds SEPARATION_COSINE (0 when all are below it).
    The duplicate merge takes two slots of one file this alike for one voice."""
    e = embeddings.float()
    i, j = torch.triu_indices(len(e), len(e), 1, device=e.device)
    return F.relu((e[i] * e[j]).sum(-1) - SEPARATION_COSINE).mean()


def balanced_weights(target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per row of ``target`` (M, T) (a matched slot's speaker activity, 0/1), frame weights that
    give its speech and its silence half of the row's valid frames (``valid`` (M, T), 0/1) each,
    every weight capped at BALANCE_CAP (a row of speech or silence alone keeps weight 1)."""
    valid_frames = valid.sum(1, keepdim=True)
    speech = (target * valid).sum(1, keepdim=True)
    silence = valid_frames - speech
    both = (speech > 0) & (silence > 0)
    w_speech = torch.where(both, valid_frames / (2 * speech.clamp(min=1)), 1.0).clamp(max=BALANCE_CAP)
    w_silence = torch.where(both, valid_frames / (2 * silence.clamp(min=1)), 1.0).clamp(max=BALANCE_CAP)
    return valid * torch.where(target > 0.5, w_speech, w_silence)


def margin_cross_entropy(model: WeighterModel, embeddings: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """AM-softmax: cross-entropy over the training likes with the target's cosine lowered by a margin."""
    logits = model.like_logits(embeddings)  # (M, K)
    margin = torch.zeros_like(logits).scatter_(1, target[:, None], model.config.margin * model.config.cos_scale)
    return F.cross_entropy(logits - margin, target)


def oracle_identity_loss(model: WeighterModel, frames: torch.Tensor, activity, speakers) -> torch.Tensor:
    """Frame truth as pre-training: pool each speaker's own frames (the RTTM as weights) and
    classify the result. Teaches frame features and projection speaker identity from step one,
    before the weighter has learnt to find the speakers."""
    b, t, _ = frames.shape
    s_max = max(len(a) for a in activity)
    if s_max == 0:
        return frames.sum() * 0
    weights = torch.zeros(b, s_max, t, device=frames.device)
    targets, rows = [], []
    for i, a in enumerate(activity):
        if len(a):
            a = F.pad(a, (0, max(0, t - a.shape[1])))[:, :t].to(frames.device)
            weights[i, :len(a)] = a / a.sum(1, keepdim=True).clamp(min=1)
            rows += [(i, j) for j in range(len(a)) if a[j].sum() > 0]
            targets += [speakers[i][j] for j in range(len(a)) if a[j].sum() > 0]
    emb = model.pool(weights, frames)  # (B, S_max, E)
    picked = torch.stack([emb[i, j] for i, j in rows])
    return margin_cross_entropy(model, picked, torch.tensor(targets, device=frames.device))
