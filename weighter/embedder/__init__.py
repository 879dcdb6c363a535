"""Audio -> per-file embedding sets: the Weighter model (model.py), its training (train.py, with
config.py, data.py, losses.py), its calibration (calibration.py), safe model files
(checkpoint.py) and inference with windows and batching (inference.py)."""

from weighter.embedder.checkpoint import ModelMetadata
from weighter.embedder.inference import DEFAULT_MODEL, Embedder
from weighter.embedder.model import WeighterConfig, WeighterModel

__all__ = ["DEFAULT_MODEL", "Embedder", "ModelMetadata", "WeighterConfig", "WeighterModel"]
