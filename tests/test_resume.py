"""Exact resume: learn N, save, load into a fresh env (a new process's generators), learn M equals learn N + M,
bit for bit on CPU, in both group modes; and the pieces it rests on (env state, checkpoints, the progress log)."""

import importlib.util
import random

import chess
import numpy as np
import pytest
import torch as th
from conftest import needs_stockfish
from stable_baselines3.common.logger import Logger

from chess_env import ChessVectorEnv
from chess_env.engine import StockfishPool
from grpo_agent import GRPO
from grpo_agent.resume import ProgressCSV, RolloutCheckpointCallback, checkpoint_timesteps

TINY = dict(features_extractor_kwargs=dict(n_blocks=1, channels=8))


def make_env(pool, **kwargs) -> ChessVectorEnv:
    kwargs = {"reward_depth": 1, "start_positions": "builtin", "max_plies": 60, **kwargs}
    return ChessVectorEnv(4, engine=pool, **kwargs)


def make_model(pool, mode: str, env_kwargs: dict | None = None, **algo) -> GRPO:
    algo = {"group_size": 2, "horizon": 3, "n_epochs": 2, "batch_size": 4, "dirichlet_frac": 0.25, **algo}
    return GRPO("ChessResNetPolicy", make_env(pool, **(env_kwargs or {})), group_mode=mode, seed=0,
                policy_kwargs=TINY, **algo)


def params(model: GRPO) -> th.Tensor:
    return th.nn.utils.parameters_to_vector(model.policy.parameters()).detach().clone()


def scramble_global_generators() -> None:
    """What a new process would have: generators unrelated to the interrupted run's."""
    th.manual_seed(12345)
    np.random.seed(12345)
    random.seed(12345)


@pytest.fixture(scope="module")
def pool():
    with StockfishPool(processes=1) as pool:
        yield pool


CASES = {
    "games, self-play": ("games", {}, {}),
    "games, random opponent, alternating colours, controllers": (
        "games", {"opponent": "random", "agent_color": "alternate"},
        {"target_entropy": 0.5, "kl_target": 0.01, "kl_coef": 0.05, "entropy_floor": 0.1, "on_collapse": "rollback"},
    ),
    "moves, games carried over between rollouts": ("moves", {"max_plies": 8}, {"horizon": 2}),
}


@needs_stockfish
@pytest.mark.parametrize("case", list(CASES))
def test_interrupted_and_resumed_equals_uninterrupted(pool, tmp_path, case):
    mode, env_kwargs, algo = CASES[case]
    first = make_model(pool, mode, env_kwargs, **algo)
    first.learn(2 * 4 * first.horizon)
    first.save(tmp_path / "interrupted.zip")
    first_steps, first_rollouts = first.num_timesteps, first.n_rollouts
    first.env.close()

    scramble_global_generators()
    resumed = GRPO.load(tmp_path / "interrupted.zip", env=make_env(pool, **env_kwargs))
    resumed.learn(2 * 4 * resumed.horizon, reset_num_timesteps=False)
    resumed.env.close()

    # Without the saved state the same resume drifts: the equality below is the state's doing.
    scramble_global_generators()
    unrestored = GRPO.load(tmp_path / "interrupted.zip", env=make_env(pool, **env_kwargs))
    unrestored._resume_state = None
    unrestored.learn(2 * 4 * unrestored.horizon, reset_num_timesteps=False)
    unrestored.env.close()

    whole = make_model(pool, mode, env_kwargs, **algo)
    whole.learn(resumed.num_timesteps)
    assert whole.n_rollouts == resumed.n_rollouts > first_rollouts and resumed.num_timesteps > first_steps
    assert th.equal(params(whole), params(resumed))
    assert not th.equal(params(whole), params(unrestored))
    for a, b in zip(whole.policy.optimizer.state_dict()["state"].values(),
                    resumed.policy.optimizer.state_dict()["state"].values()):
        assert th.equal(a["exp_avg"], b["exp_avg"]) and th.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert whole._noise_rng.bit_generator.state == resumed._noise_rng.bit_generator.state
    assert whole.env.get_state() == resumed.env.get_state()  # ...and the games they would play next
    whole.env.close()


