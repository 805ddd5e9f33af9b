"""The ``grpo-chess train`` config: a strict YAML schema, ``--set`` overrides and schedules.

Schema (strict: an unknown section or key, or a value of the wrong type, is an error naming it)::

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
import re
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
    "torch_threads": 1,  # torch intra-op threads of the rollouts; 1 leaves the other cores to the Stockfish pool
    "update_threads": None,  # torch threads of each update, while the engines wait (None: one per core)
    "evaluate": "none",  # evaluation preset run on the initial and the final policy (none, quick, default, heldout, full)
    "eval_opponents": ["random", "sf0"],  # opponents of that evaluation
    "init": None,  # a pretrained model zip to start from (its policy is also the KL reference); see --init
}
#: the types of the train section's values (annotations, as the other sections' come from their signatures)
TRAIN_TYPES = {"total_timesteps": "int", "name": "str", "runs_dir": "str", "checkpoint_every": "int",
               "log_interval": "int", "progress_bar": "bool", "verbose": "int", "torch_threads": "int",
               "update_threads": "int | None", "evaluate": "str", "eval_opponents": "list[str]", "init": "str | None"}
SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_high", "ent_coef", "kl_coef")
#: the annotations a YAML value is checked against, and the Python types that YAML gives for each
_YAML_TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,), "int": (int,), "float": (int, float), "str": (str,), "None": (type(None),),
    "list": (list,), "tuple": (list,), "dict": (dict,),
}


#: what YAML 1.1 leaves a string although it is a number: an exponent without a dot
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class ConfigError(ValueError):
    """A config file or override that does not match the schema."""


def _allowed_keys() -> dict[str, dict[str, str | None]]:
    """Every section's keys, each with its type annotation (None where none is checked)."""
    import dataclasses

    from chess_env import ChessVectorEnv
    from chess_env.env import ChessEnv
    from grpo_agent.grpo import GRPO
    from grpo_agent.pretrain import PRETRAIN_KEYS, PretrainConfig

    def params(fn: Any) -> dict[str, str | None]:
        return {
            name: p.annotation if isinstance(p.annotation, str) else None
            for name, p in inspect.signature(fn).parameters.items()
            if name != "self" and not name.startswith("_") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    algo = {k: v for k, v in params(GRPO.__init__).items() if k not in ("env", "n_envs", "env_kwargs")}
    fields = {f.name: f.type if isinstance(f.type, str) else None for f in dataclasses.fields(PretrainConfig)}
    return {
        "env": {**params(ChessEnv.__init__), **params(ChessVectorEnv.__init__)},
        "algo": algo,
        "train": dict(TRAIN_TYPES),
        "pretrain": {key: fields.get(key) for key in PRETRAIN_KEYS},
    }


def _alternatives(annotation: str) -> list[str]:
    """The top-level alternatives of ``annotation`` (``"int | list[str]"`` -> ``["int", "list[str]"]``)."""
    parts, depth, current = [], 0, ""
    for char in annotation:
        depth += char == "["
        depth -= char == "]"
        if char == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()]


def type_error(name: str, value: Any, annotation: str | None) -> str | None:
    """Why the YAML value ``value`` of ``name`` does not fit ``annotation``; None if it does, or if the annotation
    names types that YAML cannot spell (schedules, callables, devices), which their own code checks."""
    if annotation is None:
        return None
    heads = [alt.split("[", 1)[0].strip() for alt in _alternatives(annotation)]
    if not all(head in _YAML_TYPES for head in heads):
        return None
    allowed = tuple(t for head in heads for t in _YAML_TYPES[head])
    # YAML's true/false are ints to Python: a bool is only a number where the annotation says bool.
    if isinstance(value, allowed) and (not isinstance(value, bool) or "bool" in heads):
        return None
    return f"{name} must be {annotation}, got {value!r} ({type(value).__name__})"


def _numbers(value: Any) -> Any:
    """PyYAML follows YAML 1.1, where ``1e-4`` (no dot) is a string: read such strings as floats (only those:
    a quoted ``"2024"`` stays the string it was written as)."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
        return float(value)
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
        for key, value in values.items():
            if key not in allowed[section]:
                raise ConfigError(f"unknown config key {section}.{key} (allowed: {', '.join(sorted(allowed[section]))})")
            problem = type_error(f"{section}.{key}", value, allowed[section][key])
            if problem is not None:
                raise ConfigError(problem)
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
