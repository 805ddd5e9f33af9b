"""Exact resume: what a saved GRPO model carries besides SB3's own data, checkpoints between rollouts, and logs
that continue where the checkpoint left them.

**What is saved, and where.** SB3's zip already holds the networks, the optimizer, the counters
(``num_timesteps``, ``n_rollouts``, ``_n_updates``), the schedules, the guardrails' controllers and guards, and
the Dirichlet noise's generator (pickled with the model's attributes, so ``load`` restores it as it was).
:func:`save_with_state` adds one member, ``grpo_resume.pt`` (a ``torch.save`` of plain values, read back with
``weights_only=True``), with what a run draws from but SB3 does not save (:func:`capture`):

* torch's CPU generator (``th.multinomial`` and ``rand_like`` sample the moves) and CUDA's, when CUDA is in use;
* NumPy's global generator (the buffers' minibatch shuffles) and Python's ``random`` (which this library does
  not draw from, but SB3's ``load`` seeds it again, and a user's callback may);
* the env's :meth:`~chess_env.ChessVectorEnv.get_state`: every game in progress (boards with their moves,
  plies, colours, values), the generators of the group starts and of each game, the reset counters. Move groups
  (``group_mode="moves"``) carry games over between rollouts, so these are the games the next rollout plays;
* the collapse guards' healthy snapshots, when ``on_collapse="rollback"`` (model-sized; SB3's pickle leaves them
  out), so that a resumed run can roll back to the same parameters.

**When it is used.** ``GRPO.load`` keeps the state aside; ``learn(..., reset_num_timesteps=False)`` (continuing
the run) puts it back before its first rollout (:func:`restore`), replacing the seeding that SB3's ``load`` does.
A ``learn`` with ``reset_num_timesteps=True`` starts a new run and drops it. On CPU the resumed run then equals
the uninterrupted one bit for bit (``tests/test_resume.py``). On a GPU the generators are restored too, but
cuDNN's convolution kernels and the atomic adds of some backward passes are not deterministic run to run unless
``torch.use_deterministic_algorithms(True)`` (and ``CUBLAS_WORKSPACE_CONFIG``) is set, so two uninterrupted
GPU runs already differ in their last bits; a resumed run is as close to the uninterrupted one as those are.

**Checkpoints** (:class:`RolloutCheckpointCallback`) are written between rollouts, after the update, the
reference refresh and the log row of the last one, so that a checkpoint is a point the uninterrupted run
passes through. **Logs** (:class:`ProgressCSV`) continue the run's ``progress.csv``: rows after the checkpoint
resumed from (written by the session that was interrupted) are dropped, so none is duplicated or missing.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import CSVOutputFormat
from stable_baselines3.common.save_util import open_path

from grpo_agent.save_util import atomic_write, save_model

if TYPE_CHECKING:
    from grpo_agent.grpo import GRPO

#: the zip member that holds the resume state
RESUME_MEMBER = "grpo_resume.pt"
#: version of the resume state's layout
RESUME_FORMAT = 1


# -- the state -----------------------------------------------------------------------------------------------


def capture(model: GRPO) -> dict[str, Any]:
    """The state that :func:`restore` needs to continue ``model``'s run exactly (see the module docstring)."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    env = model.env
    env_state = None
    if env is not None and callable(getattr(env, "get_state", None)):
        env_state = env.get_state()
        if not env_state.get("started", True):
            env_state = None  # never reset: SB3 seeds and resets it at the first learn(), as it would have
    cuda = th.cuda.get_rng_state_all() if th.cuda.is_available() and th.cuda.is_initialized() else None
    return {
        "format": RESUME_FORMAT,
        "torch": th.get_rng_state(),
        "cuda": cuda,
        "numpy": (kind, keys.tolist(), int(pos), int(has_gauss), float(cached_gaussian)),
        "python": random.getstate(),
        "env": env_state,
        "guard_snapshots": [guard.healthy_snapshot for guard in model.guardrails.guards],
    }


def restore(model: GRPO, state: dict[str, Any]) -> np.ndarray | None:
    """Put :func:`capture`'s state back into ``model`` (loaded with SB3's ``load``) and its env.

    An env that cannot take the saved games (another ``num_envs``, or no ``set_state``) keeps its own, with a
    warning: the run continues, but not exactly. When the games are restored, ``model._last_obs`` is set so that
    SB3's ``_setup_learn`` does not reset them.

    :return: the observations the first rollout plays from with move groups, whose games carry over (None with
        trajectory groups, which start every rollout with a group reset)
    """
    if state.get("format") != RESUME_FORMAT:
        raise ValueError(f"resume state format {state.get('format')!r} is not {RESUME_FORMAT}")
    th.set_rng_state(state["torch"])
    if state["cuda"] is not None and th.cuda.is_available() and th.cuda.device_count() == len(state["cuda"]):
        th.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    for guard, snapshot in zip(model.guardrails.guards, state["guard_snapshots"]):
        guard.load_snapshot(snapshot)
    return _restore_env(model, state["env"])


