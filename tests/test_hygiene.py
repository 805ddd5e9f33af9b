"""No Stockfish process outlives a training process: after a normal exit, an exception, Ctrl-C in the middle of
``learn`` or ``close()``, every engine it started (the shaping pool's and a Stockfish opponent's) is gone.

Each case trains in a subprocess; the test finds the engines as that process's children (``/proc``), by pid,
while it runs, and checks them after it ends.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import alive, needs_stockfish

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import signal, sys, torch

# Ctrl-C as at a terminal, however the suite was started: a shell starts a background job with SIGINT ignored,
# and a child inherits that (then Python installs no KeyboardInterrupt handler and the sigint case never ends).
signal.signal(signal.SIGINT, signal.default_int_handler)
from chess_env import ChessVectorEnv
from grpo_agent import GRPO
from stable_baselines3.common.callbacks import BaseCallback

torch.set_num_threads(1)
mode = sys.argv[1]
env = ChessVectorEnv(2, reward_depth=1, opponent="sf:depth=1", start_positions="builtin", engine_processes=2)
model = GRPO("ChessResNetPolicy", env, group_size=2, horizon=4, batch_size=8, seed=0,
             policy_kwargs=dict(features_extractor_kwargs=dict(n_blocks=1, channels=8)))


class Stage(BaseCallback):
    def _on_step(self):
        if self.num_timesteps == 2 * 4 * 2:  # in the second rollout: every engine has been started
            print("learning", flush=True)
            if mode == "exception":
                raise RuntimeError("a callback failed")
        return True


model.learn(10**6 if mode == "sigint" else 2 * 4 * 3, callback=Stage())
if mode == "close":
    model.env.close()
    print("closed", flush=True)
"""


def engine_children(pid: int) -> set[int]:
    """The Stockfish processes whose parent is ``pid``."""
    found = set()
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text() if entry.isdigit() else ""
        except OSError:
            continue
        if stat and "(stockfish" in stat and int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.add(int(entry))
    return found


@pytest.mark.slow
@needs_stockfish
@pytest.mark.parametrize("mode", ["exit", "close", "exception", "sigint"])
def test_no_stockfish_process_outlives_training(mode):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    engines: set[int] = set()
    try:
        line = proc.stdout.readline()  # "learning": mid-learn, the engines are up
        assert line.strip() == "learning", proc.stderr.read()
        engines |= engine_children(proc.pid)
        if mode == "sigint":
            proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # failed while it runs: a training left behind would slow every later test
            proc.kill()
            proc.communicate()
    # Two shaping processes and each game's opponent engine, all seen; then gone however the process ended.
    assert len(engines) == 2 + 2, (engines, err)
    # An uncaught KeyboardInterrupt ends Python by the signal itself, as the shell expects of Ctrl-C.
    expected = {"exit": 0, "close": 0, "exception": 1, "sigint": -signal.SIGINT}[mode]
    assert proc.returncode == expected, err
    assert {"exception": "a callback failed", "sigint": "KeyboardInterrupt"}.get(mode, "") in err
    if mode == "close":
        assert out.strip() == "closed"
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in engines) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in engines if alive(pid)]
