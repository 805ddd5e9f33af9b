"""GRPO fine-tuning from a warm start, on training positions only: which recipe adds to the pretrained policy.

Run: ``python -m benchmarks.finetune BASE_DIR NAME [--config CONFIG] [--set SECTION.KEY=VALUE ...]
[--seconds 240] [--games 20] [--tune-puzzles CSV]``; ``python -m benchmarks.finetune BASE_DIR --table`` prints
the table of every result there.

``BASE_DIR`` is a ``python -m benchmarks.pretrain_budget BASE_DIR --eval tune`` run: its ``pretrained.zip`` is the
warm start (and the KL reference) and its ``walk_starts.epd`` (95% of the built-in training set) holds the start
positions of the GRPO games. The env and algo sections of ``--config`` (default ``configs/default.yaml``, the
``make train`` recipe) with the ``--set`` overrides build the env and GRPO as ``grpo-chess train`` does. GRPO
trains whole rollouts until one would start past ``--seconds`` of wall clock (one torch thread); then the
fine-tuned policy gets the tune judge of :func:`benchmarks.pretrain_budget.evaluate`: ACPL and best-move rate at
depth 10 on the 200 positions no walk and no game starts from, the ``--tune-puzzles`` set (generated apart from
the shipped puzzles) and ``--games`` games against the random mover. ``NAME`` ``base`` with ``--seconds 0``
judges the warm start itself; once it is there, every other result also holds its ACPL and best-move rate minus
the base's, paired over the same positions.

Nothing held out (``builtin:eval``, the shipped puzzles) is looked at: this is where a recipe is chosen, and the
chosen one is then reported on held-out material by ``make train``.

The result is written to ``BASE_DIR/finetune/NAME.json`` (the model beside it, ``NAME.zip``) and printed as one
Markdown table row.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from benchmarks.common import mean_ci
from benchmarks.pretrain_budget import TUNE_SPLIT, evaluate

#: rollout statistics kept from the last rollout (the sampling policy's health and the regret against the best move)
LAST_ROLLOUT = ("entropy_norm", "regret", "policy_value", "step_reward_mean", "plies_per_s", "scored_moves_per_s")


class Deadline(BaseCallback):
    """Ends ``learn()`` in the first rollout that starts past ``seconds`` of training, at its first step (SB3 asks a
    callback only per step): every rollout before it is played and trained whole, and the first one always is."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def _on_training_start(self) -> None:
        self.deadline, self.rollouts, self.stop = time.perf_counter() + self.seconds, 0, False

    def _on_rollout_start(self) -> None:
        self.stop = self.rollouts > 0 and time.perf_counter() > self.deadline
        self.rollouts += 1

    def _on_step(self) -> bool:
        return not self.stop


