"""Audio input: files, directories, file lists and manifests, decoded to mono at 16 kHz."""

from weighter.audio.io import (
    AUDIO_EXTENSIONS,
    SAMPLE_RATE,
    AudioInfo,
    AudioStats,
    audio_info,
    load_audio,
    scan_audio,
    stream_audio,
)
from weighter.audio.sources import AudioSource, discover, read_manifest, write_manifest

__all__ = [
    "AUDIO_EXTENSIONS",
    "SAMPLE_RATE",
    "AudioInfo",
    "AudioSource",
    "AudioStats",
    "audio_info",
    "discover",
    "load_audio",
    "read_manifest",
    "scan_audio",
    "stream_audio",
    "write_manifest",
]
