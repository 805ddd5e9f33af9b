"""Progress of long work: a tqdm bar on a terminal, a plain line every few seconds in a log."""

from __future__ import annotations

import sys
import time
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

#: seconds between the plain progress lines written when stdout is not a terminal
PLAIN_PROGRESS_INTERVAL = 10.0


class Progress:
    """A tqdm bar on a terminal; otherwise a plain line every ``interval`` seconds (done, rate, ETA and the
    latest ``postfix`` values), so a piped or logged run shows what it does instead of nothing or carriage-return
    noise.

    :param total: the amount of work; :param desc: what it is (the line's first word); :param unit: its unit
    """

    def __init__(self, total: int, desc: str, unit: str, interval: float = PLAIN_PROGRESS_INTERVAL) -> None:
        self.total, self.desc, self.unit, self.n, self.interval = total, desc, unit, 0, interval
        self.start = self.last = time.perf_counter()
        self.bar = None
        if sys.stdout.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stdout, dynamic_ncols=True)

    def update(self, n: int, **postfix: float) -> None:
        """Add ``n`` units of work done; ``postfix`` values are shown beside the bar or in the line."""
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
            return
        now = time.perf_counter()
        if now - self.last >= self.interval:
            self.last = now
            rate = self.n / max(now - self.start, 1e-9)
            eta = max(self.total - self.n, 0) / rate if rate > 0 else float("inf")
            extra = "".join(f", {k} {v:.4g}" for k, v in postfix.items())
            print(f"{self.desc}: {self.n:,}/{self.total:,} {self.unit} ({100 * self.n / max(self.total, 1):.0f}%, "
                  f"{rate:.1f}/s, ETA {_duration(eta)}{extra})", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressCallback(BaseCallback):
    """:class:`Progress` over a ``learn()`` in timesteps, with the rollouts' key health metrics beside it.

    :param total_timesteps: the run's budget (timesteps this ``learn()`` will play)
    :param desc: the line's first word
    :param metrics: ``last_rollout_stats`` keys shown (those the rollout has)
    """

    def __init__(self, total_timesteps: int, desc: str = "train",
                 metrics: tuple[str, ...] = ("entropy_norm", "regret", "action_agreement_mean", "plies_per_s")) -> None:
        super().__init__()
        self.total_timesteps, self.desc, self.metrics = total_timesteps, desc, metrics
        self._progress: Progress | None = None
        self._seen = 0

    def _on_training_start(self) -> None:
        self._progress = Progress(self.total_timesteps, self.desc, "steps")
        self._seen = self.model.num_timesteps

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        assert self._progress is not None
        stats: dict[str, Any] = getattr(self.model, "last_rollout_stats", {})
        done, self._seen = self.model.num_timesteps - self._seen, self.model.num_timesteps
        self._progress.update(done, **{k: stats[k] for k in self.metrics if k in stats})

    def _on_training_end(self) -> None:
        if self._progress is not None:
            self._progress.close()
