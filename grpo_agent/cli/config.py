"""The ``grpo-chess train`` config: a strict YAML schema, ``--set`` overrides and schedules.

Schema (strict: an unknown section or key is an error naming it)::

    env:    # keyword arguments of chess_env.ChessVectorEnv (num_envs + any ChessEnv argument)
      num_envs: 64
      reward_depth: 1
    algo:   # keyword arguments of grpo_agent.GRPO (policy, learning_rate, group_size, ...)
      policy: ChessResNetPolicy
      learning_rate: 3.0e-4       # or "linear:3e-4:1e-5" (start:end over the run)
    train:  # the run itself, see TRAIN_DEFAULTS
      total_timesteps: 100000
    pretrain:  # optional: a Stockfish-distilled warm start first (grpo_agent.pretrain.PretrainConfig fields)
      n_positions: 30000

``learning_rate``, ``clip_range``, ``clip_range_high``, ``ent_coef`` and ``kl_coef`` accept a number or
``"linear:START:END"`` (SB3 ``LinearSchedule`` over the whole run).
"""

from __future__ import annotations

import copy
import inspect
import os
from typing import Any

import yaml

TRAIN_DEFAULTS: dict[str, Any] = {
    "total_timesteps": 100_000,  # env steps (each rollout is num_envs * horizon of them)
    "name": "grpo",  # run folder prefix: <runs_dir>/<name>-<timestamp>
    "runs_dir": "runs",
    "checkpoint_every": 10,  # rollouts between checkpoints (0 = only the final model)
    "log_interval": 1,  # rollouts between log rows
    "progress_bar": True,
    "verbose": 0,  # 1 also prints SB3's log table to stdout
    "torch_threads": 1,  # torch intra-op threads; 1 leaves the other cores to the Stockfish pool
    "evaluate": "none",  # evaluation preset run on the initial and the final policy (none, quick, default, full)
    "eval_opponents": ["random", "sf0"],  # opponents of that evaluation
    "init": None,  # a pretrained model zip to start from (its policy is also the KL reference); see --init
}
SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_high", "ent_coef", "kl_coef")


class ConfigError(ValueError):
    """A config file or override that does not match the schema."""


def _allowed_keys() -> dict[str, set[str]]:
    from chess_env import ChessVectorEnv
    from chess_env.env import ChessEnv
    from grpo_agent.grpo import GRPO

    def params(fn: Any) -> set[str]:
        return {
            name
            for name, p in inspect.signature(fn).parameters.items()
            if name != "self" and not name.startswith("_") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    from grpo_agent.pretrain import PRETRAIN_KEYS

    env_keys = params(ChessEnv.__init__) | params(ChessVectorEnv.__init__)
    algo_keys = params(GRPO.__init__) - {"env", "n_envs", "env_kwargs"}
    return {"env": env_keys, "algo": algo_keys, "train": set(TRAIN_DEFAULTS), "pretrain": set(PRETRAIN_KEYS)}


def _numbers(value: Any) -> Any:
    """PyYAML follows YAML 1.1, where ``1e-4`` (no dot) is a string: read such strings as floats."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` (value parsed as YAML) -> ``(["section", "key"], value)``."""
    if "=" not in text:
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    path, raw = text.split("=", 1)
    keys = [k for k in path.strip().split(".") if k]
    if len(keys) < 2:
        raise ConfigError(f"--set key must be section.key (e.g. algo.learning_rate), got {path!r}")
    return keys, _numbers(yaml.safe_load(raw))


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> dict[str, dict[str, Any]]:
    """Read a YAML config, apply ``--set`` overrides, check every key, fill the train defaults."""
    config: dict[str, Any] = {}
    if path is not None:
        with open(path) as f:
            config = yaml.safe_load(f) or {}
        if not isinstance(config, dict):
            raise ConfigError(f"config {str(path)!r} must be a mapping with sections env, algo, train")
    config = _numbers(copy.deepcopy(config))
    for text in overrides:
        keys, value = parse_override(text)
        node = config
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {key!r} is not a section")
        node[keys[-1]] = value
    allowed = _allowed_keys()
    for section, values in config.items():
        if section not in allowed:
            raise ConfigError(f"unknown config section {section!r} (expected one of {sorted(allowed)})")
        if not isinstance(values, dict):
            raise ConfigError(f"config section {section!r} must be a mapping, got {values!r}")
        for key in values:
            if key not in allowed[section]:
                raise ConfigError(f"unknown config key {section}.{key} (allowed: {', '.join(sorted(allowed[section]))})")
    out = {section: dict(config.get(section) or {}) for section in allowed}
    out["train"] = {**TRAIN_DEFAULTS, **out["train"]}
    return out


def parse_schedule(value: Any) -> Any:
    """A number, or ``"linear:START:END"`` -> SB3 ``LinearSchedule`` from START (progress 1) to END."""
    if isinstance(value, str) and value.startswith("linear:"):
        from stable_baselines3.common.utils import LinearSchedule

        parts = value.split(":")
        try:
            start, end = float(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            raise ConfigError(f"schedule must be 'linear:START:END', got {value!r}") from None
        return LinearSchedule(start, end, end_fraction=1.0)
    return value