def _restore_env(model: GRPO, env_state: dict[str, Any] | None) -> np.ndarray | None:
    env = model.env
    if env_state is None or env is None:
        return None
    if not callable(getattr(env, "set_state", None)) or env.num_envs != env_state["num_envs"]:
        warnings.warn(
            f"the saved games ({env_state['num_envs']} of them) are not restored into {type(env).__name__} with "
            f"num_envs={env.num_envs}: the run continues from new games, not exactly where it stopped",
            stacklevel=3,
        )
        return None
    model._last_obs = obs = env.set_state(env_state)
    return obs if model.group_mode == "moves" else None


# -- the zip -----------------------------------------------------------------------------------------------


def save_with_state(model: GRPO, path: str | os.PathLike | io.BufferedIOBase, save: Callable[[io.BytesIO], None]) -> None:
    """Write SB3's zip (``save`` writes it into a buffer) plus :data:`RESUME_MEMBER` to ``path`` (a path, to which
    ``.zip`` is added when it has no suffix, as SB3 does, or a file object)."""
    buffer = io.BytesIO()
    save(buffer)
    member = io.BytesIO()
    th.save(capture(model), member)
    with zipfile.ZipFile(buffer, mode="a") as archive:
        archive.writestr(RESUME_MEMBER, member.getvalue())
    file = open_path(path, "w", verbose=0, suffix="zip")
    file.write(buffer.getvalue())
    if isinstance(path, (str, os.PathLike)):
        file.close()


def read_checkpoint(path: str | os.PathLike | io.BufferedIOBase, env: Any = None) -> bytes:
    """The bytes of a GRPO model zip for ``env`` (None: any), refused with a message naming ``path`` if it is not one.

    Raises:
        ValueError: not a complete zip (truncated, or another file); a zip without SB3's ``data`` (truncated
            where an inner zip ends, or another kind of zip); another algorithm's model (e.g. PPO's, named);
            a model saved for other observation or action spaces than ``env``'s (both named).
    """
    file = open_path(path, "r", verbose=0, suffix="zip")
    data = file.read()
    if isinstance(path, (str, os.PathLike)):
        file.close()
    name = str(path) if isinstance(path, (str, os.PathLike)) else type(path).__name__
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            bad = archive.testzip()
            members = archive.namelist()
            attributes = json.loads(archive.read("data")) if "data" in members else None
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise ValueError(f"{name!r} is not a complete model zip ({len(data)} bytes; truncated?): {exc}") from None
    if bad is not None:
        raise ValueError(f"{name!r} is a damaged model zip: member {bad!r} fails its CRC check")
    if attributes is None:
        raise ValueError(f"{name!r} is not a complete SB3 model zip ({len(data)} bytes): it has no 'data' member "
                         "(truncated, or another kind of zip)")
    if "group_mode" not in attributes:
        policy = attributes.get("policy_class", {})
        found = re.search(r"<function (\w+)\.__init__", str(policy.get("__init__", "")))
        origin = f"{policy.get('__module__', '?')}.{found.group(1) if found else '?'}"
        raise ValueError(f"{name!r} is not a GRPO model: its policy is {origin} and it has no group_mode; "
                         "load it with the algorithm that saved it")
    if env is not None:
        _check_spaces(name, attributes, env)
    return data


def _check_spaces(name: str, attributes: dict[str, Any], env: Any) -> None:
    """Refuse ``env`` when its spaces are not those the model was saved with, naming both."""
    obs_space = getattr(env, "single_observation_space", env.observation_space)
    act_space = getattr(env, "single_action_space", env.action_space)
    saved_shape = tuple(attributes["observation_space"].get("_shape", ()))
    if saved_shape != tuple(obs_space.shape):
        channels = (saved_shape[0], obs_space.shape[0]) if len(saved_shape) == 3 == len(obs_space.shape) else None
        hint = (f" (ChessEnv history={(channels[0] - 21) // 12} vs history={(channels[1] - 21) // 12})"
                if channels and all(c >= 21 and (c - 21) % 12 == 0 for c in channels) else "")
        raise ValueError(f"{name!r} was saved for observations of shape {saved_shape}; this env's are "
                         f"{tuple(obs_space.shape)}{hint}")
    saved_n = attributes["action_space"].get("n")
    if saved_n is not None and int(saved_n) != getattr(act_space, "n", None):
        raise ValueError(f"{name!r} was saved for {saved_n} actions; this env has {act_space}")


