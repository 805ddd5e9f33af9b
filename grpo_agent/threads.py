"""Torch threads by phase of an on-policy ``learn()``: the update takes the cores that the rollout's engines leave idle."""

from __future__ import annotations

import os

import torch as th
from stable_baselines3.common.callbacks import BaseCallback


class UpdateThreads(BaseCallback):
    """Runs each update (``train()``) on ``update_threads`` torch intra-op threads, and the rollouts on the
    threads the process had when ``learn()`` started.

    On one machine a rollout shares the CPU with the Stockfish processes that score it, so ``grpo-chess train``
    samples on one torch thread (``train.torch_threads``). The update then runs alone: the engines wait for the
    next rollout, and on one thread the update leaves their cores idle. The update's convolutions split across
    threads well: the 4 x 64 ResNet's forward and backward pass over 256 positions takes about 270 ms on one
    thread of this project's 2-core machine and 150 ms on two (``benchmarks/train_throughput.py`` measures what
    that gives a whole run).

    SB3's on-policy loop calls ``on_rollout_end`` just before ``train()`` and ``on_rollout_start`` as the next
    rollout begins, so this works for :class:`~grpo_agent.GRPO` and sb3-contrib's ``MaskablePPO`` alike. Leave it
    out when the rollouts run elsewhere at the same time as the update (nothing in this project does that: its
    Ray rollouts also wait for the update).

    :param update_threads: threads of the update; ``None``: one per core (``os.cpu_count()``)
    """

    def __init__(self, update_threads: int | None = None, verbose: int = 0) -> None:
        super().__init__(verbose)
        if update_threads is not None and (isinstance(update_threads, bool) or not isinstance(update_threads, int)
                                           or update_threads < 1):
            raise ValueError(f"update_threads={update_threads!r} must be a positive int or None (one per core)")
        self.update_threads = update_threads or os.cpu_count() or 1
        self.rollout_threads: int | None = None

    def _on_training_start(self) -> None:
        self.rollout_threads = th.get_num_threads()

    def _on_rollout_start(self) -> None:
        assert self.rollout_threads is not None
        th.set_num_threads(self.rollout_threads)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        th.set_num_threads(self.update_threads)

    def _on_training_end(self) -> None:
        assert self.rollout_threads is not None
        th.set_num_threads(self.rollout_threads)
