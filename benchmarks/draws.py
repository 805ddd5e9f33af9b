"""How a policy's games against the random mover are drawn: the material on the board when each draw ended.

Run: ``python -m benchmarks.draws MODEL.zip [MODEL.zip ...] [--games 40] [--out JSON]``.

Each model plays ``--games`` games against the random mover (colours alternating, greedy moves, 200 plies: the
games of :mod:`benchmarks.finetune`'s judge, the same openings and seeds) from the **tune** positions of
:data:`benchmarks.pretrain_budget.TUNE_SPLIT`, never from ``builtin:eval``: this is a diagnostic for choosing a
recipe, so it stays on the training side. For every drawn game it prints how the draw came (threefold
repetition, stalemate, ...), the policy's material lead (pawn 1, knight and bishop 3, rook 5, queen 9) and what
the opponent had left, and then a summary per model.

Then the **stalemate traps**: ``--traps`` (300) positions of king and queen or rook against a bare king, the
strong side to move, where some move stalemates and none mates (drawn with a fixed seed, so every model meets
the same ones); ``stalemate_traps`` is how many of them the greedy policy stalemates in. One trap is met at
every approach of a cornered king, so a policy that falls into a tenth of them stalemates many of the endings
it has won.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

import chess
import numpy as np

#: points per piece, the usual scale (the king counts 0)
PIECE_POINTS = {chess.PAWN: 1, chess.KNIGHT: 3, chess.BISHOP: 3, chess.ROOK: 5, chess.QUEEN: 9, chess.KING: 0}


def final_material(start_fen: str, moves: list[str], color: chess.Color) -> tuple[int, str]:
    """``(lead, left)``: the material lead of ``color`` after ``moves`` from ``start_fen``, and the opponent's
    pieces then (upper-case letters, sorted, king first: ``"KPP"``)."""
    board = chess.Board(start_fen)
    for move in moves:
        board.push_uci(move)
    lead = sum(PIECE_POINTS[p.piece_type] * (1 if p.color == color else -1) for p in board.piece_map().values())
    left = sorted((p.symbol().upper() for p in board.piece_map().values() if p.color != color),
                  key=lambda s: (s != "K", s))
    return lead, "".join(left)


def stalemate_traps(n: int, seed: int = 0) -> list[chess.Board]:
    """``n`` positions of king and queen (two in three) or rook against a bare king, the strong side (White) to
    move, where some legal move stalemates and none mates."""
    rng = random.Random(seed)
    out: list[chess.Board] = []
    while len(out) < n:
        board = chess.Board(None)
        piece = chess.QUEEN if rng.random() < 2 / 3 else chess.ROOK
        for square, (kind, color) in zip(rng.sample(chess.SQUARES, 3),
                                         ((chess.KING, chess.WHITE), (chess.KING, chess.BLACK), (piece, chess.WHITE))):
            board.set_piece_at(square, chess.Piece(kind, color))
        if not board.is_valid() or board.is_game_over():
            continue
        ends = [_ending(board, move) for move in board.legal_moves]
        if "stalemate" in ends and "checkmate" not in ends:
            out.append(board)
    return out


def _ending(board: chess.Board, move: chess.Move) -> str | None:
    board.push(move)
    try:
        return "checkmate" if board.is_checkmate() else "stalemate" if board.is_stalemate() else None
    finally:
        board.pop()


def traps_fallen(model: Any, boards: list[chess.Board]) -> int:
    """How many of ``boards`` the model's greedy move stalemates in."""
    from chess_env.encoding import decode_action, legal_action_mask, observation

    obs = np.stack([observation(board) for board in boards])
    masks = np.stack([legal_action_mask(board) for board in boards])
    actions, _ = model.predict(obs, action_masks=masks, deterministic=True)
    return sum(_ending(board, decode_action(board, int(a))) == "stalemate" for board, a in zip(boards, actions))


def draws(model_path: Path, games: int, traps: list[chess.Board]) -> dict[str, Any]:
    """Play the games and describe every draw (see the module docstring)."""
    from benchmarks.pretrain_budget import TUNE_POSITIONS, TUNE_SPLIT
    from chess_env.positions import load_positions
    from grpo_agent import GRPO
    from grpo_agent.evaluation import Evaluator

    model = GRPO.load(model_path, device="cpu")
    tune = list(load_positions("builtin").split(*TUNE_SPLIT)[1])[:TUNE_POSITIONS]
    with Evaluator() as evaluator:
        match = evaluator.play_match(model, "random", games, tune)
    drawn = []
    for game in match.games:
        if game.score != 0.5:
            continue
        color = chess.WHITE if game.policy_color == "white" else chess.BLACK
        lead, left = final_material(game.start_fen, game.moves, color)
        drawn.append({"termination": game.termination, "plies": game.plies, "lead": lead, "opponent_left": left})
    stats = match.stats
    return {"model": str(model_path), "games": games, "wins": stats.wins, "draws": stats.draws, "losses": stats.losses,
            "terminations": match.terminations, "drawn": drawn,
            "drawn_lead_8_or_more": sum(d["lead"] >= 8 for d in drawn),
            "drawn_opponent_pawns_only": sum(set(d["opponent_left"]) <= {"K", "P"} for d in drawn),
            "stalemate_traps": traps_fallen(model, traps), "traps": len(traps)}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="saved GRPO models (.zip)")
    parser.add_argument("--games", type=int, default=40, help="games per model against the random mover")
    parser.add_argument("--traps", type=int, default=300, help="stalemate-trap positions per model")
    parser.add_argument("--out", type=Path, default=None, help="write the results here as JSON")
    args = parser.parse_args(argv)
    for path in args.models:
        if not path.is_file():
            parser.error(f"no model file at {path}")
    results = []
    traps = stalemate_traps(args.traps)
    for path in args.models:
        result = draws(path, args.games, traps)
        results.append(result)
        print(f"\n{path}: {result['wins']}/{result['draws']}/{result['losses']} (W/D/L), {result['terminations']}")
        print(f"{'termination':<24}{'plies':>6}{'lead':>6}  opponent left")
        for d in result["drawn"]:
            print(f"{d['termination']:<24}{d['plies']:>6}{d['lead']:>+6}  {d['opponent_left']}")
        print(f"draws with a lead of 8 or more: {result['drawn_lead_8_or_more']} of {result['draws']}; "
              f"with the opponent down to king and pawns: {result['drawn_opponent_pawns_only']} of {result['draws']}; "
              f"stalemate traps fallen into: {result['stalemate_traps']} of {result['traps']}")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
