"""The range checks of GRPO's own keyword arguments (the guardrails and advantages check theirs in
:meth:`grpo_agent.control.Guardrails.from_options` and :class:`grpo_agent.advantages.AdvantageConfig`)."""

from __future__ import annotations

from typing import Any

from grpo_agent.distributed import ROLLOUT_BACKENDS, RayRolloutConfig, require_ray
from grpo_agent.loss import KL_ESTIMATORS
from grpo_agent.rollout.moves import ADVANCE

GROUP_MODES = ("games", "moves")


def check_options(
    group_mode: str, group_size: int | str, horizon: int, n_epochs: int, batch_size: int, n_envs: int,
    temperature: float, train_plies: str, kl_estimator: str, ref_update_interval: int, max_grad_norm: float | None,
    target_kl: float | None, dirichlet_frac: float, dirichlet_alpha: float, advance: str = "sample",
) -> None:
    """Refuse GRPO options out of range, naming the option and its value."""
    if group_mode not in GROUP_MODES:
        raise ValueError(f"group_mode must be one of {GROUP_MODES}, got {group_mode!r}")
    if group_size == "all" and group_mode != "moves":
        raise ValueError("group_size='all' (every legal move) needs group_mode='moves'")
    if advance not in ADVANCE:
        raise ValueError(f"advance must be one of {ADVANCE}, got {advance!r}")
    if advance != "sample" and group_mode != "moves":
        raise ValueError(f"advance={advance!r} needs group_mode='moves' (trajectory groups sample every ply)")
    sizes = [("horizon", horizon), ("n_epochs", n_epochs), ("batch_size", batch_size), ("n_envs", n_envs)]
    for name, value in ([] if group_size == "all" else [("group_size", group_size)]) + sizes:
        if isinstance(value, str) or int(value) != value or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if train_plies not in ("mover", "both"):
        raise ValueError(f"train_plies must be one of ('mover', 'both'), got {train_plies!r}")
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {kl_estimator!r}")
    if ref_update_interval < 0:
        raise ValueError(f"ref_update_interval must be >= 0 (0 = never), got {ref_update_interval}")
    if max_grad_norm is not None and not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm}")
    if target_kl is not None and not target_kl > 0:
        raise ValueError(f"target_kl must be > 0 or None, got {target_kl}")
    if not 0.0 <= dirichlet_frac <= 1.0:
        raise ValueError(f"dirichlet_frac must be in [0, 1], got {dirichlet_frac}")
    if not dirichlet_alpha > 0:
        raise ValueError(f"dirichlet_alpha must be > 0, got {dirichlet_alpha}")


def check_backend(rollout_backend: str, num_rollout_workers: int, rollout_options: dict[str, Any] | None) -> None:
    """Refuse a rollout backend, worker count or Ray option out of range now, not at the first rollout; and the Ray
    backend where Ray is not installed."""
    if rollout_backend not in ROLLOUT_BACKENDS:
        raise ValueError(f"rollout_backend must be one of {ROLLOUT_BACKENDS}, got {rollout_backend!r}")
    RayRolloutConfig.from_options(num_rollout_workers, rollout_options)
    if rollout_backend == "ray":
        require_ray()
