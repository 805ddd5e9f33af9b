"""What an evaluation reports: :class:`EvalReport`, its artefacts (JSON, PGN, SVG) and its tables."""

from __future__ import annotations

import dataclasses
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import chess
import chess.svg

from grpo_agent.save_util import write_json

if TYPE_CHECKING:  # annotations only: the evaluator builds reports, so it imports this module
    from grpo_agent.evaluation.evaluator import AcplResult, EvalConfig, MatchResult
    from grpo_agent.evaluation.puzzles import PuzzleResult


@dataclass
class EvalReport:
    """Everything one evaluation measured."""

    policy: str
    config: EvalConfig
    engine: str | None
    matches: list[MatchResult] = field(default_factory=list)
    acpl: AcplResult | None = None
    puzzles: PuzzleResult | None = None
    seconds: float = 0.0

    def metrics(self) -> dict[str, float]:
        """Flat metrics for the SB3 logger: ``eval/score_vs_<opponent>``, ``eval/elo_vs_<opponent>``,
        ``eval/acpl``, ``eval/accuracy``, ``eval/puzzle_accuracy``."""
        out: dict[str, float] = {}
        for match in self.matches:
            out[f"eval/score_vs_{match.opponent}"] = match.stats.score
            out[f"eval/elo_vs_{match.opponent}"] = match.stats.elo
        if self.acpl is not None:
            out["eval/acpl"] = self.acpl.acpl
            out["eval/accuracy"] = self.acpl.accuracy
        if self.puzzles is not None:
            out["eval/puzzle_accuracy"] = self.puzzles.accuracy
        return out

    def to_dict(self) -> dict[str, Any]:
        config = dataclasses.asdict(self.config)
        if not isinstance(config["positions"], str):
            config["positions"] = f"<{len(config['positions'])} positions>"
        return {"policy": self.policy, "engine": self.engine, "seconds": self.seconds, "config": config,
                "metrics": self.metrics(), "matches": [m.to_dict() for m in self.matches],
                "acpl": self.acpl.to_dict() if self.acpl else None,
                "puzzles": self.puzzles.to_dict() if self.puzzles else None}


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def format_eval_rows(*reports: EvalReport) -> list[tuple[str, ...]]:
    """``(metric, value in report 1, value in report 2, ...)`` text rows comparing reports of the same config
    (e.g. a run's initial, pretrained and final policies)."""
    def match_text(match: MatchResult) -> str:
        s = match.stats
        return f"{s.score:.2f} [{s.score_low:.2f}, {s.score_high:.2f}] ({s.wins}/{s.draws}/{s.losses})"

    rows: list[tuple[str, ...]] = []
    for matches in zip(*(r.matches for r in reports)):
        rows.append((f"score vs {matches[0].opponent} (W/D/L)", *(match_text(m) for m in matches)))
    if all(r.acpl is not None for r in reports):
        acpl = [r.acpl for r in reports]
        rows.append((f"ACPL (depth {acpl[-1].depth}, lower is better)", *(f"{a.acpl:.1f}" for a in acpl)))
        rows.append(("move accuracy %", *(f"{a.accuracy:.1f}" for a in acpl)))
        rows.append(("engine's best move %", *(f"{100 * a.best_move_rate:.1f}" for a in acpl)))
    if all(r.puzzles is not None for r in reports):
        rows.append(("puzzles solved %", *(f"{100 * r.puzzles.accuracy:.1f}" for r in reports)))
    return rows


