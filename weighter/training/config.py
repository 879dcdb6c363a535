"""The settings of a training run, in one dataclass (``TrainConfig``).

Kept apart from the training loop (train.py) so that the batch makers, the losses and the
cached-frames trainer can read it without importing the loop, and the loop imports them
without a cycle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class TrainConfig:
    """Every setting of a training run (each described beside it); ``weighter train`` fills it.

    Examples
    --------
    >>> from weighter.training.config import TrainConfig
    >>> TrainConfig(steps=500, batch_size=8).eval_every
    250
    """

    steps: int = 3000
    batch_size: int = 12
    min_seconds: float = 8.0  # each batch draws one duration in [min, max]
    max_seconds: float = 20.0
    max_speakers: int = 4
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 100  # steps
    combine: str = "sum"  # sum | max | noisy_or
    loss: str = "wbce"  # wbce | bce
    frame_supervision: float = 1.0
    balance_activity: bool = False  # frame activity loss: each matched slot's speech and silence frames weigh
    #                                 alike (capped at BALANCE_CAP), so a speaker heard 1 s counts as one heard 20 s
    separation: float = 0.0  # weight of a loss that pushes apart two slots matched to two speakers of one file
    #                          (their cosine above SEPARATION_COSINE), so that the duplicate merge keeps both
    margin: float | None = None  # the identity losses' AM-softmax margin (cosine units), replacing the model
    #                              config's (also an init's): larger-margin fine-tuning pushes voices further apart
    input_level: float | None = None  # the log-mel frontend's input RMS level (dBFS), replacing the model config's
    #                                   (also an init's): training then sees every file at one level
    eval_every: int = 250
    patience: int = 6  # evaluations without a better validation mAP before stopping
    # Synthetic validation conversations (10-30 s) scored each eval_every steps: 60 ranked checkpoints
    # wrongly, 200 did not and take about 18 s on 2 cores (docs/history.md, "The default model").
    val_files: int = 200
    telephone: float = 0.2
    overlap: float = 0.1
    reverb: float = 0.0  # share of conversations recorded in a reverberant room (mixer); validation stays dry
    distort: float = 0.0  # share of conversations through an MP3 / clipping / equaliser distortion (mixer)
    related: float = 0.0  # share of conversations that also hold a relative of their first speaker (mixer)
    empty: float = 0.0  # share of training files with no speaker, only a non-speech sound or noise (mixer)
    sounds: float = 0.0  # share of conversations that also carry a non-speech sound over a stretch (mixer)
    augment: float = 0.0  # cached training: share of conversations heard through a training channel
    #                       (weighter.training.augment: recorded noise, rooms, codecs) instead of the mixer's
    #                       coloured noise and telephone band; validation conversations alike
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # cached training: the frozen encoder's number format while caching frames
    #                          (weighter.embedder.device.pick_precision: bfloat16 on a CPU that has it)
    pretrain_steps: int = 0  # synthetic only: first steps on single-speaker clips (speaker ID of the frames)
    pretrain_batch: int = 64
    pretrain_seconds: float = 3.0
    workers: int | None = None  # processes making batches beside training; None = auto_workers(device)


@dataclass(frozen=True)
class TrainResult:
    """What a training run did (``train`` and ``train_cached`` return it).

    Attributes
    ----------
    model : str
        The model file written (its best validation step).
    steps : int
        Steps run (fewer than asked when validation stopped it early).
    best_step : int or None
        The step saved (None: no validation ran).
    best_score : float
        That step's validation score: ``score`` names it.
    score : str
        ``"map"`` (``train``) or ``"count_accuracy+map"`` (``train_cached``).
    history : list of dict
        Validation metrics of every evaluation, in order.

    Examples
    --------
    >>> result = train("model.pt", TrainConfig(steps=500), WeighterConfig(), bank=bank)  # doctest: +SKIP
    >>> result.best_step, round(result.best_score, 3)  # doctest: +SKIP
    (500, 0.812)
    """

    model: str
    steps: int
    best_step: int | None
    best_score: float
    score: str
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return asdict(self)
