"""The torch device a model runs on, and its number format (inference and training alike).

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


PRECISIONS = ("auto", "float32", "bfloat16")


def pick_precision(name: str, device: torch.device) -> str:
    """The number format the speaker encoder's windows run in on ``device``.

    bfloat16 (torch's CPU autocast) runs the encoder's LSTM about twice as fast on CPUs with
    native bfloat16 instructions (AVX512-BF16 or AMX) and keeps each window's embedding within
    a cosine of 0.99 of float32's (median 0.9998); elsewhere it would be emulated and slower.

    Parameters
    ----------
    name : str
        ``"auto"`` (bfloat16 on a CPU with native bfloat16, else float32), ``"float32"`` or
        ``"bfloat16"`` (the CPU only).
    device : torch.device

    Returns
    -------
    str
        ``"float32"`` or ``"bfloat16"``.

    Raises
    ------
    WeighterError
        An unknown name, or bfloat16 asked for on a device other than the CPU.

    Examples
    --------
    >>> import torch
    >>> from weighter.embedder.device import pick_precision
    >>> pick_precision("float32", torch.device("cpu"))
    'float32'
    """
    if name not in PRECISIONS:
        raise WeighterError(f"precision {name!r}: one of {', '.join(PRECISIONS)}")
    if name == "auto":
        return "bfloat16" if device.type == "cpu" and cpu_has_bfloat16() else "float32"
    if name == "bfloat16" and device.type != "cpu":
        raise WeighterError(f"precision bfloat16 runs on the CPU only, not on {device}: use float32 or auto")
    return name


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively: AVX512-BF16 or AMX instructions, for oneDNN
    (whose own check also passes on plain AVX512, where bfloat16 is emulated). False where torch
    cannot tell."""
    try:
        import torch.cpu

        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return bool(native and torch.backends.mkldnn.is_available())
    except (AttributeError, RuntimeError):
        return False


def autocast(precision: str):
    """The context in which CPU tensors compute in ``precision`` ("float32" or "bfloat16").

    Examples
    --------
    >>> import torch
    >>> from weighter.embedder.device import autocast
    >>> with autocast("bfloat16"):
    ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
    torch.bfloat16
    """
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16")
