"""Pretraining within a wall-clock budget: label, train, then evaluate the pretrained policy.

Run: ``python -m benchmarks.pretrain_budget RUN_DIR [--set key=value ...] [--net 4x64] [--eval tune|heldout]
[--games 40] [--tune-puzzles CSV] [--prefix-of DATASET.npz] [--label-only] [--eval-only]``.

One :func:`grpo_agent.pretrain.pretrain` run (training on ``torch_threads``, by default one per core) with the
:class:`PretrainConfig` fields given by ``--set`` (values parsed as YAML), then one of two evaluations of
``RUN_DIR/pretrained.zip``:

* ``--eval tune`` (for choosing settings): the walks start only from a 95% split of the built-in training set
  (``load_positions("builtin").split(0.95, seed=0)``); the greedy move's ACPL at depth 10 is measured on the 200
  positions of the other 5%, which no walk starts from, and with ``--tune-puzzles CSV`` the puzzles of a set
  generated apart from the shipped one (``python scripts/make_puzzles.py --seed 1 --out CSV ...``), and
  ``--games`` games against the random mover from those 200 positions. Nothing held out is looked at.
* ``--eval heldout`` (for reporting): :class:`grpo_agent.evaluation.Evaluator` as ``grpo-chess eval`` runs it
  on held-out material: ACPL and best-move rate at depth 10 on 50 ``builtin:eval`` positions, the 100 shipped
  puzzles, and ``--games`` games against the random mover (score with its 95% Wilson interval).

``--prefix-of`` saves labelling: a dataset of the same labelling settings with more positions is cut to
``n_positions``. The walks are deterministic and advance in batches of the same size, so its first
``n_positions`` positions are exactly what labelling ``n_positions`` would keep; the labelling time reported
is then the source's, scaled by the share of positions (``label_seconds_scaled: true``).

The result (settings, labelling and training seconds, held-out metrics of the pretraining split, evaluation)
is written to ``RUN_DIR/bench.json`` and printed as one Markdown table row.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from chess_env.positions import load_positions

TUNE_SPLIT = (0.95, 0)  # (fraction kept for the walks, seed) of the built-in training set
TUNE_POSITIONS = 200  # all of the 5%


def parse_net(text: str) -> dict[str, Any]:
    """``"4x64"`` -> ``policy_kwargs`` of a ResNet with 4 blocks of 64 channels; ``"4x64+attacks"`` the same
    with its attack planes (``attack_planes=True``), ``"4x64+attacks+checks"`` with its check planes too."""
    size, *extras = text.lower().split("+")
    planes = {"attacks": "attack_planes", "checks": "check_planes"}
    try:
        blocks, channels = (int(part) for part in size.split("x"))
        if any(extra not in planes for extra in extras):
            raise ValueError
    except ValueError:
        raise ValueError(f"--net must be BLOCKSxCHANNELS such as 4x64, with +attacks and/or +checks, got {text!r}"
                         ) from None
    kwargs: dict[str, Any] = {"n_blocks": blocks, "channels": channels}
    kwargs.update({planes[extra]: True for extra in extras})
    return {"features_extractor_kwargs": kwargs}


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``["depth=4", "targets=best"]`` -> ``{"depth": 4, "targets": "best"}`` (values parsed as YAML)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        value = yaml.safe_load(raw)
        out[key.strip()] = float(value) if isinstance(value, str) and _is_float(value) else value
    return out


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def tune_split(run_dir: Path) -> tuple[Path, list[str]]:
    """Write the walks' 95% of the built-in set to ``run_dir/walk_starts.epd``; return it and the other 5%."""
    walk_starts, tune = load_positions("builtin").split(*TUNE_SPLIT)
    path = run_dir / "walk_starts.epd"
    path.write_text("\n".join(walk_starts) + "\n")
    return path, list(tune)


