"""Bad input is refused with a message naming the bad value: one case per row of the README's table.

``python tests/test_bad_input.py`` prints that table (each case run, its exception and exact message).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # conftest, when run as a script
from conftest import STOCKFISH, save_tiny_model  # noqa: E402

from chess_env import ChessEnv, ChessVectorEnv, load_positions  # noqa: E402
from grpo_agent import GRPO  # noqa: E402
from grpo_agent.cli.config import ConfigError, load_config  # noqa: E402

TINY_ENV = dict(shaping=False)


def _files(folder: Path) -> None:
    """The files the cases read, in ``folder`` (the current directory while they run)."""
    (folder / "empty.epd").write_text("")
    (folder / "malformed.epd").write_text("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1\nhello world\n")
    model = save_tiny_model(folder / "tiny.zip")
    data = Path(model).read_bytes()
    (folder / "truncated.zip").write_bytes(data[: len(data) // 2])
    from stable_baselines3 import PPO

    PPO("MlpPolicy", "CartPole-v1", n_steps=8, batch_size=8).save(folder / "ppo.zip")


def _predict_with_no_legal_move() -> None:
    model = GRPO.load("tiny.zip")
    obs = np.zeros((1, *model.observation_space.shape), np.float32)
    model.predict(obs, action_masks=np.zeros((1, 4672), bool))


def _illegal_action() -> None:
    env = ChessEnv(illegal_action="raise", **TINY_ENV)
    env.reset()
    env.step(0)  # a1 north by 1: a rook move through the own pawn on a2


def _grpo(num_envs: int = 4, **kwargs: Any) -> None:
    GRPO("MlpPolicy", ChessVectorEnv(num_envs, **TINY_ENV), **{"group_size": 2, **kwargs})


#: (what, how, exception, a pattern the message must contain: the bad value)
CASES: list[tuple[str, Callable[[], Any], type[BaseException], str]] = [
    ("invalid FEN (reset option)", lambda: ChessEnv(**TINY_ENV).reset(options={"fen": "not a fen"}),
     ValueError, r"invalid FEN 'not a fen'"),
    ("FEN of an impossible position", lambda: ChessEnv(**TINY_ENV).reset(options={"fen": "8/8/8/8/8/8/8/8 w - - 0 1"}),
     ValueError, r"invalid position '8/8/8/8/8/8/8/8 w - - 0 1'"),
    ("invalid FEN in a start-position list", lambda: load_positions(["not a fen"]), ValueError, r"fens\[0\]: invalid FEN"),
    ("empty position file", lambda: load_positions("empty.epd"), ValueError, r"empty\.epd: no positions"),
    ("malformed position file", lambda: load_positions("malformed.epd"), ValueError, r"malformed\.epd:2: invalid FEN 'hello world'"),
    ("missing position file", lambda: load_positions("missing.epd"), ValueError, r"'missing\.epd' does not exist"),
    ("unknown config key", lambda: load_config(None, ["algo.learning_rat=1e-3"]), ConfigError, r"algo\.learning_rat"),
    ("config value of the wrong type", lambda: load_config(None, ["algo.n_epochs=two"]), ConfigError,
     r"algo\.n_epochs must be int, got 'two'"),
    ("config value of the wrong type (bool for a number)", lambda: load_config(None, ["env.max_plies=true"]),
     ConfigError, r"env\.max_plies must be int, got True"),
    ("zero num_envs", lambda: ChessVectorEnv(0, **TINY_ENV), ValueError, r"num_envs must be a positive int, got 0"),
    ("negative horizon", lambda: _grpo(horizon=-1), ValueError, r"horizon must be a positive integer, got -1"),
    ("zero group_size", lambda: _grpo(group_size=0), ValueError, r"group_size must be a positive integer, got 0"),
    ("zero batch_size", lambda: _grpo(batch_size=0), ValueError, r"batch_size must be a positive integer, got 0"),
    ("zero max_plies", lambda: ChessEnv(max_plies=0, **TINY_ENV), ValueError, r"max_plies must be at least 1, got 0"),
    ("num_envs not divisible by group_size", lambda: _grpo(group_size=3), ValueError,
     r"group_size=3 does not divide num_envs=4"),
    ("unknown opponent", lambda: ChessEnv(opponent="grandmaster", **TINY_ENV), ValueError, r"unknown opponent 'grandmaster'"),
    ("unknown reward transform", lambda: ChessEnv(reward_transform="elo", **TINY_ENV), ValueError,
     r"unknown reward_transform 'elo'"),
    ("Stockfish path that is not an engine", lambda: ChessEnv(engine_path="/bin/true"), OSError,
     r"'/bin/true' does not answer the UCI handshake"),
    ("Stockfish path that is not executable", lambda: ChessEnv(engine_path="empty.epd"), OSError,
     r"'empty\.epd' is not an executable file"),
    ("truncated checkpoint", lambda: GRPO.load("truncated.zip"), ValueError, r"'truncated\.zip' is not a complete"),
    ("checkpoint of another algorithm", lambda: GRPO.load("ppo.zip"), ValueError,
     r"'ppo\.zip' is not a GRPO model: its policy is stable_baselines3\.common\.policies\.ActorCriticPolicy"),
    ("checkpoint for another observation space", lambda: GRPO.load("tiny.zip", env=ChessVectorEnv(4, history=1, **TINY_ENV)),
     ValueError, r"'tiny\.zip' was saved for observations of shape \(21, 8, 8\); this env's are \(33, 8, 8\)"),
    ("all-False action mask given to predict", _predict_with_no_legal_move, ValueError, r"rows \[0\] allow no move"),
    ("illegal action with illegal_action='raise'", _illegal_action, ValueError, r"action 0 is not a legal move in position"),
]
NEEDS_ENGINE = {"Stockfish path that is not an engine"}  # /bin/true exists where Stockfish does not matter


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad_input")
    _files(path)
    return path


@pytest.mark.parametrize("what", [case[0] for case in CASES])
def test_bad_input_is_refused_naming_the_value(what, folder, monkeypatch):
    _, run, error, pattern = next(case for case in CASES if case[0] == what)
    monkeypatch.chdir(folder)
    with pytest.raises(error, match=pattern):
        run()


def test_the_cli_turns_refused_values_into_config_errors(tmp_path, capsys):
    from grpo_agent.cli import main

    base = ["train", "--set", f"train.runs_dir={tmp_path}", "--set", "env.shaping=false", "--set", "env.num_envs=4",
            "--wandb", "disabled"]
    for override, message in (("env.num_envs=0", "env: num_envs must be a positive int, got 0"),
                              ("algo.group_size=3", "algo: group_size=3 does not divide num_envs=4"),
                              ("env.opponent=grandmaster", "env: unknown opponent 'grandmaster'"),
                              ("train.update_threads=0",
                               "train.update_threads: update_threads=0 must be a positive int or None")):
        with pytest.raises(SystemExit) as exc:
            main([*base, "--set", override])
        assert exc.value.code == 2 and message in capsys.readouterr().err


def markdown() -> str:
    """Run every case in a scratch folder; the README's table of exceptions and messages."""
    lines = ["| bad input | exception | message |", "|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        _files(Path(tmp))
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            for what, run, _, _ in CASES:
                try:
                    run()
                    raise AssertionError(f"{what}: no error")
                except Exception as exc:  # noqa: BLE001 (the table shows whatever it is)
                    text = str(exc).replace("|", "\\|").replace("\n", " ")
                    text = text if len(text) <= 220 else text[:217] + "..."
                    lines.append(f"| {what} | `{type(exc).__name__}` | {text} |")
        finally:
            os.chdir(cwd)
    return "\n".join(lines)


if __name__ == "__main__":
    if STOCKFISH is None:
        sys.exit("the table's engine-path rows need Stockfish installed")
    print(markdown())
