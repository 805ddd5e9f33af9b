"""Solving puzzles with a move function; the puzzles themselves are :class:`chess_env.puzzles.Puzzle`."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import chess
import numpy as np

from chess_env.opponents import MoveFn
from chess_env.puzzles import Puzzle


def solve_puzzle(puzzle: Puzzle, move_fn: MoveFn) -> bool:
    """Whether ``move_fn`` finds every solver move of ``puzzle`` (a checkmating alternative also solves,
    as on Lichess); an illegal move fails the puzzle."""
    board = puzzle.board()
    for i in range(1, len(puzzle.moves), 2):
        move = move_fn(board.copy())
        expected = chess.Move.from_uci(puzzle.moves[i])
        if move != expected:
            if move is None or move not in board.legal_moves:
                return False
            board.push(move)
            return board.is_checkmate()
        board.push(expected)
        if i + 1 < len(puzzle.moves):
            board.push_uci(puzzle.moves[i + 1])
    return True


def select_puzzles(puzzles: Sequence[Puzzle], n: int | None, rng: np.random.Generator) -> list[Puzzle]:
    """``n`` puzzles (all for ``None``), balanced over first themes: shuffled, then round-robin."""
    if n is None or n >= len(puzzles):
        return list(puzzles)
    by_theme: dict[str, list[Puzzle]] = {}
    for i in rng.permutation(len(puzzles)):
        by_theme.setdefault(puzzles[i].themes[0], []).append(puzzles[i])
    chosen: list[Puzzle] = []
    queues = [by_theme[t] for t in sorted(by_theme)]
    while len(chosen) < n:
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop(0))
    return chosen


@dataclass
class PuzzleResult:
    """Which puzzles the policy solved, with accuracy overall and per theme."""

    solved: dict[str, bool]
    themes: dict[str, tuple[str, ...]]

    @property
    def accuracy(self) -> float:
        return statistics.fmean(self.solved.values())

    @property
    def by_theme(self) -> dict[str, dict[str, float]]:
        counts: dict[str, list[bool]] = {}
        for pid, ok in self.solved.items():
            for theme in self.themes[pid]:
                counts.setdefault(theme, []).append(ok)
        return {t: {"n": len(v), "solved": sum(v), "accuracy": statistics.fmean(v)} for t, v in sorted(counts.items())}

    def to_dict(self) -> dict[str, Any]:
        return {"n": len(self.solved), "accuracy": self.accuracy, "by_theme": self.by_theme, "solved": self.solved}
