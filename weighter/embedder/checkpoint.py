"""Saving and loading models safely: ``torch.load(weights_only=True)``, never arbitrary pickle.

A model file is a dict of tensors and plain values: its format, the weights, and the fields of
``ModelMetadata`` (model id, config, likes, calibration, training settings, metrics). A speaker
encoder file (``weighter distill``'s output, the frontend "distilled" of a model) is a dict of
the same kind: ``ENCODER_FORMAT``, the encoder's weights, and what made it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from weighter import __version__
from weighter.embedder.model import SpeakerEncoder, WeighterConfig, WeighterModel
from weighter.errors import WeighterError

MODEL_FORMAT = 1
ENCODER_FORMAT = "weighter-encoder-1"


@dataclass
class ModelMetadata:
    """What a model file records beside its weights: identity, training and calibration.

    ``load_model`` reads it and ``save_model`` writes it; nothing else reads a model file's keys.
    On disk it stays a plain dict of tensors and values (``torch.load(weights_only=True)``).

    Parameters
    ----------
    model_id : str
        ``weighter-`` and 12 hex digits of the weights' and configuration's hash.
    config : dict
        ``WeighterConfig.to_dict()``.
    likes : list of str
        The training likes, one head row each.
    threshold : float, default 0.5
        Confidence at or above which a slot is active (calibrated).
    merge_cosine : float or None
        Two active slots of one file at least this alike are one like (calibrated).
    score_cohort : torch.Tensor or None
        (C, E) slot embeddings of training voices for score normalisation (``weighter.scoring``).
    score_top_share : float or None
        The share of the cohort's top scores that normalisation uses.
    pair_calibration, pair_calibration_snorm : list of float or None
        Logistic (slope, intercept) from a best-pair cosine, or normalised score, to P(like shared).
    pair_prior : float or None
        The base rate that ``pair_calibration`` states P for (None: the validation pairs' own).
    calibration_speakers : int or None
        Most speakers per calibration conversation.
    train, metrics : dict
        Training settings; validation metrics of the saved step.
    history : list of dict
        Validation metrics of every evaluation while training.
    version : str
        The weighter version that wrote the file.

    Examples
    --------
    >>> from weighter.embedder import DEFAULT_MODEL
    >>> from weighter.embedder.checkpoint import load_model
    >>> _, meta = load_model(DEFAULT_MODEL)  # doctest: +SKIP
    >>> meta.model_id, round(meta.threshold, 2)  # doctest: +SKIP
    ('weighter-1d4dc17ec36d', 0.5)
    """

    model_id: str
    config: dict
    likes: list[str]
    threshold: float = 0.5
    merge_cosine: float | None = None
    score_cohort: torch.Tensor | None = None
    score_top_share: float | None = None
    pair_calibration: list[float] | None = None
    pair_calibration_snorm: list[float] | None = None
    pair_prior: float | None = None
    calibration_speakers: int | None = None
    train: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    version: str = __version__

    @classmethod
    def from_payload(cls, payload: dict) -> "ModelMetadata":
        """The metadata of a model file's dict (keys this version does not know are dropped)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in known and v is not None})

    def to_payload(self) -> dict:
        """The dict written to a model file, without the weights (``None`` values left out)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


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
               train: dict | None = None, metrics: dict | None = None, **calibration) -> str:
    """Write a model file atomically (temp file + rename): a killed save leaves the old file intact.

    Parameters
    ----------
    path : str or Path
    model : WeighterModel
    likes : list of str
        The training likes, one head row each.
    threshold : float
        The calibrated activity threshold.
    train, metrics : dict or None
        Training settings; validation metrics of this step.
    **calibration
        Further ``ModelMetadata`` fields (``merge_cosine``, ``score_cohort``, ``history``, ...).

    Returns
    -------
    str
        The model id (a hash of the weights and configuration).

    Examples
    --------
    >>> ident = save_model("model.pt", model, ["alice", "bob"], 0.5, merge_cosine=0.8)  # doctest: +SKIP
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ident = model_id(state, model.config.to_dict())
    meta = ModelMetadata(model_id=ident, config=model.config.to_dict(), likes=list(likes), threshold=float(threshold),
                         train=train or {}, metrics=metrics or {}, **calibration)
    payload = {"format": MODEL_FORMAT, "state_dict": state, **meta.to_payload()}
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


def load_model(path: str | Path) -> tuple[WeighterModel, ModelMetadata]:
    """A model file's network (in evaluation mode, on the CPU) and its metadata.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    model : WeighterModel
    metadata : ModelMetadata

    Raises
    ------
    WeighterError
        As ``read_model_file``, or weights that do not fit this version's network.

    Examples
    --------
    >>> from weighter.embedder import DEFAULT_MODEL
    >>> from weighter.embedder.checkpoint import load_model
    >>> model, meta = load_model(DEFAULT_MODEL)  # doctest: +SKIP
    >>> meta.model_id  # doctest: +SKIP
    'weighter-...'
    """
    payload = read_model_file(path)
    try:
        meta = ModelMetadata.from_payload(payload)
        model = WeighterModel(WeighterConfig.from_dict(meta.config))
        model.load_state_dict(payload["state_dict"])
    except (TypeError, KeyError, ValueError, RuntimeError) as error:  # ValueError: an unknown config choice
        reason = str(error).strip().splitlines()[0][:160]
        raise WeighterError(f"{path}: model does not match this weighter version ({reason})") from None
    model.eval()
    return model, meta


def save_encoder(path: str | Path, encoder: SpeakerEncoder, info: dict | None = None) -> str:
    """Write a speaker encoder file atomically: its weights and ``info`` (plain values: what
    made it, its validation figures). Returns its id, ``encoder-`` and 12 hex digits of a hash.

    Examples
    --------
    >>> from weighter.embedder.model import SpeakerEncoder
    >>> save_encoder("encoder.pt", SpeakerEncoder(), {"teacher": "resemblyzer"})  # doctest: +SKIP
    'encoder-...'
    """
    state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    ident = "encoder-" + model_id(state)[len("weighter-"):]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": ENCODER_FORMAT, "encoder_id": ident, "input_norm": encoder.input_norm, "state_dict": state,
                "info": info or {}}, tmp)
    os.replace(tmp, path)
    return ident


def load_encoder(path: str | Path) -> tuple[SpeakerEncoder, dict]:
    """A speaker encoder file's network (eval mode, frozen, CPU) and its info (with ``encoder_id``).

    Raises
    ------
    WeighterError
        Missing, unreadable, not an encoder file, or weights of another shape; one line each.

    Examples
    --------
    >>> encoder, info = load_encoder("encoder.pt")  # doctest: +SKIP
    >>> info["encoder_id"]  # doctest: +SKIP
    'encoder-...'
    """
    path = Path(path)
    if not path.is_file():
        raise WeighterError(f"{path}: no such speaker encoder file")
    try:
        payload = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated or foreign files
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise WeighterError(f"{path}: not a readable speaker encoder (corrupt, truncated or foreign: {reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != ENCODER_FORMAT or "state_dict" not in payload:
        raise WeighterError(f"{path}: not a weighter speaker encoder file (expected format {ENCODER_FORMAT})")
    try:
        encoder = SpeakerEncoder(payload.get("input_norm", "none"))
        encoder.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        raise WeighterError(f"{path}: encoder weights do not fit ({str(error).splitlines()[0][:160]})") from None
    return encoder.eval().requires_grad_(False), dict(payload.get("info") or {}) | {"encoder_id": payload.get("encoder_id")}
