"""Pictures and a Markdown report for a person to look at: slot timelines, groups, figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from weighter.embedding_set import EmbeddingSet


def timeline_png(embedding_set: EmbeddingSet, path: str | Path, groups: dict[int, int] | None = None,
                 truth: list[tuple[float, float, str]] | None = None) -> None:
    """The active slots' weightings over time, labelled with the groups they fell in; the true
    speaker turns (RTTM) underneath when known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    active = [int(n) for n in np.flatnonzero(embedding_set.active)]
    rows = len(active) + (1 if truth else 0)
    fig, axes = plt.subplots(max(rows, 1), 1, figsize=(10, 0.9 * max(rows, 1) + 0.8), sharex=True, squeeze=False)
    t = np.arange(embedding_set.weightings.shape[1]) / embedding_set.timeline_rate
    cmap = plt.get_cmap("tab10")
    for ax, n in zip(axes[:, 0], active):
        group = (groups or {}).get(n)
        label = f"slot {n}" + (f" - group {group}" if group is not None and group >= 0 else
                               " - no group" if group is not None else "")
        ax.fill_between(t, embedding_set.weightings[n], color=cmap(n % 10), alpha=0.8)
        ax.set_ylim(0, 1)
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if truth:
        ax = axes[-1, 0]
        speakers = sorted({s for _, _, s in truth})
        for start, end, speaker in truth:
            k = speakers.index(speaker)
            ax.broken_barh([(start, end - start)], (k, 0.8), color="0.35")
        ax.set_yticks([k + 0.4 for k in range(len(speakers))], speakers, fontsize=7)
        ax.set_ylabel("truth", rotation=0, ha="right", va="center", fontsize=8)
    axes[-1, 0].set_xlabel("seconds")
    fig.suptitle(Path(embedding_set.path).name, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown_report(path: str | Path, title: str, sections: list[tuple[str, str]]) -> None:
    """Write a Markdown file: ``title``, then one ``##`` section per (heading, body)."""
    text = [f"# {title}", ""]
    for heading, body in sections:
        text += [f"## {heading}", "", body.rstrip(), ""]
    Path(path).write_text("\n".join(text))
