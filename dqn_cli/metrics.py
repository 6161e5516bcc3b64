"""What a run reports: TensorBoard scalars against env steps, a progress bar or log lines.

TensorBoard tags (grouped as in CleanRL / SB3, so users find them):
``charts/episodic_return``, ``charts/episodic_length``, ``charts/epsilon``,
``losses/td_loss``, ``losses/q_values``, ``eval/mean_return``,
``perf/env_steps_per_second``, ``perf/updates_per_second``, and ``per/*``
when prioritized replay is on. The x-axis is always the env step.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np

log = logging.getLogger("dqn")


def use_progress_bar(mode: str, multirun: bool) -> bool:
    """auto: a bar only on a terminal and never under multirun (RL_NOTES 18)."""
    if mode == "bar":
        return True
    if mode in ("log", "off"):
        return False
    return sys.stderr.isatty() and not multirun


class RunLogger:
    """TensorBoard writer, recent-episode window, and the live terminal view.

    Args:
        tb_dir: TensorBoard directory of the run.
        total_steps: the run's env-step budget (for the bar and ETA).
        start_step: env step the run (re)starts from; TensorBoard points at
            or after it from an earlier life of the run are purged, so a
            resumed curve never forks (RL_NOTES 17).
        progress: "bar", "log" or "off" (already resolved from "auto").
    """

    def __init__(self, tb_dir: Path, total_steps: int, start_step: int = 0, progress: str = "log"):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(tb_dir), purge_step=start_step if start_step > 0 else None)
        self.total_steps = total_steps
        self.recent_returns: deque[float] = deque(maxlen=20)
        self.progress = progress
        self.bar = None
        if progress == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, smoothing=0.05)
        self._rate_step = start_step
        self._rate_updates = 0
        self._rate_time = time.perf_counter()
        self._start_time = self._rate_time
        self._start_step = start_step

    # ------------------------------------------------------------- scalars
    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def episode(self, episodic_return: float, length: int, step: int) -> None:
        self.recent_returns.append(episodic_return)
        self.writer.add_scalar("charts/episodic_return", episodic_return, step)
        self.writer.add_scalar("charts/episodic_length", length, step)

    def rates(self, step: int, updates: int) -> tuple[float, float]:
        """Env steps/s and updates/s since the last call."""
        now = time.perf_counter()
        dt = max(now - self._rate_time, 1e-9)
        sps = (step - self._rate_step) / dt
        ups = (updates - self._rate_updates) / dt
        self._rate_step, self._rate_updates, self._rate_time = step, updates, now
        return sps, ups

    @property
    def mean_recent_return(self) -> float:
        return float(np.mean(self.recent_returns)) if self.recent_returns else float("nan")

    # ------------------------------------------------------------ terminal
    def advance(self, step: int, epsilon: float) -> None:
        """Move the bar to ``step`` (cheap; called every vector step)."""
        if self.bar is not None:
            self.bar.update(step - self.bar.n)

    def status(self, step: int, epsilon: float, sps: float, extra: str = "") -> None:
        """Refresh the bar's postfix, or print one plain log line."""
        ret = self.mean_recent_return
        if self.bar is not None:
            self.bar.set_postfix_str(f"return {ret:.1f} eps {epsilon:.3f}{extra}", refresh=False)
        elif self.progress == "log":
            elapsed = time.perf_counter() - self._start_time
            done = step - self._start_step
            eta = (self.total_steps - step) * elapsed / done if done > 0 else float("nan")
            log.info(
                "step %d/%d  %.0f steps/s  return(20) %.1f  eps %.3f  eta %s%s",
                step, self.total_steps, sps, ret, epsilon, _hms(eta), extra,
            )  # fmt: skip

    def message(self, text: str) -> None:
        """A line that does not break the bar."""
        if self.bar is not None:
            self.bar.write(text)
            logging.getLogger("dqn").debug(text)
        else:
            log.info(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.writer.flush()
        self.writer.close()


def _hms(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