@needs_stockfish
def test_checkpoints_between_rollouts_resume_a_scheduled_run_exactly(pool, tmp_path):
    """The path of ``grpo-chess train --resume``: a checkpoint written mid-run by the callback, the same total."""
    schedule = dict(learning_rate=lambda progress: 1e-3 * progress, ent_coef=lambda progress: 0.05 * progress)
    whole = make_model(pool, "games", **schedule)
    total = 4 * 4 * whole.horizon
    whole.learn(total, callback=RolloutCheckpointCallback(2, tmp_path))
    whole.env.close()
    checkpoints = sorted(tmp_path.glob("grpo_*_steps.zip"), key=checkpoint_timesteps)
    assert [checkpoint_timesteps(p) for p in checkpoints] == [int(p.name.split("_")[1]) for p in checkpoints]
    assert len(checkpoints) == 2  # after rollouts 2 and 4 (the second when training ends)

    scramble_global_generators()
    resumed = GRPO.load(checkpoints[0], env=make_env(pool))
    assert resumed.n_rollouts == 2
    resumed.learn(total - resumed.num_timesteps, reset_num_timesteps=False)
    resumed.env.close()
    assert resumed.num_timesteps == whole.num_timesteps and th.equal(params(whole), params(resumed))


@needs_stockfish
def test_rollback_snapshots_survive_save_and_load(pool, tmp_path):
    model = make_model(pool, "games", agreement_ceiling=0.999, on_collapse="rollback", rollback_margin=0.0)
    model.learn(4 * model.horizon)
    (guard,) = model.guardrails.guards
    assert guard.healthy_snapshot is not None  # a near-uniform policy agrees with nothing: healthy
    model.save(tmp_path / "m.zip")
    model.env.close()
    loaded = GRPO.load(tmp_path / "m.zip", env=make_env(pool))
    assert loaded.guardrails.guards[0].healthy_snapshot is None  # SB3's pickle leaves it out...
    loaded.learn(0, reset_num_timesteps=False)  # ...the resume state brings it back
    restored = loaded.guardrails.guards[0].healthy_snapshot
    for name, value in guard.healthy_snapshot["policy"].items():
        assert th.equal(restored["policy"][name], value), name
    loaded.env.close()


def test_env_state_round_trip_continues_every_game_exactly():
    kwargs = dict(shaping=False, opponent="random", agent_color="alternate", start_positions="builtin", max_plies=9)
    env = ChessVectorEnv(3, autoreset_mode="same_step", **kwargs)
    env.reset(seed=3)
    rng = np.random.default_rng(0)

    def play(venv, steps):
        out = []
        for _ in range(steps):
            masks = venv.action_masks()
            actions = np.array([rng.choice(np.flatnonzero(m)) for m in masks])
            obs, rewards, terminated, truncated, _ = venv.step(actions)
            out.append((obs, rewards, terminated, truncated, [b.fen() for b in venv.boards]))
        return out

    play(env, 7)
    state = env.get_state()
    copy = ChessVectorEnv(3, autoreset_mode="next_step", **kwargs)
    obs = copy.set_state(state)
    assert copy.autoreset_mode.name == "SAME_STEP" and np.array_equal(obs, env._obs)
    assert [b.move_stack for b in copy.boards] == [b.move_stack for b in env.boards]
    rng_state = rng.bit_generator.state
    expected = play(env, 12)  # games end and restart from drawn starts: the generators are exercised
    rng.bit_generator.state = rng_state
    for a, b in zip(expected, play(copy, 12)):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="num_envs=2"):
        ChessVectorEnv(2, **kwargs).set_state(state)
    broken = dict(state["games"][0], moves=["e2e5"])
    with pytest.raises(ValueError, match="'e2e5' is not legal"):
        copy.envs[0].set_state(broken)
    with pytest.raises(ValueError, match=r"lacks \['ply'\]"):
        copy.envs[0].set_state({k: v for k, v in state["games"][0].items() if k != "ply"})
    assert chess.Board(state["games"][0]["root"]).is_valid()


def _csv_logger(path, resume_at=None) -> Logger:
    return Logger(str(path.parent), [ProgressCSV(path, resume_at)])


