"""Audio -> per-file embedding sets: what runs when a user embeds a file. The Weighter model
(model.py), safe model files (checkpoint.py), inference with windows and batching
(inference.py), the slot split (slots.py), the speech gate (speech.py) and embedding on a Ray
cluster (distributed.py). Training and calibration live in ``weighter.training``."""

from weighter.embedder.checkpoint import ModelMetadata
from weighter.embedder.inference import DEFAULT_MODEL, Embedder
from weighter.embedder.model import WeighterConfig, WeighterModel

__all__ = ["DEFAULT_MODEL", "Embedder", "ModelMetadata", "WeighterConfig", "WeighterModel"]