def finetune(base_dir: Path, config: dict[str, Any], seconds: float,
             starts: Path | None = None) -> tuple[Any, dict[str, Any]]:
    """GRPO from ``base_dir/pretrained.zip`` for ``seconds``; returns the model and what the run did.

    The games start from ``starts`` (default ``base_dir/walk_starts.epd``): any positions of the training split.

    Raises:
        ConfigError: the config builds no env or no GRPO (the value is named).
    """
    from grpo_agent.cli.train import _build_model, _make_env
    from grpo_agent.pretrain import MODEL_FILE, warm_start

    env_cfg = {**config["env"], "start_positions": str(starts or base_dir / "walk_starts.epd")}
    env, model = _make_env(env_cfg), None
    try:
        model = _build_model(config, env, None)
        warm_start(model, base_dir / MODEL_FILE)
        start = time.perf_counter()
        if seconds > 0:
            model.learn(10**9, callback=Deadline(seconds))
        # The positions of the trained rollouts (num_timesteps also counts the one step of the rollout cut short).
        info = {"train_seconds": time.perf_counter() - start, "rollouts": int(model.n_rollouts),
                "positions": int(model.n_rollouts * model.n_envs * model.horizon)}
        info.update({f"final_{k}": v for k, v in (model.last_rollout_stats or {}).items() if k in LAST_ROLLOUT})
    finally:
        if model is not None:
            model.close_rollout_workers()
        env.close()
    return model, info


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_dir", type=Path, help="a pretrain_budget --eval tune run folder")
    parser.add_argument("name", nargs="?", help="the result's name (BASE_DIR/finetune/NAME.json)")
    parser.add_argument("--table", action="store_true", help="print the table of BASE_DIR's results and stop")
    parser.add_argument("--config", default="configs/default.yaml", help="env and algo sections (default: make train's)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    parser.add_argument("--seconds", type=float, default=240.0, help="GRPO wall clock (0: judge the warm start)")
    parser.add_argument("--games", type=int, default=20, help="games against the random mover from the tune positions")
    parser.add_argument("--tune-puzzles", type=Path, default=None, help="a puzzle CSV apart from the shipped one")
    parser.add_argument("--starts", type=Path, default=None,
                        help="GRPO games' start positions (default: BASE_DIR/walk_starts.epd); training split only")
    args = parser.parse_args(argv)

    if args.table:
        return print_table(args.base_dir)
    if args.name is None:
        parser.error("NAME is required unless --table")
    if args.name == "base" and args.seconds != 0:
        parser.error("NAME base is the warm start every other result is paired to: give it --seconds 0")
    if not (args.base_dir / "walk_starts.epd").is_file():
        parser.error(f"{args.base_dir} is not a pretrain_budget --eval tune run (no walk_starts.epd)")

    import torch

    from chess_env.positions import load_positions
    from grpo_agent.cli.config import ConfigError, load_config

    torch.set_num_threads(1)
    tune = list(load_positions("builtin").split(*TUNE_SPLIT)[1])
    try:
        config = load_config(args.config, args.set)
        model, info = finetune(args.base_dir, config, args.seconds, args.starts)
    except ConfigError as exc:
        parser.error(str(exc))
    result = {"name": args.name, "seconds": args.seconds, "sets": args.set, "config": args.config,
              "starts": str(args.starts or args.base_dir / "walk_starts.epd"),
              "algo": config["algo"], "env": config["env"], **info, "load_average": os.getloadavg(),
              "eval": evaluate(model, "tune", tune, args.games, args.tune_puzzles)}
    out = args.base_dir / "finetune" / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    base = out.with_name("base.json")
    result["vs_base"] = (paired_to_base(result, json.loads(base.read_text()))
                         if args.name != "base" and base.is_file() else {})
    model.save(out.with_suffix(".zip"))
    out.write_text(json.dumps(result, indent=1, default=str))
    print(table_row(result))
    return result


def paired_to_base(result: dict[str, Any], base: dict[str, Any] | None) -> dict[str, Any]:
    """ACPL and best-move rate minus the warm start's, over the same tune positions: the mean of the per-position
    differences with its 95% half-width (pairing removes the spread between positions, most of the noise of one
    ACPL); empty without a judged base."""
    if base is None or "cp_losses" not in base["eval"] or "cp_losses" not in result["eval"]:
        return {}
    if len(result["eval"]["cp_losses"]) != len(base["eval"]["cp_losses"]):
        raise ValueError(f"{result['name']} and its base were judged on {len(result['eval']['cp_losses'])} and "
                         f"{len(base['eval']['cp_losses'])} positions: they cannot be paired")
    out = {}
    for key, name in (("cp_losses", "acpl"), ("best_moves", "best_move_rate")):
        diffs = [float(a) - float(b) for a, b in zip(result["eval"][key], base["eval"][key])]
        out[name] = mean_ci(diffs)
    return out


def print_table(base_dir: Path) -> dict[str, Any]:
    """Print every result of ``base_dir/finetune/`` (or of ``base_dir`` itself, as committed under
    ``benchmarks/results/finetune/``) as a Markdown table, paired to its ``base.json``."""
    folder = base_dir / "finetune" if (base_dir / "finetune").is_dir() else base_dir
    results = {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}
    results = {name: result for name, result in results.items() if "eval" in result and "positions" in result}
    base = results.get("base")
    print("| name | s | positions | ACPL | best move | puzzles | vs random (W/D/L) | entropy_norm | regret | "
          "paired to base: ACPL, best move |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, result in results.items():
        result["vs_base"] = {} if name == "base" else paired_to_base(result, base)
        print(table_row(result))
    return results


def table_row(result: dict[str, Any]) -> str:
    """One Markdown row: name, seconds, positions, ACPL, best move, puzzles, score against the random mover, the
    last rollout's entropy_norm and regret, and (when ``base.json`` was there) the paired differences to the base."""
    e = result["eval"]
    cells = [result["name"], f"{result['seconds']:.0f}", f"{result['positions']}", f"{e['acpl']:.0f}",
             f"{e['best_move_rate']:.0%}", f"{e['tune_puzzles']:.0%}" if "tune_puzzles" in e else "",
             f"{e['vs_random']['score']:.2f} ({e['vs_random']['wins']}/{e['vs_random']['draws']}/"
             f"{e['vs_random']['losses']})" if "vs_random" in e else "",
             f"{result.get('final_entropy_norm', float('nan')):.2f}", f"{result.get('final_regret', float('nan')):.3f}"]
    paired = result.get("vs_base") or {}
    cells.append(f"{paired['acpl']['mean']:+.1f} +- {paired['acpl']['ci']:.1f}, "
                 f"{paired['best_move_rate']['mean']:+.1%} +- {paired['best_move_rate']['ci']:.1%}" if paired else "")
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    main()
