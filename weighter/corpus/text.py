"""Sentences for the TTS voices: random word sequences from the system dictionary.

Content does not matter to speaker identity, and random words give every clip different
phonetic material, so a model cannot key on a fixed sentence.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from weighter.errors import CorpusError

DICTIONARY = Path("/usr/share/dict/words")
_WORD = re.compile(r"^[a-z]{2,10}$")


@lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    """The system word list's plain lowercase words of 2-10 letters, sorted (cached)."""
    if not DICTIONARY.exists():
        raise CorpusError(f"{DICTIONARY}: word list missing (apt-get install wamerican)")
    words = [w for w in DICTIONARY.read_text(encoding="utf-8", errors="ignore").split() if _WORD.match(w)]
    return tuple(sorted(set(words)))


def sentence(rng: np.random.Generator, min_words: int = 6, max_words: int = 14) -> str:
    """A random sentence of ``min_words`` to ``max_words`` words for a TTS clip, with one comma."""
    words = vocabulary()
    n = int(rng.integers(min_words, max_words + 1))
    picked = [words[i] for i in rng.integers(0, len(words), size=n)]
    cut = int(rng.integers(2, n - 1)) if n > 4 else n
    return " ".join(picked[:cut]) + ", " + " ".join(picked[cut:]) + "."
