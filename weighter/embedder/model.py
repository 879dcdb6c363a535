"""The Weighter model: audio -> a set of N slot embeddings, each with a confidence and a
weighting over time. One file holds the whole model; ``WeighterConfig`` names every
hyperparameter.

    wave (B, S) -> log-mel (B, T, M) -> frame encoder -> frames F (B, T, Cf)       100 Hz
                   (or a frozen frontend: Resemblyzer's LSTM, torchaudio's WavLM)
    F -> conv /12 channels, /15 time -> FeatureProjection + WavLM encoder          6.7 Hz
      -> linear + sigmoid -> X (B, N, T/15) -> repeat_interleave(15) -> X (B, N, T)
    W = X / sum_t X          weighting of each slot over time
    C = sum_t X^2 / sum_t X  confidence: X averaged with weights X, in [0, 1]
    e = normalize(proj([sum_t W F, std_W(F)]))  (B, N, E)  slot embeddings (pooling "frames")
    e = normalize(sum_w mass_w(W) e_w)  e_w: 1.6 s windows embedded alike (pooling "windows")

In training a cosine classifier over the training likes scores every slot; at inference only
the embeddings, confidences and weightings are used.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from weighter.embedder.device import autocast
from weighter.errors import WeighterError


# torchaudio's WavLM attention warns on every padded batch (bool key_padding_mask, no attn_mask).
warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")


@dataclass
class WeighterConfig:
    """Every hyperparameter of a Weighter model (each described beside it); a model file keeps it.

    Examples
    --------
    >>> from weighter.embedder import WeighterConfig
    >>> WeighterConfig(slots=4).to_dict()["slots"]
    4
    """

    sample_rate: int = 16_000  # Hz
    frontend: str = "logmel"  # "logmel": frames learnt jointly; "resemblyzer": frozen pretrained speaker encoder;
    #                           "distilled": a speaker encoder of its shape distilled to hold across channels
    #                           (weighter.training.distill; its weights in the model file, frozen here);
    #                           "ssl": a frozen self-supervised speech model of torchaudio (WavLM by default)
    encoder_input_norm: str = "none"  # frontend "distilled": its SpeakerEncoder's input_norm ("none", "cmn")
    ssl_bundle: str = "WAVLM_BASE_PLUS"  # frontend "ssl": the torchaudio.pipelines bundle (weights download once)
    ssl_layer: int = 6  # frontend "ssl": the transformer layer whose output are the frames (speaker
    #                     identity is strongest in the middle layers of WavLM)
    partial_hop: int = 0  # frontends "resemblyzer", "distilled": 0 = the LSTM's every output over consecutive 1.6-s chunks;
    #                       H > 0 = one speaker embedding per 1.6-s window every H frames (Resemblyzer's own
    #                       "partials"), held over the H frames nearest the window's centre
    n_mels: int = 64
    input_level_dbfs: float | None = None  # frontend "logmel": each input scaled to this RMS level first, so
    #                                        that the log-mel floor sits at the same depth below the speech
    #                                        whatever the recording level (None: not scaled, as before)
    hop: int = 160  # samples: frames at 100 Hz
    window: int = 400  # samples: 25 ms
    frame_dim: int = 192  # Cf, channels of the frame features
    channel_shrink: int = 12  # the weighter's first conv: Cf -> Cf / 12 channels
    time_strides: tuple[int, int] = (3, 5)  # the two convs' strides: time / 15
    d_model: int = 128  # transformer width
    layers: int = 2
    heads: int = 4
    ff_dim: int = 256
    pos_conv_kernel: int = 15  # at 6.7 Hz: about 2 s of convolutional position signal
    pos_conv_groups: int = 8
    num_buckets: int = 64  # WavLM relative-position buckets
    max_distance: int = 200  # frames at 6.7 Hz: 30 s
    dropout: float = 0.1
    slots: int = 6  # N
    confidence: str = "x"  # "x": X averaged with weights X; "y_mean" / "y_weighted": a separate output Y
    #                        averaged over time / with weights W (the research's earlier variants)
    upsample: str = "repeat"  # "repeat": repeat_interleave back to the frame rate; "transposed": a
    #                           transposed convolution (the research found it worse)
    embed_dim: int = 256  # E
    pooling: str = "frames"  # "frames": project the W-weighted mean and std of all frames; "windows": the
    #                          W-mass-weighted mean of window embeddings (each window's frames pooled alike);
    #                          "mean": the W-weighted mean of the frames, unprojected (keeps a frozen
    #                          frontend's speaker space, learnt from thousands of real voices)
    pool_window: int = 160  # frames (1.6 s) per window for pooling = "windows"
    pool_hop: int = 50  # frames between window starts
    split_cosine: float | None = None  # pooling "windows": a slot whose windows form two groups this unalike
    split_min_share: float = 0.25  # (cosine), each with this share of its mass, is two slots; None: never.
    #                                Set by `weighter calibrate` on validation data (embedder/slots.py)
    num_likes: int = 0  # classification head size (training likes); 0 at inference-only
    cos_scale: float = 12.0  # scale of the cosine classifier's logits
    cos_bias: float = -6.0  # initial bias: p = sigmoid(12 cos - 6) is small for strangers
    margin: float = 0.2  # additive cosine margin of the identity cross-entropy (AM-softmax)

    @property
    def time_shrink(self) -> int:
        """Frames per weighter step: the product of the two convolutions' strides (15)."""
        return self.time_strides[0] * self.time_strides[1]

    def to_dict(self) -> dict:
        """The configuration as JSON-ready values (what a model file stores; ``from_dict`` inverts it)."""
        d = asdict(self)
        d["time_strides"] = list(self.time_strides)
        if d["input_level_dbfs"] is None:  # absent, as in files from before it: their model ids stay
            del d["input_level_dbfs"]
        if not d["partial_hop"]:  # likewise
            del d["partial_hop"]
        if d["encoder_input_norm"] == "none":  # likewise
            del d["encoder_input_norm"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "WeighterConfig":
        """A configuration from ``to_dict``'s values (also those of older model files)."""
        d = dict(d)
        d.setdefault("frontend", "logmel")
        d.setdefault("partial_hop", 0)
        d["time_strides"] = tuple(d["time_strides"])
        return cls(**d)


class LogMel(nn.Module):
    """Log-mel filterbank with per-file mean removal (cancels a fixed channel/EQ, and a gain:
    except near the 1e-6 floor, where a quiet recording's frames flatten; with
    ``input_level_dbfs`` each input is first scaled to that RMS level, which keeps them off it)."""

    def __init__(self, c: WeighterConfig):
        super().__init__()
        import torchaudio

        self.mel = torchaudio.transforms.MelSpectrogram(c.sample_rate, n_fft=512, win_length=c.window,
                                                        hop_length=c.hop, n_mels=c.n_mels, center=False)
        self.hop, self.n_fft = c.hop, 512
        self.config = c  # the model's own: input_level_dbfs is read at each call

    def frames(self, samples: torch.Tensor) -> torch.Tensor:
        """Frames the frontend yields for inputs of ``samples`` samples (no centring: the window
        must fit)."""
        return torch.clamp(torch.div(samples - self.n_fft, self.hop, rounding_mode="floor") + 1, min=0)

    def power_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, S) -> mel power (B, T, M): what ``self.mel`` computes, with |STFT|^2 as re^2 + im^2
        (torchaudio's complex abs, a square root then a square, took a sixth of inference time)."""
        spec = self.mel.spectrogram
        stft = torch.stft(wave, spec.n_fft, spec.hop_length, spec.win_length, spec.window, center=False,
                          return_complex=True)  # (B, F, T)
        power = torch.addcmul(stft.real * stft.real, stft.imag, stft.imag)
        return torch.matmul(power.transpose(1, 2), self.mel.mel_scale.fb)

    def forward(self, wave: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """wave (B, S) at 16 kHz, optional frame mask (B, T) -> log-mel (B, T, M), each file's
        mean over its valid frames removed."""
        if self.config.input_level_dbfs is not None:  # RMS over each row's own samples (a batch pads with zeros)
            if mask is None:
                samples = torch.full_like(wave[:, :1], wave.shape[1])
            else:
                samples = mask.sum(1, keepdim=True).to(wave.dtype) * self.hop + self.n_fft - self.hop
            rms = torch.sqrt((wave ** 2).sum(1, keepdim=True) / samples.clamp(min=1, max=wave.shape[1]) + 1e-10)
            wave = wave * (10 ** (self.config.input_level_dbfs / 20) / rms)
        x = torch.log(self.power_mel(wave) + 1e-6)  # (B, T, M)
        if mask is None:
            return x - x.mean(1, keepdim=True)
        m = mask[..., None].to(x.dtype)  # (B, T, 1)
        mean = (x * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)
        return (x - mean) * m


class FrameEncoder(nn.Module):
    """Log-mel -> frame features at 100 Hz; about 250 ms receptive field."""

    def __init__(self, c: WeighterConfig):
        super().__init__()
        self.inp = nn.Conv1d(c.n_mels, c.frame_dim, 5, padding=2)
        self.blocks = nn.ModuleList(
            nn.Conv1d(c.frame_dim, c.frame_dim, 3, padding=d, dilation=d) for d in (2, 3, 4))
        self.norms = nn.ModuleList(nn.GroupNorm(1, c.frame_dim) for _ in range(3))

    def forward(self, mel: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """mel (B, T, M), mask (B, T) of valid frames -> (B, T, Cf), zero on padding. A padded
        row gives what it gives alone: the norms see only its frames, the convs read zeros past
        its end (as their own padding would be)."""
        if mask is None:
            mask = torch.ones(mel.shape[:2], dtype=torch.bool, device=mel.device)
        m = mask[:, None].to(mel.dtype)  # (B, 1, T)
        x = F.gelu(self.inp(mel.transpose(1, 2))) * m  # (B, Cf, T)
        for conv, norm in zip(self.blocks, self.norms):
            x = x + F.gelu(conv(_masked_group_norm(norm, x, m))) * m
        return x.transpose(1, 2)  # (B, T, Cf)


def _masked_group_norm(norm: nn.GroupNorm, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``norm`` (one group) over the valid frames only; zero on padding. x (B, C, T), zero on
    padding already, m (B, 1, T). One pass for both moments (in float32: under autocast x is
    bfloat16, too coarse for E[x^2] - E[x]^2), then one fused scale and shift."""
    count = (m.sum((1, 2)) * x.shape[1]).clamp(min=1)[:, None, None]
    f = x.float()
    mean = f.sum((1, 2), keepdim=True) / count
    var = ((f * f).sum((1, 2), keepdim=True) / count - mean * mean).clamp(min=0)
    scale = norm.weight[None, :, None] * torch.rsqrt(var + norm.eps)  # (B, C, 1)
    return torch.addcmul(norm.bias[None, :, None] - mean * scale, x, scale) * m


def _mass_average(mass: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """Slot embeddings from window embeddings (B, W, E) weighted by each slot's mass (B, N, W)."""
    return F.normalize(torch.einsum("bnw,bwe->bne", mass, windows), dim=-1)


def wavlm_encode(encoder: nn.Module, x: torch.Tensor, lengths: torch.Tensor, layers: int | None = None) -> torch.Tensor:
    """torchaudio's WavLM Encoder (feature projection, position convolution, transformer layers),
    run layer by layer up to ``layers``: its own forward turns lengths into an attention_mask
    that WavLM attention refuses; WavLM takes a key_padding_mask instead. x (B, T', C) -> (B, T', D)."""
    padding = torch.arange(x.shape[1], device=x.device)[None] >= lengths[:, None]  # (B, T') True = pad
    x = encoder.feature_projection(x)  # layer norm, linear, dropout: (B, T', D)
    x = x.masked_fill(padding[..., None], 0.0)  # the position conv reads zeros past a row's end, as alone
    x = encoder.transformer._preprocess(x)  # + convolutional position embedding
    bias = None
    for layer in list(encoder.transformer.layers)[:layers]:
        x, bias = layer(x, position_bias=bias, key_padding_mask=padding if padding.any() else None)
    return x


class SSLFrontend:
    """Frames from a pretrained self-supervised speech model of torchaudio (``ssl_bundle``, a
    ``torchaudio.pipelines`` bundle: WavLM Base+ by default): the output of transformer layer
    ``ssl_layer``, 768-d at 50 Hz, each frame repeated twice onto the 100 Hz frame grid.

    For users with internet access: the bundle's weights download once from
    download.pytorch.org into torch.hub's cache (``$TORCH_HOME/hub/checkpoints``) and load from
    there afterwards. Frozen, and not stored in weighter's model files (a plain attribute).
    """

    receptive, stride = 400, 320  # samples: the convolutional feature extractor's window and hop

    def __init__(self, c: WeighterConfig):
        import torchaudio

        bundle = getattr(torchaudio.pipelines, c.ssl_bundle, None)
        if not isinstance(bundle, torchaudio.pipelines.Wav2Vec2Bundle):
            raise WeighterError(f"ssl_bundle {c.ssl_bundle!r} is not a wav2vec2/HuBERT/WavLM bundle of torchaudio.pipelines")
        if not 1 <= c.ssl_layer <= bundle._params["encoder_num_layers"]:
            raise WeighterError(f"ssl_layer {c.ssl_layer} outside 1..{bundle._params['encoder_num_layers']} "
                                f"of {c.ssl_bundle}")
        try:
            self.model = bundle.get_model().eval().requires_grad_(False)
        except (OSError, RuntimeError) as error:  # URLError is an OSError
            raise WeighterError(f"{c.ssl_bundle}: could not load its weights ({str(error).splitlines()[0][:160]}); "
                                f"they download once from download.pytorch.org into {torch.hub.get_dir()}") from None
        self.layer = c.ssl_layer
        c.frame_dim = self.dim = int(bundle._params["encoder_embed_dim"])

    def frames(self, samples: torch.Tensor) -> torch.Tensor:
        """Frames on the 100 Hz grid: two per 20 ms output frame of the model."""
        return 2 * torch.clamp(torch.div(samples - self.receptive, self.stride, rounding_mode="floor") + 1, min=0)

    @torch.no_grad()
    def __call__(self, wave: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.model.to(wave.device)
        own = mask.sum(1) // 2  # (B,) the model's frames
        samples = torch.where(own > 0, (own - 1) * self.stride + self.receptive, torch.zeros_like(own))
        out = wave.new_zeros(*mask.shape, self.dim)
        for n in torch.unique(samples[own > 0]).tolist():  # rows of one length together, unpadded: the
            rows = torch.nonzero(samples == n)[:, 0]        # group norm and position conv see no padding
            features, lengths = self.model.feature_extractor(wave[rows, :n], None)
            h = wavlm_encode(self.model.encoder, features, torch.full((len(rows),), features.shape[1]), self.layer)
            h = h.repeat_interleave(2, dim=1)[:, : mask.shape[1]]  # 100 Hz
            out[rows, : h.shape[1]] = h.to(out.dtype)  # bfloat16 under autocast
        return out


CMN_FLOOR = 1e-4  # input_norm "cmn": band power floor, relative to the window's mean band power (-40 dB)


class SpeakerEncoder(nn.Module):
    """Resemblyzer's speaker-encoder network (GE2E): 1.6-s windows of a 40-band mel -> a 3-layer
    LSTM of 256 -> linear -> ReLU -> L2 norm: one 256-d speaker embedding per window.

    ``SpeakerEncoder.resemblyzer()`` loads the pretrained weights that ship inside the
    ``resemblyzer`` package (trained on thousands of clean voices); a distilled encoder
    (``weighter distill``, ``weighter.training.distill``) has the same shape and its own weights,
    kept in a weighter model file.

    Parameters
    ----------
    input_norm : {"none", "cmn", "smooth"}
        "none": the power mel as Resemblyzer takes it. "cmn": each window's log-mel has its own
        per-band mean (over its valid frames) removed and a learnt per-band level (``offset``,
        40) put back: a fixed filter on the channel (a microphone's colour, an equaliser, a
        room's response) is a per-band gain, so the network never sees it. "smooth": only the
        smooth part of that mean across the bands is removed (a cubic in the band index: tilt
        and broad colour), and the voice's own finer average spectrum is kept.

    Examples
    --------
    >>> import torch
    >>> from weighter.embedder.model import SpeakerEncoder
    >>> encoder = SpeakerEncoder().eval()
    >>> tuple(encoder(torch.rand(3, 160, 40)).shape)
    (3, 256)
    """

    def __init__(self, input_norm: str = "none"):
        super().__init__()
        if input_norm not in ("none", "cmn", "smooth"):
            raise ValueError(f"unknown input_norm {input_norm!r} (none, cmn, smooth)")
        self.input_norm = input_norm
        self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        if input_norm != "none":  # log-mel level of speech at -30 dBFS, per band (set from data by distill)
            self.offset = nn.Parameter(torch.full((40,), -9.0))
        if input_norm == "smooth":  # (40, 40) projection onto cubics in the band index
            basis, _ = torch.linalg.qr(torch.linspace(-1, 1, 40)[:, None] ** torch.arange(4.0))
            self.register_buffer("smooth", basis @ basis.T, persistent=False)

    def forward(self, windows: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Mel windows (W, L, 40), each valid for its first ``lengths`` (W,) frames (default all)
        -> embeddings (W, 256): the LSTM's output at a window's last valid frame, linear, ReLU, L2."""
        if self.input_norm != "none":
            windows = self.normalise(windows, lengths)
        h, _ = self.lstm(windows)  # (W, L, 256)
        if lengths is None:
            last = h[:, -1]
        else:
            last = h[torch.arange(len(h), device=h.device), lengths - 1]  # (W, 256)
        return F.normalize(F.relu(self.linear(last)), dim=-1)

    def normalise(self, windows: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Per-window cepstral-mean-style normalisation in the mel domain (``input_norm="cmn"``):
        exp(log(mel + floor) - its mean over the window's valid frames + offset), the floor
        ``CMN_FLOOR`` times the window's mean band power, so that bands a channel left empty (a
        telephone line above 3.4 kHz) stay flat instead of being raised to speech level.
        (W, L, 40) -> same."""
        if lengths is None:
            valid = torch.ones(windows.shape[:2], dtype=windows.dtype, device=windows.device)[..., None]
        else:
            valid = (torch.arange(windows.shape[1], device=windows.device)[None] < lengths[:, None])[..., None]
            valid = valid.to(windows.dtype)
        frames = valid.sum(1, keepdim=True).clamp(min=1)  # (W, 1, 1)
        power = (windows * valid).sum((1, 2), keepdim=True) / (frames * windows.shape[2])  # (W, 1, 1)
        x = torch.log(windows + CMN_FLOOR * power + 1e-12)  # (W, L, 40)
        mean = (x * valid).sum(1, keepdim=True) / frames  # (W, 1, 40)
        if self.input_norm == "smooth":
            mean = mean @ self.smooth  # its smooth part across the bands
        return torch.exp(x - mean + self.offset)

    @classmethod
    def resemblyzer(cls) -> "SpeakerEncoder":
        """The pretrained encoder whose weights ship in the ``resemblyzer`` package (frozen, eval)."""
        import importlib.util
        from pathlib import Path

        # the package's weights file, found without importing the package (it imports librosa and webrtcvad)
        spec = importlib.util.find_spec("resemblyzer")
        weights = Path(spec.origin).parent / "pretrained.pt" if spec and spec.origin else None
        if weights is None or not weights.is_file():
            raise WeighterError("this model uses the Resemblyzer frontend, whose weights come from the resemblyzer "
                                "package: pip install resemblyzer")
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            encoder = cls()
            encoder.load_state_dict({k: v for k, v in state["model_state"].items()
                                     if k.startswith(("lstm.", "linear."))})
        except Exception as error:  # a truncated or foreign file: torch raises many types
            raise WeighterError(f"{weights}: Resemblyzer's weights are unreadable ({type(error).__name__})") from None
        return encoder.eval().requires_grad_(False)


class ResemblyzerFrontend:
    """Frames from a speaker encoder of Resemblyzer's shape (``SpeakerEncoder``): the pretrained
    GE2E encoder of the ``resemblyzer`` package (frontend "resemblyzer"), or a distilled one whose
    weights the model file holds (frontend "distilled").

    Its mel (40 bands, 25 ms / 10 ms) is recomputed with torchaudio on audio normalised to
    -30 dBFS, as the encoder expects. With ``partial_hop`` H > 0, one embedding per 1.6-s window
    every H frames ("partials"); with 0, the LSTM runs over consecutive 1.6 s chunks (the length
    it was trained on) and every frame's output, through its linear + ReLU + L2 norm, is that
    frame's feature. Frozen: not trained with the weighter, and for "resemblyzer" not stored in
    weighter's model files (a plain attribute, not a submodule).
    """

    chunk = 160  # frames: the encoder's training length

    def __init__(self, c: WeighterConfig, encoder: SpeakerEncoder | None = None):
        import torchaudio

        self.encoder = encoder if encoder is not None else SpeakerEncoder.resemblyzer()
        self.mel = torchaudio.transforms.MelSpectrogram(c.sample_rate, n_fft=400, hop_length=c.hop, n_mels=40,
                                                        norm="slaney", mel_scale="slaney", center=False)
        self.hop = c.hop
        self.partial_hop = c.partial_hop
        self.precision = "float32"  # "bfloat16": the windows run under CPU autocast (set by Embedder)

    def mel_frames(self, wave: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """wave (B, S) at 16 kHz, frame mask (B, T) -> the encoder's input, power mel (B, T, 40),
        each row normalised to -30 dBFS over its valid frames first (Resemblyzer's preprocessing)."""
        valid = mask.sum(1).clamp(min=1)  # (B,) frames
        rms = torch.sqrt((wave ** 2).sum(1) / (valid * self.hop) + 1e-10)  # (B,)
        wave = wave * (10 ** (-30 / 20) / rms)[:, None]
        return self.mel.to(wave.device)(wave).transpose(1, 2)[:, : mask.shape[1]]  # (B, T, 40)

    def embed_windows(self, windows: torch.Tensor, lengths: torch.Tensor, batch: int = 512) -> torch.Tensor:
        """Speaker embeddings of mel windows (W, L, 40), each valid for its first ``lengths`` (W,)
        frames: the LSTM's output at a window's last valid frame, linear, ReLU, L2 norm -> (W, 256),
        float32 (computed in bfloat16 when ``precision`` says so and the windows are on the CPU)."""
        with autocast(self.precision if windows.device.type == "cpu" else "float32"):
            out = [self.encoder(windows[i:i + batch], lengths[i:i + batch]).float()  # bounded: (batch, 160, 256)
                   for i in range(0, len(windows), batch)]
        return torch.cat(out) if out else windows.new_zeros(0, 256)

    def window_grid(self, length: int) -> tuple[torch.Tensor, int]:
        """Start frames of the partial windows of a row of ``length`` valid frames, and their length."""
        if length <= self.chunk:
            return torch.zeros(1, dtype=torch.long), max(length, 1)
        return torch.arange(0, length - self.chunk + 1, self.partial_hop), self.chunk

    def partials(self, mel: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mel (B, T, 40) -> frames (B, T, 256): each frame holds the embedding of the 1.6-s window
        whose centre is nearest (frames t in [kH, kH + H) take window k - c, c = the windows' centre
        offset in hops), so every H-frame block holds one window and the weighter's time strides can
        line up with them. Rows shorter than one window get one embedding of their whole length."""
        b, t, _ = mel.shape
        hop, lengths = self.partial_hop, mask.sum(1).tolist()
        shift = int(round((self.chunk / 2 - hop / 2) / hop))
        windows = []
        for row, length in enumerate(lengths):
            starts, size = self.window_grid(int(length))
            index = starts[:, None] + torch.arange(size)  # (K, size) frame indices
            windows.append((row, mel[row, index.to(mel.device)], size))
        out = mel.new_zeros(b, t, 256)
        for size in sorted({w[2] for w in windows}):  # one LSTM pass per window length (all 160 but short rows)
            group = [w for w in windows if w[2] == size]
            emb = self.embed_windows(torch.cat([w[1] for w in group]),
                                     torch.full((sum(len(w[1]) for w in group),), size, device=mel.device))
            for (row, _, _), part in zip(group, torch.split(emb, [len(w[1]) for w in group])):
                k = (torch.arange(t, device=mel.device) // hop - shift).clamp(0, len(part) - 1)  # (T,)
                out[row] = part[k]
        return out * mask[..., None]  # (B, T, 256)

    def frames(self, samples: torch.Tensor) -> torch.Tensor:
        """Frames the frontend yields for inputs of ``samples`` samples."""
        return torch.clamp(torch.div(samples - 400, self.hop, rounding_mode="floor") + 1, min=0)

    @torch.no_grad()
    def __call__(self, wave: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.encoder.to(wave.device)
        mel = self.mel_frames(wave, mask)  # (B, T, 40)
        if self.partial_hop:
            return self.partials(mel, mask)
        b, t, _ = mel.shape
        pad = (-t) % self.chunk
        chunks = F.pad(mel, (0, 0, 0, pad)).reshape(b * (t + pad) // self.chunk, self.chunk, 40)
        if self.encoder.input_norm != "none":  # a distilled encoder's input, as in its forward
            chunks = self.encoder.normalise(chunks)
        out, _ = self.encoder.lstm(chunks)  # (B * n, 160, 256)
        out = F.relu(self.encoder.linear(out)).reshape(b, t + pad, 256)[:, :t]
        return F.normalize(out, dim=-1) * mask[..., None]  # (B, T, 256)


class Weighter(nn.Module):
    """Frames -> weightings X (B, N, T) in [0, 1] at the frame rate."""

    def __init__(self, c: WeighterConfig):
        super().__init__()
        from torchaudio.models.wav2vec2.components import _get_wavlm_encoder

        narrow = max(1, c.frame_dim // c.channel_shrink)
        s1, s2 = c.time_strides
        self.shrink1 = nn.Conv1d(c.frame_dim, narrow, s1, stride=s1)
        self.shrink2 = nn.Conv1d(narrow, narrow, s2, stride=s2)
        self.encoder = _get_wavlm_encoder(  # FeatureProjection (layer norm, linear, dropout) + WavLM layers
            in_features=narrow, embed_dim=c.d_model, dropout_input=c.dropout, pos_conv_kernel=c.pos_conv_kernel,
            pos_conv_groups=c.pos_conv_groups, num_layers=c.layers, num_heads=c.heads, num_buckets=c.num_buckets,
            max_distance=c.max_distance, attention_dropout=c.dropout, ff_interm_features=c.ff_dim,
            ff_interm_dropout=c.dropout, dropout=c.dropout, layer_norm_first=True, layer_drop=0.0)
        outputs = c.slots * (1 if c.confidence == "x" else 2)  # X, and Y for the older confidence variants
        if c.confidence not in ("x", "y_mean", "y_weighted"):
            raise ValueError(f"unknown confidence {c.confidence!r} (x, y_mean, y_weighted)")
        if c.upsample == "repeat":
            self.to_slots = nn.Linear(c.d_model, outputs)
        elif c.upsample == "transposed":
            self.to_slots = nn.ConvTranspose1d(c.d_model, outputs, c.time_shrink, stride=c.time_shrink)
        else:
            raise ValueError(f"unknown upsample {c.upsample!r} (repeat, transposed)")
        self.shrink, self.slots, self.upsample = c.time_shrink, c.slots, c.upsample

    def forward(self, frames: torch.Tensor, frame_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weightings X (B, N, T) and, for the older confidence variants, Y (B, N, T); else None."""
        b, t, _ = frames.shape
        pad = (-t) % self.shrink
        x = F.pad(frames.transpose(1, 2), (0, pad))  # (B, Cf, T + pad)
        x = F.gelu(self.shrink2(F.gelu(self.shrink1(x))))  # (B, Cf/12, T'/15)
        lengths = torch.div(frame_lengths + self.shrink - 1, self.shrink, rounding_mode="floor")
        h = wavlm_encode(self.encoder, x.transpose(1, 2), lengths)  # (B, T', D)
        if self.upsample == "repeat":
            out = torch.sigmoid(self.to_slots(h)).transpose(1, 2).repeat_interleave(self.shrink, dim=2)
        else:
            out = torch.sigmoid(self.to_slots(h.transpose(1, 2)))  # (B, N or 2N, T' * 15)
        out = out[:, :, :t]  # (B, N or 2N, T)
        return out[:, : self.slots], (out[:, self.slots:] if out.shape[1] > self.slots else None)


def weigh(x: torch.Tensor, y: torch.Tensor | None, mask: torch.Tensor, confidence: str = "x"):
    """Weightings W (B, N, T) and confidences C (B, N) from X (and Y), padding masked out.
    W = X / sum_t X. C = sum X^2 / sum X ("x"), mean_t Y ("y_mean") or sum_t W Y ("y_weighted")."""
    m = mask[:, None].to(x.dtype)  # (B, 1, T)
    x = x * m
    total = x.sum(2, keepdim=True).clamp(min=1e-6)  # (B, N, 1)
    w = x / total
    if confidence == "x":
        c = (x * x).sum(2) / total[..., 0]
    elif confidence == "y_mean":
        c = (y * m).sum(2) / m.sum(2).clamp(min=1)
    else:
        c = (w * y).sum(2)
    return x, w, c


class WeighterModel(nn.Module):
    """The Weighter network: audio -> N slots, each an embedding, a confidence and a weighting.

    Most programs use ``Embedder``, which loads a model file and runs this network in windows
    and batches; see the module docstring for the architecture.

    Parameters
    ----------
    config : WeighterConfig

    Examples
    --------
    >>> import torch
    >>> from weighter.embedder import WeighterConfig, WeighterModel
    >>> model = WeighterModel(WeighterConfig(slots=4, embed_dim=32)).eval()
    >>> out = model(torch.zeros(1, 32000))  # 2 s at 16 kHz
    >>> tuple(out["embeddings"].shape), tuple(out["confidence"].shape)
    ((1, 4, 32), (1, 4))
    """

    def __init__(self, config: WeighterConfig):
        super().__init__()
        self.config = c = config
        if c.frontend == "logmel":
            self.logmel = LogMel(c)
            self.frame_encoder = FrameEncoder(c)
        elif c.frontend == "resemblyzer":
            c.frame_dim = 256
            object.__setattr__(self, "frozen", ResemblyzerFrontend(c))  # frozen, outside state_dict
        elif c.frontend == "distilled":  # the encoder's weights are the model file's (state_dict "encoder.*")
            c.frame_dim = 256
            self.encoder = SpeakerEncoder(c.encoder_input_norm).eval().requires_grad_(False)
            object.__setattr__(self, "frozen", ResemblyzerFrontend(c, self.encoder))
        elif c.frontend == "ssl":
            object.__setattr__(self, "frozen", SSLFrontend(c))  # sets c.frame_dim
        else:
            raise ValueError(f"unknown frontend {c.frontend!r} (logmel, resemblyzer, distilled, ssl)")
        if c.pooling not in ("frames", "windows", "mean"):
            raise ValueError(f"unknown pooling {c.pooling!r} (frames, windows, mean)")
        self.weighter = Weighter(c)
        if c.pooling == "mean":  # the frames' own space: the embedding is as wide as a frame
            c.embed_dim = c.frame_dim
        else:
            self.project = nn.Sequential(nn.Linear(2 * c.frame_dim, c.embed_dim), nn.GELU(),
                                         nn.Linear(c.embed_dim, c.embed_dim))
        if c.num_likes:
            self.like_vectors = nn.Parameter(torch.randn(c.num_likes, c.embed_dim) * 0.05)
            self.like_bias = nn.Parameter(torch.full((c.num_likes,), c.cos_bias))

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """wave (B, S) at 16 kHz, lengths (B,) in samples. Returns, per slot n and frame t:
        x (B, N, T), weights W (B, N, T), confidence C (B, N), embeddings (B, N, E), mask (B, T)."""
        frame_lengths, mask = self._frame_mask(wave, lengths)  # (B,), (B, T)
        return self.from_frames(self.frames(wave, mask), mask)

    def from_frames(self, frames: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """``forward`` after the frontend: frames (B, T, Cf), zero where mask (B, T) is False (a
        frozen frontend's frames can be computed once and cached for training)."""
        frame_lengths = mask.sum(1)
        x, y = self.weighter(frames, frame_lengths)  # (B, N, T)
        x, w, confidence = weigh(x, y, mask, self.config.confidence)  # padding weighs nothing
        out = {"x": x, "weights": w, "confidence": confidence, "mask": mask, "frames": frames}
        if self.config.pooling in ("frames", "mean"):
            out["embeddings"] = self.pool(w, frames)
            if self.config.pooling == "mean" and self.config.partial_hop and not self.training:
                out.update(self.partial_parts(w, frames, mask))  # the partials are the windows of the slot split
        else:  # the windows too, for splitting a slot that holds two voices (embedder/slots.py)
            windows, mass, starts, ends = self.window_parts(w, frames, mask)
            out.update(embeddings=_mass_average(mass, windows), windows=windows, mass=mass, window_starts=starts,
                       window_ends=ends)
        return out

    def _frame_mask(self, wave: torch.Tensor, lengths: torch.Tensor | None):
        """Valid frames of each row of a padded batch: frame counts (B,) and mask (B, T)."""
        b, s = wave.shape
        if lengths is None:
            lengths = torch.full((b,), s, device=wave.device)
        frame_lengths = self.frame_count(lengths)
        t = int(self.frame_count(torch.tensor(s)))
        return frame_lengths, torch.arange(t, device=wave.device)[None] < frame_lengths[:, None]

    def set_precision(self, precision: str) -> None:
        """Run a frozen speaker encoder's windows in ``precision`` ("float32" or "bfloat16", as
        ``weighter.embedder.device.pick_precision`` resolves it); other frontends ignore it."""
        if hasattr(getattr(self, "frozen", None), "precision"):
            self.frozen.precision = precision

    def frame_count(self, samples: torch.Tensor) -> torch.Tensor:
        """Frames (at 100 Hz) that ``samples`` samples give."""
        return (self.logmel if self.config.frontend == "logmel" else self.frozen).frames(samples)

    def frames(self, wave: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """wave (B, S) -> frame features (B, T, Cf), zero where mask (B, T) is False."""
        if mask is None:
            t = int(self.frame_count(torch.tensor(wave.shape[1])))
            mask = torch.ones(wave.shape[0], t, dtype=torch.bool, device=wave.device)
        if self.config.frontend == "logmel":
            return self.frame_encoder(self.logmel(wave, mask), mask)
        return self.frozen(wave, mask)

    def pool(self, weights: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Weighted mean and std of the frames, projected and L2-normalised.
        weights (B, M, T), each row summing to 1; frames (B, T, Cf) -> (B, M, E)."""
        mean = torch.einsum("bnt,btc->bnc", weights, frames)  # (B, M, Cf)
        if self.config.pooling == "mean":
            return F.normalize(mean, dim=-1)
        second = torch.einsum("bnt,btc->bnc", weights, frames * frames)
        std = (second - mean * mean).clamp(min=1e-5).sqrt()
        return F.normalize(self.project(torch.cat([mean, std], -1)), dim=-1)

    def partial_parts(self, weights: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> dict:
        """For the partials frontend, what splitting a two-voice slot needs (embedder/slots.py):
        the window embeddings, one per ``partial_hop`` block (B, K, Cf), each slot's mass in each
        block (B, N, K), and the blocks' first and past-the-last frames (B, K)."""
        b, n, t = weights.shape
        hop = self.config.partial_hop
        k = -(-t // hop)
        windows = F.pad(frames, (0, 0, 0, k * hop - t))[:, ::hop]  # (B, K, Cf): zero past each row's end
        mass = F.pad(weights.float(), (0, k * hop - t)).reshape(b, n, k, hop).sum(-1).to(weights.dtype)
        starts = (torch.arange(k, device=frames.device) * hop)[None].expand(b, -1)
        ends = torch.minimum(starts + hop, mask.sum(1, keepdim=True))
        return {"windows": windows, "mass": mass, "window_starts": starts, "window_ends": ends}

    def window_pool(self, weights: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Slot embeddings as averages of window embeddings: every window of ``pool_window`` frames
        (every ``pool_hop``) is embedded with its frames weighted alike, and slot n averages them
        weighted by its mass in each window, sum_{t in window} W_n,t. Short windows, each of one
        voice, embed more reliably than one pooling over a whole, imperfectly weighted file.
        weights (B, N, T), frames (B, T, Cf), mask (B, T) -> (B, N, E)."""
        windows, mass, _, _ = self.window_parts(weights, frames, mask)
        return _mass_average(mass, windows)

    def window_parts(self, weights: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor):
        """What ``window_pool`` averages: window embeddings (B, W, E), each slot's mass in each
        window (B, N, W), and the windows' first and past-the-last frames (B, W), (B, W).

        A row's windows are those it has alone: every ``pool_hop`` frames from its start, the
        last one ending at its last valid frame (and one window, of its whole length, if it is
        shorter than ``pool_window``). On a padded batch the shared grid's windows that run into
        a row's padding get no mass in that row, and each row's own last window is one more
        column (no mass in the other rows)."""
        b, t, _ = frames.shape
        size, hop = self.config.pool_window, self.config.pool_hop
        device = frames.device
        grid = torch.arange(0, max(t - size, 0) + 1, hop, device=device)  # starts on the shared grid
        length = mask.sum(1)  # (B,) valid frames
        last_start = (length - size).clamp(min=0)  # (B,) each row's own last window
        starts = torch.cat([grid[None].expand(b, -1), last_start[:, None]], 1)  # (B, W + 1)
        ends = torch.cat([(grid + size)[None].expand(b, -1), length[:, None]], 1)
        on_grid = (length >= size) & (last_start % hop == 0)  # the row's last window is a grid window
        valid = torch.cat([ends[:, :-1] <= length[:, None], ~on_grid[:, None]], 1)  # (B, W + 1)
        ends = ends.clamp(max=t)  # a grid window longer than the batch (t < size) has no mass anyway
        block = math.gcd(size, hop)  # grid windows start and end on multiples of it
        blocks = t // block
        # each row's own last window: its frames gathered (B, size), those past its length masked
        last = (last_start[:, None] + torch.arange(size, device=device)).clamp(max=t - 1)
        in_last = (torch.arange(size, device=device) < length[:, None] - last_start[:, None])[..., None]
        rows = torch.arange(b, device=device)[:, None]

        def window_sums(v):  # (B, T, C) zero on padding -> (B, W + 1, C): block sums, then windows of blocks
            if t >= size:
                sums = v[:, : blocks * block].reshape(b, blocks, block, -1).sum(2)
                sums = sums.unfold(1, size // block, hop // block).sum(-1)  # (B, W, C)
            else:  # the one grid window overruns every row: it gets no mass (valid below)
                sums = v.sum(1, keepdim=True)
            return torch.cat([sums, (v[rows, last] * in_last).sum(1, keepdim=True)], 1)

        m = mask[..., None].float()
        count = window_sums(m).clamp(min=1)  # (B, W + 1, 1)
        f = frames.float() * m  # float32 sums under autocast too (bfloat16 would cancel in the std)
        mean = window_sums(f) / count
        std = (window_sums(f * f) / count - mean * mean).clamp(min=1e-5).sqrt()
        windows = F.normalize(self.project(torch.cat([mean, std], -1).to(frames.dtype)), dim=-1)  # (B, W + 1, E)
        mass = window_sums(weights.transpose(1, 2).float() * m).transpose(1, 2).to(frames.dtype)  # (B, N, W + 1)
        return windows, mass * valid[:, None].to(mass.dtype), starts, ends

    def mean_embedding(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The baseline "one mean embedding per file": every frame weighted alike. (B, E)"""
        _, mask = self._frame_mask(wave, lengths)  # (B, T)
        frames = self.frames(wave, mask)  # (B, T, Cf)
        m = mask.to(frames.dtype)
        w = (m / m.sum(1, keepdim=True).clamp(min=1))[:, None]  # (B, 1, T)
        return self.pool(w, frames)[:, 0]  # (B, E)

    def like_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, N, E) -> (B, N, K): scaled cosine to each training like, plus a learned bias."""
        cos = embeddings @ F.normalize(self.like_vectors, dim=-1).T
        return self.config.cos_scale * cos + self.like_bias

    @property
    def frame_rate(self) -> float:
        """Hz of the frames and of the weightings the network outputs (100)."""
        return self.config.sample_rate / self.config.hop