def seed_prefix(source: Path, config: Any, run_dir: Path) -> None:
    """Put the first ``config.n_positions`` positions of ``source`` into ``run_dir`` as ``config``'s dataset.

    Raises:
        ValueError: ``source`` was labelled with other settings, or has too few positions.
    """
    from grpo_agent.pretrain_data import DATASET_FILE, LabelledPositions, dataset_key, start_positions

    with np.load(source, allow_pickle=False) as stored:
        settings, seconds = json.loads(str(stored["settings"])), float(stored["label_seconds"])
    key, wanted = dataset_key(config, start_positions(config.positions))
    differ = {k for k in wanted if k not in ("n_positions", "positions") and wanted[k] != settings.get(k)}
    if differ or settings["n_positions"] < config.n_positions:
        raise ValueError(f"{source} cannot seed this run: settings {sorted(differ)} differ or it has only "
                         f"{settings['n_positions']} positions")
    data = LabelledPositions.load(source)
    run_dir.mkdir(parents=True, exist_ok=True)
    data.head(config.n_positions).save(run_dir / DATASET_FILE, key, {**wanted, "label_seconds_scaled": True},
                                       seconds * config.n_positions / len(data))


def evaluate(model: Any, mode: str, tune: list[str], games: int, tune_puzzles: Path | None = None) -> dict[str, Any]:
    """The ``tune`` or ``heldout`` evaluation of the module docstring, as JSON (the tune ACPL also per position:
    ``cp_losses`` and ``best_moves``, in the order of the tune positions)."""
    from chess_env.puzzles import read_puzzles
    from grpo_agent.evaluation import EvalConfig, Evaluator

    with Evaluator() as evaluator:
        if mode == "tune":
            acpl = evaluator.acpl(model, tune[:TUNE_POSITIONS], depth=10)
            # Per position, so two policies judged on the same positions can be compared pairwise.
            out = {"acpl": acpl.acpl, "best_move_rate": acpl.best_move_rate, "accuracy": acpl.accuracy,
                   "positions": len(acpl.positions), "cp_losses": [p.cp_loss for p in acpl.positions],
                   "best_moves": [p.move == p.best_move for p in acpl.positions]}
            if tune_puzzles is not None:
                puzzles = evaluator.puzzles(model, read_puzzles(tune_puzzles))
                out.update(tune_puzzles=puzzles.accuracy, tune_puzzles_by_theme=puzzles.by_theme)
            if games:
                match = evaluator.play_match(model, "random", games, tune[:TUNE_POSITIONS])
                out.update(vs_random=_score(match), terminations=match.terminations)
            return out
        config = EvalConfig(opponents=("random",), games=games, acpl_positions=50, acpl_depth=10, puzzles=100)
        report = evaluator.evaluate(model, config, policy_name="pretrained")
    return {"acpl": report.acpl.acpl, "best_move_rate": report.acpl.best_move_rate, "accuracy": report.acpl.accuracy,
            "puzzles": report.puzzles.accuracy, "puzzles_by_theme": report.puzzles.by_theme,
            "vs_random": _score(report.matches[0]), "terminations": report.matches[0].terminations,
            "seconds": report.seconds}


