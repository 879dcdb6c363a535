"""Saving and loading models safely: ``torch.load(weights_only=True)``, never arbitrary pickle.

A model file is a dict of tensors and plain values: format, package version, model id,
config, the training likes, the calibrated activity threshold, training settings, metrics.
"""

from __future__ import annotations

import hashlib
import json
import io
import os
from pathlib import Path

import torch

from weighter import __version__
from weighter.embedder.model import WeighterConfig, WeighterModel
from weighter.errors import WeighterError

MODEL_FORMAT = 1


def model_id(state_dict: dict, config: dict | None = None) -> str:
    """Weights and the configuration (pooling changes the embeddings of the same weights)."""
    digest = hashlib.sha256()
    if config is not None:
        digest.update(json.dumps(config, sort_keys=True).encode())
    for key in sorted(state_dict):
        digest.update(key.encode())
        digest.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return "weighter-" + digest.hexdigest()[:12]


def save_model(path: str | Path, model: WeighterModel, likes: list[str], threshold: float,
               train: dict | None = None, metrics: dict | None = None, extra: dict | None = None) -> str:
    """Write atomically (temp file + rename): a killed save leaves the old file intact."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ident = model_id(state, model.config.to_dict())
    payload = {"format": MODEL_FORMAT, "version": __version__, "model_id": ident, "config": model.config.to_dict(),
               "state_dict": state, "likes": list(likes), "threshold": float(threshold),
               "train": train or {}, "metrics": metrics or {}}
    payload.update(extra or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return ident


def read_model_file(path: str | Path) -> dict:
    """A model file's payload (configuration, weights, calibration), loaded without pickled code.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    dict
        ``format``, ``config``, ``state_dict``, ``model_id`` and what calibration recorded.

    Raises
    ------
    WeighterError
        Missing, unreadable, not a model file, or a format this version does not read.
    """
    path = Path(path)
    if not path.exists():
        raise WeighterError(f"{path}: no such model file")
    try:
        data = path.read_bytes()
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated or foreign files
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise WeighterError(f"{path}: not a readable weighter model (corrupt, truncated or not a model: {reason})") from None
    if not isinstance(payload, dict) or "format" not in payload or "state_dict" not in payload:
        raise WeighterError(f"{path}: not a weighter model file (missing format or weights)")
    if payload["format"] != MODEL_FORMAT:
        raise WeighterError(f"{path}: model format {payload['format']} is not supported by weighter {__version__} "
                            f"(expects {MODEL_FORMAT})")
    return payload


def load_model(path: str | Path) -> tuple[WeighterModel, dict]:
    """A model file's network (in evaluation mode, on the CPU) and its payload.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    model : WeighterModel
    payload : dict
        As ``read_model_file`` returns it.

    Raises
    ------
    WeighterError
        As ``read_model_file``, or weights that do not fit this version's network.

    Examples
    --------
    >>> from weighter.embedder import DEFAULT_MODEL
    >>> from weighter.embedder.checkpoint import load_model
    >>> model, payload = load_model(DEFAULT_MODEL)  # doctest: +SKIP
    >>> payload["model_id"]  # doctest: +SKIP
    'weighter-...'
    """
    payload = read_model_file(path)
    try:
        model = WeighterModel(WeighterConfig.from_dict(payload["config"]))
        model.load_state_dict(payload["state_dict"])
    except (TypeError, KeyError, ValueError, RuntimeError) as error:  # ValueError: an unknown config choice
        reason = str(error).strip().splitlines()[0][:160]
        raise WeighterError(f"{path}: model does not match this weighter version ({reason})") from None
    model.eval()
    return model, payload