def load_with_state(data: bytes, load: Callable[[io.BytesIO], GRPO]) -> GRPO:
    """SB3's ``load`` (``load`` reads the zip from a buffer), with the resume state kept for :func:`restore`."""
    model = load(io.BytesIO(data))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        if RESUME_MEMBER in archive.namelist():
            model._resume_state = th.load(io.BytesIO(archive.read(RESUME_MEMBER)), weights_only=True)
    return model


def checkpoint_timesteps(path: str | os.PathLike) -> int:
    """``num_timesteps`` of a saved model, read from its zip without building it."""
    with zipfile.ZipFile(path) as archive:
        return int(json.loads(archive.read("data"))["num_timesteps"])


# -- checkpoints and logs ------------------------------------------------------------------------------------


class RolloutCheckpointCallback(BaseCallback):
    """Save ``<folder>/<prefix>_<num_timesteps>_steps.zip`` after every ``every``-th rollout of the run.

    The save happens when the next rollout starts (or training ends), i.e. after the update, the reference
    refresh and the log row of the rollout: a point the uninterrupted run passes through, from which
    ``learn(reset_num_timesteps=False)`` continues exactly. SB3's ``CheckpointCallback`` counts vector steps
    instead, and saves in the middle of a rollout (a rollout of trajectory groups ends early when its games do).
    Files are written atomically (:func:`~grpo_agent.save_util.save_model`).

    :param every: rollouts between checkpoints, counted over the whole run (``model.n_rollouts``)
    :param folder: where the checkpoints go
    """

    def __init__(self, every: int, folder: str | os.PathLike, prefix: str = "grpo", verbose: int = 0) -> None:
        super().__init__(verbose)
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"checkpoint interval must be a positive number of rollouts, got {every!r}")
        self.every, self.folder, self.prefix = every, Path(folder), prefix
        self._saved_at = -1

    def _on_training_start(self) -> None:
        self._saved_at = self.model.n_rollouts  # the state this learn() started from is already on disk

    def _on_rollout_start(self) -> None:
        self._save_if_due()

    def _on_training_end(self) -> None:
        self._save_if_due()

    def _on_step(self) -> bool:
        return True

    def _save_if_due(self) -> None:
        n = self.model.n_rollouts
        if n == self._saved_at or n % self.every:
            return
        self._saved_at = n
        path = self.folder / f"{self.prefix}_{self.model.num_timesteps}_steps.zip"
        save_model(self.model, path)
        if self.verbose >= 2:
            print(f"Saving model checkpoint to {path}")


class ProgressCSV(CSVOutputFormat):
    """SB3's CSV log writer that can continue a run's file, and never leaves it half-rewritten.

    :param path: the ``progress.csv`` to write
    :param resume_at: ``None`` starts the file afresh; a timestep keeps the rows logged at or before it (the
        checkpoint a run resumes from) and drops the later ones, which the interrupted session wrote past the
        checkpoint and the resumed one writes again. A last row cut short by a kill is dropped too.

    SB3 rewrites the whole file in place when a new key appears; here that rewrite goes through
    :func:`~grpo_agent.save_util.atomic_write`, so a kill leaves the old file or the new one.
    """

    def __init__(self, path: str | os.PathLike, resume_at: int | None = None) -> None:
        self.path = Path(path)
        self.separator, self.quotechar = ",", '"'
        self.keys: list[str] = []
        if resume_at is not None and self.path.is_file():
            self.keys, rows = _rows_until(self.path.read_text(), resume_at)
            atomic_write(self.path, "".join([",".join(self.keys) + "\n", *rows] if self.keys else []).encode())
        else:
            atomic_write(self.path, b"")
        self.file = open(self.path, "a+")

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        from stable_baselines3.common.logger import filter_excluded_keys

        extra = sorted(filter_excluded_keys(key_values, key_excluded, "csv").keys() - self.keys)
        if extra:
            self.file.close()
            lines = self.path.read_text().splitlines(keepends=True)
            self.keys.extend(extra)
            rows = [line.rstrip("\n") + self.separator * len(extra) + "\n" for line in lines[1:]]
            atomic_write(self.path, "".join([",".join(self.keys) + "\n", *rows]).encode())
            self.file = open(self.path, "a+")
        super().write(key_values, key_excluded, step)


def _rows_until(text: str, timestep: int) -> tuple[list[str], list[str]]:
    """The header keys of a progress CSV and its complete rows logged at or before ``timestep``."""
    lines = text.splitlines(keepends=True)
    if not lines or not lines[0].endswith("\n"):
        return [], []
    keys = lines[0].rstrip("\n").split(",")
    if "time/total_timesteps" not in keys:
        return [], []
    column = keys.index("time/total_timesteps")
    kept = []
    for line in lines[1:]:
        fields = next(csv.reader([line]))
        if not line.endswith("\n") or len(fields) != len(keys):
            break  # cut short by a kill: it and anything after it are past the checkpoint
        if fields[column] and int(float(fields[column])) <= timestep:
            kept.append(line)
    return keys, kept
