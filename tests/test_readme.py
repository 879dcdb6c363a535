"""The README's Python API example runs as written, on a few mixed files."""

import re
from pathlib import Path

from weighter.corpus import ConversationMixer, MixerConfig

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tiny_bank, tmp_path, monkeypatch, capsys):
    import numpy as np
    import soundfile as sf

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1, "the README holds one Python example"
    mixer = ConversationMixer(tiny_bank, "train", MixerConfig(1, 2, 6, 8))
    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"call{i}.flac")
        sf.write(paths[-1], mixer.sample(rng).audio, 16000)
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], str(README), "exec"), {"paths": paths})
    out = capsys.readouterr().out
    assert ", 256)" in out and "groups among" in out and "p=" in out
    assert (tmp_path / "store_dir").is_dir()
