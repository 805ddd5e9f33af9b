"""Learner throughput: GRPO's ``train()`` against MaskablePPO's on the same network and minibatches, and the
rollout's forward pass under torch settings.

Run: ``python -m benchmarks.learner_throughput [--quick] [--out benchmarks/results/learner_throughput.json]``.

**Updates.** Each learner gets one real rollout (64 games of self-play from the ``builtin`` positions,
Stockfish depth-1 shaping, 16 plies: 1024 positions), then its ``train()`` on that buffer is timed, alternately
with the others', round after round; each keeps its fastest round. The same ``ChessResNet`` trunk and conv
policy head (MaskablePPO adds its critic, one hidden layer of 64 on the shared trunk), the same
``batch_size``, ``n_epochs`` and learning rate:

* ``grpo_games``: trajectory groups (8 x 8 games, every ply trained, ``train_plies="both"``);
* ``grpo_moves``: move groups (K = 8 candidate moves per position, each valued by the engine): one forward
  and backward pass per position serves its K candidates, so it is reported per position and per candidate;
* ``grpo_games_kl``, ``grpo_moves_kl``: the same with ``make train``'s KL penalty to the reference
  (``kl_coef = 0.3``, ``kl_estimator = "exact"``): one more forward pass, of the reference, per minibatch;
* ``grpo_games_dense``, ``grpo_moves_dense``: ``grpo_games`` and ``grpo_moves`` with the update of before the
  legal-move columns (softmax, entropy and gradients over all 4672 actions): the baseline, in the same process
  and rounds, of what :func:`grpo_agent.buffers.legal_columns` saves;
* ``maskable_ppo``: sb3-contrib's MaskablePPO, ``n_steps = 16``, ``gamma = 0``.

A sample is one position through the network, forward and backward, per epoch: the ratio of samples/s is the
ratio of learner cost per position trained. With ``kl_coef = 0`` GRPO still runs the reference on one
minibatch per update (``train/kl_ref`` is a collapse signal); PPO computes values.

**Pretraining steps** (``pretrain_steps_per_s``): :func:`grpo_agent.pretrain.fit`'s step (a minibatch of
``batch_size`` labelled positions, the cross-entropy, backward, AdamW) on the same network, built from the
project's :class:`~grpo_agent.pretrain._Batches` (each position's legal moves as the columns: ``legal``) and,
alternately, from the 4672-wide dense rows the project used before (``dense``, kept here as the baseline that
shows what the columns save), on 1,024 built-in positions with synthetic labels (a step's cost does not depend
on the label values).

**Rollout forward pass.** ``sample_policy`` (the collectors' one call per vector step) on 64 positions, with 1
and 2 torch threads, under ``torch.no_grad`` (what the collectors use) and ``torch.inference_mode``, and with
the network and the observations in ``channels_last`` memory format.

Torch threads are set per row (``torch.set_num_threads``); the load average is recorded. The machine is shared:
the ratios by CPU time (``cpu_ratios``) move least with its other work, and with one torch thread they are the
ratios a dedicated core would give.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def make_env(num_envs: int, horizon: int) -> Any:
    from chess_env import ChessVectorEnv

    return ChessVectorEnv(num_envs, engine_processes=1, reward_depth=1, start_positions="builtin", max_plies=horizon)


def net_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``ChessResNet`` keyword arguments of a config."""
    return {"n_blocks": cfg["n_blocks"], "channels": cfg["channels"], "attack_planes": cfg.get("attack_planes", False),
            "check_planes": cfg.get("check_planes", False)}


