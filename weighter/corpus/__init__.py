"""The synthetic multi-speaker corpus: utterance bank (TTS, cached), conversation mixer, vectors."""

from weighter.corpus.bank import BankSpec, UtteranceBank, build_bank, default_bank_dir, open_or_build_bank
from weighter.corpus.mixer import Conversation, ConversationMixer, MixerConfig, Segment, write_rttm
from weighter.corpus.vectors import VectorSimConfig, simulate_vectors, switch_rate
from weighter.corpus.writer import write_corpus

__all__ = [
    "BankSpec", "Conversation", "ConversationMixer", "MixerConfig", "Segment", "UtteranceBank",
    "VectorSimConfig", "build_bank", "default_bank_dir", "open_or_build_bank", "simulate_vectors",
    "switch_rate", "write_corpus", "write_rttm",
]
