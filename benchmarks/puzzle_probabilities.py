"""What a training stage does to the policy on puzzles, beyond the greedy solve rate: the probability of the solution.

Run: ``python -m benchmarks.puzzle_probabilities RUN_DIR [RUN_DIR ...] [--puzzles CSV] [--out JSON]``.

``RUN_DIR`` is a ``grpo-chess train`` run with a warm start (``pretrained_model.zip`` and ``final_model.zip``).
For the first move of every puzzle (default: the shipped set) and both policies it reads the policy's whole
distribution over the legal moves (:func:`grpo_agent.evaluation.players.policy_log_probs`, temperature 1) and
reports per theme:

* ``p_solution``: the mean probability of the solution's first move;
* ``p_top``: the mean probability of the policy's own most likely move (how sharp the policy is);
* ``rank1`` / ``top3``: in how many puzzles the solution is the most likely move (what the greedy judge counts,
  for the first move) / among the three most likely;
* ``lost``: the puzzles whose solution was the warm start's most likely move and is not the final policy's, with
  both probabilities.

A stage that only sharpens the policy raises ``p_solution`` and ``p_top`` and leaves ``rank1`` alone; the greedy
solve rate sees only the re-ranking. Run it on held-out puzzles to explain a result, never to choose a recipe.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import chess
import numpy as np

from grpo_agent.save_util import write_json

STAGES = ("pretrained", "final")


def solution_stats(model: Any, puzzles: list[Any]) -> list[dict[str, Any]]:
    """Per puzzle: the probability and rank of the solution's first move, and the policy's top move."""
    from grpo_agent.evaluation.players import policy_log_probs

    out = []
    for puzzle in puzzles:
        board = puzzle.board()
        moves, log_probs = policy_log_probs(model, board)
        probs = np.exp(log_probs)
        solution = moves.index(chess.Move.from_uci(puzzle.solution[0]))
        top = int(probs.argmax())
        out.append({"id": puzzle.puzzle_id, "theme": puzzle.themes[0], "p_solution": float(probs[solution]),
                    "rank": int((probs > probs[solution]).sum()) + 1, "p_top": float(probs[top]),
                    "top": board.san(moves[top])})
    return out


def summarize(stats: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per theme (and ``all``), per stage: the means and counts of the module docstring, and the lost puzzles."""
    themes = sorted({row["theme"] for row in stats[STAGES[0]]}) + ["all"]
    summary: dict[str, dict[str, Any]] = {}
    for theme in themes:
        keep = [i for i, row in enumerate(stats[STAGES[0]]) if theme in ("all", row["theme"])]
        entry: dict[str, Any] = {"n": len(keep)}
        for stage in STAGES:
            rows = [stats[stage][i] for i in keep]
            entry[stage] = {"p_solution": float(np.mean([r["p_solution"] for r in rows])),
                            "p_top": float(np.mean([r["p_top"] for r in rows])),
                            "rank1": sum(r["rank"] == 1 for r in rows), "top3": sum(r["rank"] <= 3 for r in rows)}
        before, after = stats[STAGES[0]], stats[STAGES[1]]
        entry["lost"] = [{"id": before[i]["id"], "p_before": before[i]["p_solution"], "p_after": after[i]["p_solution"],
                          "plays": after[i]["top"]} for i in keep if before[i]["rank"] == 1 and after[i]["rank"] != 1]
        summary[theme] = entry
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--puzzles", type=Path, default=None, help="a Lichess-layout puzzle CSV (default: the shipped set)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = parser.parse_args(argv)

    from chess_env.puzzles import read_puzzles
    from grpo_agent import GRPO

    puzzles = read_puzzles(args.puzzles)
    result: dict[str, Any] = {"puzzles": str(args.puzzles or "shipped"), "runs": {}}
    print("| run | theme | n | p(solution) before -> after | p(top move) | solution first | solution in top 3 | lost |")
    print("|---|---|---|---|---|---|---|---|")
    for run_dir in args.run_dirs:
        for stage in STAGES:
            if not (run_dir / f"{stage}_model.zip").exists():
                raise FileNotFoundError(f"{run_dir} has no {stage}_model.zip: a grpo-chess train run with a warm start is needed")
        stats = {stage: solution_stats(GRPO.load(run_dir / f"{stage}_model.zip", device="cpu"), puzzles) for stage in STAGES}
        summary = summarize(stats)
        result["runs"][str(run_dir)] = summary
        for theme, s in summary.items():
            b, a = s[STAGES[0]], s[STAGES[1]]
            print(f"| {run_dir.name} | {theme} | {s['n']} | {b['p_solution']:.3f} -> {a['p_solution']:.3f} | "
                  f"{b['p_top']:.2f} -> {a['p_top']:.2f} | {b['rank1']} -> {a['rank1']} | {b['top3']} -> {a['top3']} | "
                  f"{len(s['lost'])} |")
    if args.out is not None:
        write_json(args.out, result, indent=1)
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