def build_learner(algo: str, cfg: dict[str, Any]) -> tuple[Any, Callable[[], int], Callable[[], int]]:
    """A learner with one real rollout in its buffer; returns it, its samples per ``train()`` (positions through
    the network, times epochs) and its scored candidates per ``train()`` (the same but for move groups)."""
    from benchmarks import common

    net = net_kwargs(cfg)
    shared = {"learning_rate": 3e-4, "n_epochs": cfg["n_epochs"], "batch_size": cfg["batch_size"], "ent_coef": 0.01}
    env = make_env(cfg["num_envs"], cfg["horizon"])
    timesteps = cfg["num_envs"] * cfg["horizon"]
    if algo == "maskable_ppo":
        model = common.build_maskable_ppo(env, {**shared, "n_steps": cfg["horizon"], "gamma": 0.0}, net, 0, "cpu")
        model.bench_setup(timesteps)  # its train() is timed and counted (a few dict updates per call)
        model.learn(timesteps)
        samples = lambda: model.rollout_buffer.buffer_size * model.rollout_buffer.n_envs * model.n_epochs  # noqa: E731
        return model, samples, samples
    from grpo_agent.grpo import GRPO

    mode = algo.removeprefix("grpo_").removesuffix("_kl").removesuffix("_dense")
    extra = {"train_plies": "both"} if mode == "games" else {}
    if algo.endswith("_kl"):
        extra.update(KL)
    model = GRPO("ChessResNetPolicy", env, group_mode=mode, group_size=cfg["group_size"], horizon=cfg["horizon"],
                 policy_kwargs={"features_extractor_kwargs": net}, seed=0, device="cpu", **shared, **extra)
    model.learn(timesteps)
    buf = model.rollout_buffer
    if algo.endswith("_dense"):
        # The update as it was before the legal-move columns: every minibatch's softmax, entropy and gradients
        # over all 4672 actions (``legal_actions=None`` is the policy's full masked path).
        buf._with_legal_columns = lambda samples, *_: samples._replace(  # type: ignore[method-assign]
            legal_actions=None, legal_mask=samples.action_masks, action_slots=samples.actions.long())
    if mode == "games":
        samples = lambda: int((buf.trained & buf.valid).sum()) * model.n_epochs  # noqa: E731
        return model, samples, samples
    trained = lambda: buf.trained[: buf.pos * buf.n_envs]  # noqa: E731
    positions = lambda: int(trained().sum()) * model.n_epochs  # noqa: E731
    candidates = lambda: int(buf.candidates[: buf.pos * buf.n_envs][trained()].sum()) * model.n_epochs  # noqa: E731
    return model, positions, candidates


def time_updates(cfg: dict[str, Any], algos: tuple[str, ...], threads: int, rounds: int) -> dict[str, dict]:
    """Samples/s of each learner's ``train()``, alternating the learners round by round; best round each, by the
    wall clock and by this process's CPU time (``time.process_time``: the torch threads' work, not the time
    the machine's other processes took from them)."""
    import torch

    torch.set_num_threads(threads)
    learners = {algo: build_learner(algo, cfg) for algo in algos}
    best: dict[str, float] = {}
    best_cpu: dict[str, float] = {}
    for model, _, _ in learners.values():
        model.train()  # warm-up: allocator, first-call overheads
    for _ in range(rounds):
        for algo, (model, _, _) in learners.items():
            start, cpu = time.perf_counter(), time.process_time()
            model.train()
            best[algo] = min(best.get(algo, float("inf")), time.perf_counter() - start)
            best_cpu[algo] = min(best_cpu.get(algo, float("inf")), time.process_time() - cpu)
    out = {}
    for algo, (model, samples, candidates) in learners.items():
        out[algo] = {"seconds_per_update": best[algo], "cpu_seconds_per_update": best_cpu[algo],
                     "samples_per_update": samples(), "samples_per_s": samples() / best[algo],
                     "samples_per_cpu_s": samples() / best_cpu[algo], "candidates_per_s": candidates() / best[algo]}
        model.env.close()
    return out