def write_artifacts(report: EvalReport, out_dir: str | os.PathLike, svg: bool = True) -> Path:
    """Write ``eval.json``, ``games/<opponent>.pgn`` and (with ``svg``) ``svg/<opponent>_<i>.svg``.

    Returns the path of ``eval.json``.
    """
    out = Path(out_dir)
    (out / "games").mkdir(parents=True, exist_ok=True)
    date = time.strftime("%Y.%m.%d")
    for match in report.matches:
        pgn_path = out / "games" / f"{safe_name(match.opponent)}.pgn"
        with open(pgn_path, "w") as fh:
            for game in match.games:
                policy_white = game.policy_color == "white"
                headers = {"Event": f"grpo-chess eval: {report.policy} vs {match.opponent}", "Site": "grpo-chess",
                           "Date": date, "Round": str(game.index + 1),
                           "White": report.policy if policy_white else match.opponent_description,
                           "Black": match.opponent_description if policy_white else report.policy,
                           "Opponent": match.opponent}
                print(game.to_pgn(headers), file=fh, end="\n\n")
        if svg:
            (out / "svg").mkdir(exist_ok=True)
            for game in match.games:
                board = game.board()
                image = chess.svg.board(board, lastmove=board.move_stack[-1] if board.move_stack else None,
                                        check=board.king(board.turn) if board.is_check() else None,
                                        orientation=chess.WHITE if game.policy_color == "white" else chess.BLACK,
                                        size=360)
                (out / "svg" / f"{safe_name(match.opponent)}_{game.index:03d}.svg").write_text(image)
    json_path = out / "eval.json"
    write_json(json_path, report.to_dict())
    return json_path


#: Short names of game endings for tables.
SHORT_TERMINATIONS = {"checkmate": "mate", "stalemate": "stalemate", "insufficient_material": "material",
                       "threefold_repetition": "3-fold", "fifty_moves": "50-move", "fivefold_repetition": "5-fold",
                       "seventyfive_moves": "75-move", "illegal_move": "illegal",
                       "adjudication_win": "adj-win", "adjudication_draw": "adj-draw"}


def print_report(report: EvalReport, console: Any = None) -> None:
    """Print the report as rich tables: results, game lengths and endings, ACPL, puzzles."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if report.matches:
        results = Table(title=f"{report.policy}: ladder results (95% Wilson CI; Elo = policy - opponent)")
        games = Table(title="game lengths (plies) and endings")
        for column in ("opponent", "games", "W", "D", "L", "score", "score CI", "Elo diff", "Elo CI"):
            results.add_column(column, justify="left" if column == "opponent" else "right")
        for column in ("opponent", "mean", "median", "min", "max", "endings"):
            games.add_column(column, justify="left" if column in ("opponent", "endings") else "right")
        for match in report.matches:
            s = match.stats
            if s.games == 1:
                elo, elo_ci = "n/a", "n/a"
            else:
                bound = ("<=" if s.score == 0 else ">=") if s.elo_clamped else ""
                elo, elo_ci = f"{bound}{s.elo:+.0f}", f"[{s.elo_low:+.0f}, {s.elo_high:+.0f}]"
            results.add_row(match.opponent, str(s.games), str(s.wins), str(s.draws), str(s.losses), f"{s.score:.3f}",
                            f"{s.score_low:.2f}-{s.score_high:.2f}", elo, elo_ci)
            lengths = match.lengths
            games.add_row(match.opponent, f"{lengths['mean']:.0f}", f"{lengths['median']:.0f}", str(lengths["min"]),
                          str(lengths["max"]), ", ".join(f"{SHORT_TERMINATIONS.get(k, k)} {v}"
                                                          for k, v in match.terminations.items()))
        console.print(results)
        for match in report.matches:
            console.print(f"  {match.opponent}: {match.opponent_description}")
        if any(m.stats.elo_clamped for m in report.matches):
            console.print("  Elo at a score of 0 or 1 is clamped to half a game: a bound, not an estimate.")
        console.print(games)
    if report.acpl is not None:
        a = report.acpl
        console.print(f"ACPL {a.acpl:.1f} cp, accuracy {a.accuracy:.1f}%, engine's best move {a.best_move_rate:.0%} "
                      f"on {len(a.positions)} held-out positions (Stockfish depth {a.depth})")
    if report.puzzles is not None:
        table = Table(title=f"puzzles: {report.puzzles.accuracy:.1%} solved of {len(report.puzzles.solved)}")
        for column in ("theme", "solved", "n", "accuracy"):
            table.add_column(column, justify="left" if column == "theme" else "right")
        for theme, row in report.puzzles.by_theme.items():
            table.add_row(theme, str(row["solved"]), str(row["n"]), f"{row['accuracy']:.1%}")
        console.print(table)
    console.print(f"evaluated in {report.seconds:.1f}s")
