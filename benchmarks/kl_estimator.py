"""KL estimators A/B: GRPO with ``kl_coef > 0`` and ``kl_estimator="exact"`` vs ``"k3"``, same seeds and budget.

Both penalize the divergence from the initial policy (the reference). What decides between them is how well
the penalty does its job: the exact KL(pi || pi_ref) that the policy reaches (measured the same way for both,
on a fixed probe set of training start positions, with the full distributions), for how much learning (the
step reward of the last rollouts) and at what cost (learner seconds).

    python -m benchmarks.kl_estimator [--rollouts 30] [--seeds 0 1 2]

Prints a table and writes ``benchmarks/results/kl_estimator.json``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch as th

from benchmarks.common import RESULTS_DIR, limit_threads, machine_info, mean_ci
from grpo_agent.save_util import write_json

ENV = dict(reward_depth=1, max_plies=200, start_positions="builtin")
ALGO = dict(group_size=8, horizon=8, n_epochs=2, batch_size=128, learning_rate=1e-3, kl_coef=0.3, ent_coef=0.01)
NET = dict(features_extractor_kwargs=dict(n_blocks=2, channels=32))


def probe_kl(model: Any, n_positions: int = 256) -> float:
    """Exact mean KL(pi || pi_ref) over ``n_positions`` training start positions (the same for every run)."""
    from chess_env import load_positions
    from chess_env.encoding import legal_action_mask, observation

    import chess

    boards = [chess.Board(fen) for fen in load_positions("builtin")[:n_positions]]
    obs = th.as_tensor(np.stack([observation(b) for b in boards]))
    masks = th.as_tensor(np.stack([legal_action_mask(b) for b in boards]))
    with th.no_grad():
        log_p = model.policy.get_distribution(obs, masks).distribution.logits
        ref = model.ref_policy.get_distribution(obs, masks).distribution.logits
    return float((log_p.exp() * (log_p - ref)).sum(dim=1).mean())


def run_one(estimator: str, seed: int, rollouts: int) -> dict[str, float]:
    from chess_env import ChessVectorEnv
    from grpo_agent import GRPO

    env = ChessVectorEnv(32, engine_processes=1, **ENV)
    model = GRPO("ChessResNetPolicy", env, policy_kwargs=NET, kl_estimator=estimator, seed=seed, **ALGO)
    rewards, learner_s = [], 0.0
    original_train = model.train

    def timed_train() -> None:
        nonlocal learner_s
        start = time.perf_counter()
        original_train()
        learner_s += time.perf_counter() - start
        rewards.append(model.last_rollout_stats["step_reward_mean"])

    model.train = timed_train  # type: ignore[method-assign]
    model.learn(rollouts * 32 * ALGO["horizon"])
    result = {
        "kl_exact": probe_kl(model),
        "kl_ref_logged": model.last_train_stats["kl_ref"],
        "step_reward_last10": float(np.mean(rewards[-10:])),
        "entropy_norm": model.last_rollout_stats["entropy_norm"],
        "learner_s_per_update": learner_s / max(len(rewards), 1),
    }
    env.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rollouts", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    limit_threads(1)
    runs: dict[str, list[dict[str, float]]] = {}
    for estimator in ("exact", "k3"):
        for seed in args.seeds:
            runs.setdefault(estimator, []).append(run_one(estimator, seed, args.rollouts))
    keys = list(runs["exact"][0])
    summary = {est: {k: mean_ci([r[k] for r in rs]) for k in keys} for est, rs in runs.items()}
    print(f"KL estimators, {len(args.seeds)} seeds x {args.rollouts} rollouts, kl_coef={ALGO['kl_coef']} (mean +- 95% CI)")
    print(f"{'metric':<24}" + "".join(f"{est:>22}" for est in runs))
    for key in keys:
        cells = "".join(f"{summary[est][key]['mean']:>14.4f} +- {summary[est][key]['ci']:<6.4f}" for est in runs)
        print(f"{key:<24}{cells}")
    write_json(
        RESULTS_DIR / "kl_estimator.json",
        {"settings": {"env": ENV, "algo": ALGO, "net": NET, "rollouts": args.rollouts, "seeds": args.seeds},
         "machine": machine_info(), "runs": runs, "summary": summary},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