def time_forward(cfg: dict[str, Any], threads: int, repeats: int) -> dict[str, float]:
    """Milliseconds per ``sample_policy`` call on ``num_envs`` positions, per torch setting (best of ``repeats``)."""
    import torch

    from grpo_agent.grpo import GRPO
    from grpo_agent.rollout.base import sample_policy

    torch.set_num_threads(threads)
    env = make_env(cfg["num_envs"], cfg["horizon"])
    env.reset(seed=0)
    model = GRPO("ChessResNetPolicy", env, group_size=cfg["group_size"], horizon=cfg["horizon"], device="cpu",
                 policy_kwargs={"features_extractor_kwargs": net_kwargs(cfg)})
    obs = torch.as_tensor(env.reset(seed=0)[0])
    masks = torch.as_tensor(env.action_masks())
    env.close()
    policy = model.policy
    policy.set_training_mode(False)
    last_policy = copy.deepcopy(policy).to(memory_format=torch.channels_last)
    last_obs = obs.contiguous(memory_format=torch.channels_last)
    settings: dict[str, Callable[[], Any]] = {
        "no_grad": lambda: sample_policy(policy, obs, masks, 1.0, 1.0),
        "inference_mode": lambda: _in(torch.inference_mode(), lambda: sample_policy(policy, obs, masks, 1.0, 1.0)),
        "channels_last": lambda: sample_policy(last_policy, last_obs, masks, 1.0, 1.0),
    }
    # The settings in alternation, each keeping its best call.
    best = {name: float("inf") for name in settings}
    for call in settings.values():
        call()  # warm-up
    for _ in range(repeats):
        for name, call in settings.items():
            start = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: 1000 * seconds for name, seconds in best.items()}


