"""Learning-curve plots (PNG) from a run's episode rewards."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over `window` episodes (shorter at the start)."""
    if len(values) == 0:
        return values
    c = np.cumsum(np.insert(np.asarray(values, np.float64), 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def learning_curve(path: Path, env_steps: np.ndarray, totals: np.ndarray, title: str,
                   per_agent: dict[str, np.ndarray] | None = None, window: int = 100) -> Path:
    """Plots mean episode reward (sum over agents; per agent if given) against env steps."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if len(totals):
        ax.plot(env_steps, totals, color="tab:blue", alpha=0.15, lw=0.6, label="episode")
        ax.plot(env_steps, smooth(totals, window), color="tab:blue", lw=1.8, label=f"mean of last {window} (sum over agents)")
        for name, values in (per_agent or {}).items():
            ax.plot(env_steps, smooth(values, window), lw=1.0, label=name)
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode reward")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