def test_progress_csv_continues_without_duplicated_or_missing_rows(tmp_path):
    path = tmp_path / "progress.csv"
    logger = _csv_logger(path)
    for step in (8, 16, 24):
        logger.record("time/total_timesteps", step)
        logger.record("train/loss", step / 10)
        if step == 24:
            logger.record("guard/new_key", 1.0)  # a new column: the file is rewritten with a wider header
        logger.dump(step)
    logger.close()
    with open(path, "a") as f:
        f.write("32,3.2")  # a row cut short by a kill
    logger = _csv_logger(path, resume_at=16)  # the checkpoint was at 16: the row of 24 is written again
    for step in (24, 32):
        logger.record("time/total_timesteps", step)
        logger.record("train/loss", step / 10)
        logger.dump(step)
    logger.close()
    import pandas as pd

    frame = pd.read_csv(path)
    assert frame["time/total_timesteps"].tolist() == [8, 16, 24, 32]
    assert frame["train/loss"].tolist() == [0.8, 1.6, 2.4, 3.2]
    assert set(frame.columns) == {"time/total_timesteps", "train/loss", "guard/new_key"}


CLI_CONFIG = {
    "env": {"num_envs": 4, "reward_depth": 1, "max_plies": 40, "start_positions": "builtin"},
    "algo": {"policy_kwargs": TINY, "group_size": 2, "horizon": 3, "n_epochs": 1, "batch_size": 8, "seed": 0,
             "learning_rate": "linear:1e-3:1e-4", "target_entropy": 0.5, "dirichlet_frac": 0.25},
    "train": {"total_timesteps": 48, "checkpoint_every": 2, "progress_bar": False, "evaluate": "none"},
}
#: columns that measure the machine, not the run
WALL_CLOCK = ("time/", "_per_s", "engine_", "wait_frac")


@pytest.mark.slow
@needs_stockfish
def test_cli_resume_continues_the_run_and_its_log_exactly(tmp_path):
    """``grpo-chess train --resume`` after a kill past the last checkpoint: the same model and log rows as
    the uninterrupted run, none duplicated, none missing."""
    import shutil

    import pandas as pd
    import yaml

    from grpo_agent.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(CLI_CONFIG))
    args = ["--set", f"train.runs_dir={tmp_path / 'runs'}", "--wandb", "disabled"]
    assert main(["train", "--config", str(config), *args]) == 0
    (whole,) = (tmp_path / "runs").iterdir()
    interrupted = shutil.copytree(whole, tmp_path / "interrupted")
    # Killed after the last rollout's log row, before its checkpoint and the final model were written.
    (interrupted / "final_model.zip").unlink()
    saved = sorted((interrupted / "checkpoints").glob("grpo_*_steps.zip"), key=checkpoint_timesteps)
    saved[-1].unlink()
    (interrupted / "checkpoints" / f".{saved[-1].name}.tmp").write_bytes(b"PK\x03\x04 cut short")
    assert main(["train", "--resume", str(interrupted), "--wandb", "disabled"]) == 0

    models = [GRPO.load(run / "final_model.zip") for run in (whole, interrupted)]
    assert models[0].num_timesteps == models[1].num_timesteps == 48
    assert th.equal(params(models[0]), params(models[1]))
    logs = [pd.read_csv(run / "progress.csv") for run in (whole, interrupted)]
    columns = [c for c in logs[0].columns if not any(part in c for part in WALL_CLOCK)]
    assert logs[0]["time/total_timesteps"].tolist() == logs[1]["time/total_timesteps"].tolist() == [12, 24, 36, 48]
    pd.testing.assert_frame_equal(logs[0][columns], logs[1][columns])
    assert not list((interrupted / "checkpoints").glob(".*.tmp"))
    if importlib.util.find_spec("tensorboard") is not None:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(interrupted))
        events.Reload()  # the interrupted session's steps past the checkpoint are purged, the resumed ones kept
        assert [e.step for e in events.Scalars("train/loss")] == [12, 24, 36, 48]


def test_resuming_into_another_number_of_games_warns_and_starts_new_ones(tmp_path):
    model = GRPO("MlpPolicy", ChessVectorEnv(4, shaping=False, start_positions="builtin"), group_size=2, horizon=2,
                 batch_size=4, seed=0)
    model.learn(8)
    model.save(tmp_path / "four.zip")
    model.env.close()
    wider = GRPO.load(tmp_path / "four.zip", env=ChessVectorEnv(8, shaping=False, start_positions="builtin"))
    with pytest.warns(UserWarning, match=r"saved games \(4 of them\) are not restored into ChessVecEnv with num_envs=8"):
        wider.learn(16, reset_num_timesteps=False)
    assert wider.num_timesteps > model.num_timesteps
    wider.env.close()
