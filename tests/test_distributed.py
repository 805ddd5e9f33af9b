"""Rollouts on Ray actors: the local path's results with one worker, learn() through two, faults, a loopback cluster."""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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
ROOT = Path(__file__).resolve().parent.parent
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


# -- a loopback cluster: ``ray start --head`` on 127.0.0.1, joined by ``grpo-chess train --backend ray`` ---------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(root: int) -> set[int]:
    """``root`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(children.get(pid, []))
    return tree


def listening_addresses(pids: set[int]) -> set[str]:
    """The local addresses of the TCP sockets that ``pids`` listen on (from /proc/net/tcp and tcp6)."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                hex_ip = cols[1].split(":")[0]
                raw = bytes.fromhex(hex_ip)
                # /proc stores each 32-bit word in host (little-endian) order.
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                addresses.add(socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, words))
    return addresses


def is_loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1")


@pytest.mark.slow
def test_loopback_cluster_through_the_cli(tmp_path):
    port = free_port()
    # Ray's token authentication with a token of the test's own: a driver joining by explicit address only sends
    # one with RAY_AUTH_MODE=token (the README's multi-node launch does the same).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    ray_cli = str(Path(sys.executable).parent / "ray")
    # Its own session folder, short: Ray's unix sockets live under it, and their paths have a 107-byte limit.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         "--disable-usage-stats", f"--ray-client-server-port={free_port()}",
         f"--dashboard-agent-listen-port={free_port()}", f"--temp-dir={temp_dir}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + 90
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert head.poll() is None and time.monotonic() < deadline, "ray start --head did not come up"
            time.sleep(0.5)
        config = tmp_path / "tiny.yaml"
        config.write_text(
            "env: {num_envs: 8, reward_depth: 1, max_plies: 40}\n"
            "algo: {policy: ChessResNetPolicy, group_size: 4, horizon: 4, batch_size: 16, n_epochs: 1, seed: 0,\n"
            "       policy_kwargs: {features_extractor_kwargs: {n_blocks: 1, channels: 8}}}\n"
            f"train: {{total_timesteps: 64, runs_dir: {tmp_path / 'runs'}, name: loop, checkpoint_every: 0,\n"
            "        progress_bar: false}\n"
        )
        train = subprocess.Popen(
            [sys.executable, "-m", "grpo_agent.cli", "train", "--config", str(config), "--wandb", "disabled",
             "--backend", "ray", "--address", f"127.0.0.1:{port}", "--workers", "2"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        # While it trains, every socket the cluster's processes (its workers included) listen on is loopback.
        deadline = time.monotonic() + 300
        while train.poll() is None and time.monotonic() < deadline:
            seen |= listening_addresses(process_tree(head.pid))
            time.sleep(0.5)
        if train.poll() is None:
            train.kill()
        output = train.communicate()[0]
        assert train.returncode == 0, output[-3000:]
    finally:
        head.send_signal(signal.SIGTERM)  # --block: ray start stops the processes it started
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert seen and all(is_loopback(a) for a in seen), seen
    frame = pd.read_csv(next((tmp_path / "runs").glob("loop-*")) / "progress.csv")
    assert len(frame) == 2 and (frame["rollout/worker_restarts"] == 0).all()