def _score(match: Any) -> dict[str, float]:
    stats = match.stats
    return {"score": stats.score, "low": stats.score_low, "high": stats.score_high, "wins": stats.wins,
            "draws": stats.draws, "losses": stats.losses}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a PretrainConfig field")
    parser.add_argument("--net", default="4x64", help="ResNet BLOCKSxCHANNELS, +attacks and +checks for its attack and check planes (default 4x64)")
    parser.add_argument("--eval", choices=("tune", "heldout"), default="tune")
    parser.add_argument("--games", type=int, default=40,
                        help="games against the random mover (heldout: from builtin:eval; tune: from the tune positions)")
    parser.add_argument("--tune-puzzles", type=Path, default=None, help="a puzzle CSV apart from the shipped one (tune)")
    parser.add_argument("--prefix-of", type=Path, default=None, help="a larger dataset of the same settings")
    parser.add_argument("--label-only", action="store_true", help="build the dataset (to seed --prefix-of) and stop")
    parser.add_argument("--eval-only", action="store_true", help="evaluate RUN_DIR/pretrained.zip again, no training")
    args = parser.parse_args(argv)

    import torch

    from grpo_agent.pretrain import MODEL_FILE, SUMMARY_FILE, PretrainConfig, pretrain

    torch.set_num_threads(1)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    overrides = parse_sets(args.set)
    tune: list[str] = []
    if args.eval == "tune":
        if "positions" in overrides:
            raise ValueError("--eval tune chooses the walks' start positions itself; do not --set positions")
        walk_starts, tune = tune_split(args.run_dir)
        overrides["positions"] = str(walk_starts)
    config = PretrainConfig(**overrides)
    if args.label_only:
        from grpo_agent.pretrain_data import build_dataset

        return {"dataset": str(build_dataset(config, None, args.run_dir))}
    if args.prefix_of is not None:
        seed_prefix(args.prefix_of, config, args.run_dir)
    started = time.perf_counter()
    if args.eval_only:
        from grpo_agent import GRPO

        model, wall = GRPO.load(args.run_dir / MODEL_FILE, device="cpu"), math.nan
    else:
        model = pretrain(config, args.run_dir, policy_kwargs=parse_net(args.net))
        wall = time.perf_counter() - started
    summary = json.loads((args.run_dir / SUMMARY_FILE).read_text())
    if args.eval_only:
        config = PretrainConfig(**summary["config"])  # what the model was trained with, not --set
    result = {"net": args.net, "config": dataclasses.asdict(config), "pretrain_wall_seconds": wall,
              "label_seconds": summary["dataset"]["label_seconds"],
              "label_seconds_scaled": bool(summary["dataset"]["settings"].get("label_seconds_scaled")),
              "train": summary["train"], "eval_mode": args.eval, "load_average": os.getloadavg(),
              "eval": evaluate(model, args.eval, tune, args.games, args.tune_puzzles)}
    (args.run_dir / "bench.json").write_text(json.dumps(result, indent=1))
    print(table_row(result))
    return result


def table_row(result: dict[str, Any]) -> str:
    """One Markdown row: config, labelling s, training s, positions, held-out top-1, then the evaluation."""
    c, t, e = result["config"], result["train"], result["eval"]
    name = (f"{result['net']} d{c['depth']} n{c['n_positions']} e{c['epochs']} {c['targets']}"
            f"{'' if c['targets'] == 'best' else ' T' + str(c['label_temperature'])} walk {c['walk_plies']}/"
            f"{c['walk_random']}{'' if c['mate_weight'] == 1 else ' mw' + str(c['mate_weight'])}"
            f"{' conv' + str(c['conversion']) if c.get('conversion') else ''}"
            f"{' ' + c['conversion_keep'] if c.get('conversion') and c.get('conversion_keep', 'all') != 'all' else ''}")
    cells = [name, f"{result['label_seconds']:.0f}{'*' if result['label_seconds_scaled'] else ''}",
             f"{t['train_seconds']:.0f}", f"{c['n_positions']}", f"{t['heldout_top1']:.3f}", f"{e['acpl']:.0f}",
             f"{e['best_move_rate']:.0%}"]
    if "puzzles" in e:
        vs = e["vs_random"]
        cells += [f"{e['puzzles']:.0%}", f"{vs['score']:.2f} [{vs['low']:.2f}, {vs['high']:.2f}]"]
    elif "tune_puzzles" in e:
        themes = e["tune_puzzles_by_theme"]
        cells += [f"{e['tune_puzzles']:.0%} (" + ", ".join(f"{t} {v['accuracy']:.0%}" for t, v in themes.items()) + ")"]
    if "puzzles" not in e and "vs_random" in e:
        vs = e["vs_random"]
        cells += [f"{vs['score']:.2f} [{vs['low']:.2f}, {vs['high']:.2f}] ({vs['wins']}/{vs['draws']}/{vs['losses']})"]
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    main()
