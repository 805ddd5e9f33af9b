"""Rollouts on Ray actors: the local path's results with one worker, learn() through two, faults, a loopback cluster."""

import os
import signal
import sys
import threading
import time
from pathlib import Path

import chess
import numpy as np
import pandas as pd
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure

from chess_env import ChessVectorEnv
from conftest import needs_stockfish
from grpo_agent import GRPO
from grpo_agent.distributed import RayRolloutConfig

ray = pytest.importorskip("ray", reason="Ray is in the dev extra: pip install -e '.[dev]'")
# The workers unpickle this module's opponents by value: they cannot import the tests folder.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

TINY = dict(features_extractor_kwargs=dict(n_blocks=1, channels=8))
#: statistics that are rates of the wall clock, or the backend's own counters: the rest must match the local path
TIMING = {"plies_per_s", "scored_moves_per_s", "engine_wait_frac", "worker_restarts", "resubmitted_groups"}

pytestmark = needs_stockfish


def make_model(group_mode="games", num_envs=8, backend="local", workers=1, game_kwargs=None, **kwargs):
    game = dict(shaping=True, reward_depth=1, max_plies=40, start_positions="builtin", **(game_kwargs or {}))
    env = ChessVectorEnv(num_envs, engine_processes=1, **game)
    kwargs = {"group_size": 4, "horizon": 6, "batch_size": 16, "n_epochs": 1, "seed": 3, **kwargs}
    return GRPO("ChessResNetPolicy", env, group_mode=group_mode, policy_kwargs=TINY, rollout_backend=backend,
                num_rollout_workers=workers, **kwargs)


class ShareCheck(BaseCallback):
    """Records, after each rollout, whether every group of the buffer has played plies."""

    def __init__(self):
        super().__init__()
        self.complete: list[bool] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buffer = self.model.rollout_buffer
        if hasattr(buffer, "candidates"):  # move groups: every position of every step has its candidates
            played = buffer.candidates[: buffer.pos * buffer.n_envs].any(axis=1)
        else:
            played = buffer.valid.any(axis=(1, 2))
        self.complete.append(bool(played.all()))


def test_backend_options_are_checked():
    env = ChessVectorEnv(4, shaping=False)
    with pytest.raises(ValueError, match="rollout_backend must be one of .*'rya'"):
        GRPO("MlpPolicy", env, group_size=2, rollout_backend="rya")
    with pytest.raises(ValueError, match="num_workers must be a positive integer, got 0"):
        GRPO("MlpPolicy", env, group_size=2, rollout_backend="ray", num_rollout_workers=0)
    with pytest.raises(ValueError, match=r"unknown rollout_options \['cpus'\]"):
        GRPO("MlpPolicy", env, group_size=2, rollout_backend="ray", rollout_options={"cpus": 2})
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        RayRolloutConfig(timeout_s=0)
    env.close()