def time_pretrain(cfg: dict[str, Any], threads: int, rounds: int) -> dict[str, float]:
    """Positions/s of a pretraining step, over the legal-move columns and over dense 4672-wide rows."""
    import chess
    import numpy as np
    import torch

    from chess_env import load_positions
    from chess_env.encoding import N_ACTIONS, legal_actions
    from grpo_agent.grpo import GRPO
    from grpo_agent.pretrain import _Batches, pretrain_loss
    from grpo_agent.pretrain_data import LabelledPositions

    torch.set_num_threads(threads)
    fens = list(load_positions("builtin"))[: 4 * cfg["batch_size"]]
    moves = [legal_actions(chess.Board(fen)) for fen in fens]
    actions = np.concatenate(moves).astype(np.int16)
    rng = np.random.default_rng(0)
    data = LabelledPositions(
        fens=np.array(fens), offsets=np.concatenate([[0], np.cumsum([len(m) for m in moves])]), actions=actions,
        values=rng.uniform(-1, 1, len(actions)).astype(np.float32), mates=np.zeros(len(actions), np.int16),
        walks=np.arange(len(fens), dtype=np.int32))
    targets = rng.dirichlet(np.ones(len(actions)))  # any distribution over a row's moves costs the same
    batches = _Batches(data, targets.astype(np.float32), 1.0, torch.device("cpu"))
    env = make_env(1, 1)
    model = GRPO("ChessResNetPolicy", env, group_size=1, device="cpu",
                 policy_kwargs={"features_extractor_kwargs": net_kwargs(cfg)})
    env.close()
    policy = model.policy
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)

    def dense(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss of the rows spread over all 4672 actions (the layout before the legal-move columns)."""
        batch = batches(idx)
        rows, cols = batch.masks.nonzero(as_tuple=True)[0], batch.legal[batch.masks]
        masks = torch.zeros((len(idx), N_ACTIONS), dtype=torch.bool)
        masks[rows, cols] = True
        q = torch.zeros((len(idx), N_ACTIONS))
        q[rows, cols] = batch.targets[batch.masks]
        log_pi, _ = policy.log_probs(batch.obs, masks)
        return -(q * log_pi).sum(dim=1), batch.weights

    def columns(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        batch = batches(idx)
        return pretrain_loss(policy, batch)[0], batch.weights

    def steps(loss_of: Callable[[np.ndarray], tuple[Any, Any]]) -> float:
        policy.set_training_mode(True)
        start = time.perf_counter()
        for i in range(0, len(fens), cfg["batch_size"]):
            loss, weights = loss_of(np.arange(i, i + cfg["batch_size"]))
            optimizer.zero_grad()
            ((weights * loss).sum() / weights.sum()).backward()
            optimizer.step()
        return time.perf_counter() - start

    best = {"legal_columns": float("inf"), "dense": float("inf")}
    for _ in range(rounds + 1):  # the first round warms up
        for name, loss_of in (("legal_columns", columns), ("dense", dense)):
            best[name] = min(best[name], steps(loss_of))
    return {f"{name}_positions_per_s": len(fens) / seconds for name, seconds in best.items()}


def _in(context: contextlib.AbstractContextManager, call: Callable[[], Any]) -> Any:
    with context:
        return call()


CONFIGS = {
    # configs/default.yaml's network size and minibatch (make train; it takes 1 epoch over 512 positions) ...
    "default": {"n_blocks": 4, "channels": 64, "batch_size": 256, "n_epochs": 2, "num_envs": 64, "horizon": 16,
                "group_size": 8},
    # ... and with its attack planes, as make train now runs it.
    "default_attacks": {"n_blocks": 4, "channels": 64, "attack_planes": True, "batch_size": 256, "n_epochs": 2,
                        "num_envs": 64, "horizon": 16, "group_size": 8},
    "default_checks": {"n_blocks": 4, "channels": 64, "attack_planes": True, "check_planes": True, "batch_size": 256,
                       "n_epochs": 2, "num_envs": 64, "horizon": 16, "group_size": 8},
    # benchmarks/compare_ppo.py's laptop preset.
    "laptop": {"n_blocks": 2, "channels": 32, "batch_size": 128, "n_epochs": 2, "num_envs": 64, "horizon": 16,
               "group_size": 8},
}
ALGOS = ("grpo_games", "grpo_moves", "grpo_games_kl", "grpo_moves_kl", "grpo_games_dense", "grpo_moves_dense",
         "maskable_ppo")  # PPO last: the ratios' base
#: configs/default.yaml's KL penalty
KL = {"kl_coef": 0.3, "kl_estimator": "exact"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (a smoke test of the script)")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "learner_throughput.json")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    from benchmarks.common import machine_info

    report: dict[str, Any] = {"machine": machine_info(), "command": "python -m benchmarks.learner_throughput "
                              + " ".join(argv if argv is not None else sys.argv[1:]), "rows": []}
    for name in args.configs:
        cfg = dict(CONFIGS[name])
        if args.quick:
            cfg.update(num_envs=16, horizon=4, n_blocks=1, channels=8, batch_size=32, n_epochs=1)
        for threads in args.threads:
            updates = time_updates(cfg, ALGOS, threads, 1 if args.quick else args.rounds)
            forward = time_forward(cfg, threads, 3 if args.quick else 40)
            pretrain = time_pretrain(cfg, threads, 1 if args.quick else args.rounds)
            ppo = updates["maskable_ppo"]
            ratios = {f"{algo}_over_ppo": updates[algo]["samples_per_s"] / ppo["samples_per_s"] for algo in ALGOS[:-1]}
            cpu_ratios = {f"{algo}_over_ppo": updates[algo]["samples_per_cpu_s"] / ppo["samples_per_cpu_s"]
                          for algo in ALGOS[:-1]}
            report["rows"].append({"config": name, **cfg, "threads": threads, "updates": updates,
                                   "ratios": ratios, "cpu_ratios": cpu_ratios, "rollout_forward_ms": forward,
                                   "pretrain_steps_per_s": pretrain})
            print(f"{name} threads={threads}: " + ", ".join(
                f"{algo} {u['samples_per_s']:.0f} samples/s" for algo, u in updates.items())
                + f" | grpo_moves {updates['grpo_moves']['candidates_per_s']:.0f} candidates/s"
                + " | ratios " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items())
                + " | by CPU time " + ", ".join(f"{v:.2f}" for v in cpu_ratios.values())
                + " | rollout forward ms " + ", ".join(f"{k} {v:.2f}" for k, v in forward.items())
                + " | pretrain positions/s " + ", ".join(f"{k} {v:.0f}" for k, v in pretrain.items()), flush=True)
    report["load_average"] = {"before": load_before, "after": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"load average before/after: {report['load_average']['before']} / {report['load_average']['after']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
