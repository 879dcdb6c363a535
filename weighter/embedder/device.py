"""Choosing the torch device that a model runs on (inference and training alike).

Kept apart from training so that inference imports nothing of it: ``weighter.training.train``
pulls in the corpus generator (TTS bank, mixer).
"""

from __future__ import annotations

import torch

from weighter.errors import WeighterError


def pick_device(name: str) -> torch.device:
    """The torch device named ``name``, or the best available one for ``"auto"``.

    Parameters
    ----------
    name : str
        ``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``;
        any other name torch accepts is passed through.

    Returns
    -------
    torch.device

    Raises
    ------
    WeighterError
        A CUDA device is asked for but none is available.

    Examples
    --------
    >>> from weighter.embedder.device import pick_device
    >>> pick_device("cpu")
    device(type='cpu')
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise WeighterError(f"device {name!r}: no CUDA device is available")
    return torch.device(name)