@pytest.mark.parametrize("group_mode", ["games", "moves"])
def test_one_worker_is_the_local_path(ray_local, group_mode):
    """Same seed, one worker: the same rollouts, advantages and statistics, and the same weights after learning."""
    extra = {"dirichlet_frac": 0.25} if group_mode == "games" else {"group_size": 3}
    runs = {}
    for backend in ("local", "ray"):
        model = make_model(group_mode, backend=backend, **extra)
        model.learn(2 * 8 * 6)
        runs[backend] = model
    local, remote = runs["local"], runs["ray"]
    for name in ("observations", "actions", "log_probs", "advantages", "weights", "action_masks"):
        np.testing.assert_array_equal(getattr(local.rollout_buffer, name), getattr(remote.rollout_buffer, name), err_msg=name)
    for key, value in local.last_rollout_stats.items():
        if key not in TIMING:
            assert remote.last_rollout_stats[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    for (name, a), b in zip(local.policy.state_dict().items(), remote.policy.state_dict().values()):
        assert th.equal(a, b), name
    assert local.num_timesteps == remote.num_timesteps
    for model in runs.values():
        model.close_rollout_workers()
        model.env.close()


@pytest.mark.parametrize("group_mode", ["games", "moves"])
def test_learn_through_two_workers(ray_local, tmp_path, group_mode):
    model = make_model(group_mode, backend="ray", workers=2, rollout_options={"groups_per_worker": 1 if group_mode == "games" else 2})
    model.set_logger(configure(str(tmp_path), ["csv"]))
    check = ShareCheck()
    model.learn(2 * 8 * 6, callback=check)
    frame = pd.read_csv(tmp_path / "progress.csv")
    assert len(frame) == 2 and check.complete == [True] * 2
    assert (frame["rollout/worker_restarts"] == 0).all() and (frame["rollout/resubmitted_groups"] == 0).all()
    assert frame["train/loss"].notna().all() and (frame["train/ratio_dev_first_batch"] < 1e-5).all()
    rollouts = model._ray_rollouts
    assert rollouts.n_shares == (2 if group_mode == "games" else 4) and len(set(rollouts.pids)) == 2
    model.close_rollout_workers()
    model.env.close()


class SignalOnFirstMove:
    """An in-env opponent (a random mover) whose first call in any process writes that process's id to ``path``,
    once: a restarted worker finds the file and plays on."""

    def __init__(self, path):
        self.path = Path(path)

    def __call__(self, board: chess.Board) -> chess.Move:
        if not self.path.exists():
            self.path.write_text(str(os.getpid()))
        return sorted(board.legal_moves, key=chess.Move.uci)[0]


class HangOnFirstMove(SignalOnFirstMove):
    """As :class:`SignalOnFirstMove`, and then never answers (a hung worker)."""

    def __call__(self, board: chess.Board) -> chess.Move:
        if not self.path.exists():
            self.path.write_text(str(os.getpid()))
            while True:
                time.sleep(1)
        return sorted(board.legal_moves, key=chess.Move.uci)[0]


def kill_when_written(path: Path, timeout: float = 120.0) -> threading.Thread:
    """SIGKILL the process whose id ``path`` receives, from another thread."""
    def run():
        deadline = time.monotonic() + timeout
        while not path.exists() or not path.read_text():
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        os.kill(int(path.read_text()), signal.SIGKILL)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_worker_killed_mid_rollout_loses_no_group(ray_local, tmp_path):
    marker = tmp_path / "victim.pid"
    model = make_model(backend="ray", workers=2, game_kwargs={"opponent": SignalOnFirstMove(marker)},
                       rollout_options={"groups_per_worker": 1, "timeout_s": 120})
    model.set_logger(configure(str(tmp_path), ["csv"]))
    killer = kill_when_written(marker)
    check = ShareCheck()
    model.learn(3 * 8 * 6, callback=check)
    killer.join(1)
    frame = pd.read_csv(tmp_path / "progress.csv")
    assert len(frame) == 3 and check.complete == [True] * 3 and model.num_timesteps >= 3 * 8 * 6
    assert frame["rollout/worker_restarts"].iloc[-1] == 1
    assert frame["rollout/resubmitted_groups"].iloc[-1] == 1
    model.close_rollout_workers()
    model.env.close()


@pytest.mark.slow
def test_hung_worker_is_restarted(ray_local, tmp_path):
    marker = tmp_path / "hung.pid"
    model = make_model(backend="ray", workers=2, game_kwargs={"opponent": HangOnFirstMove(marker)},
                       rollout_options={"groups_per_worker": 1, "timeout_s": 15})
    check = ShareCheck()
    model.learn(2 * 8 * 6, callback=check)
    assert check.complete == [True, True]
    assert model._ray_rollouts.worker_restarts == 1 and model._ray_rollouts.resubmitted_groups == 1
    model.close_rollout_workers()
    model.env.close()
