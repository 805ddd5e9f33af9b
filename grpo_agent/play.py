"""A game against a policy in the terminal: the board, move parsing and the game loop of ``grpo-chess play``.

The board is drawn with Unicode pieces from your side. Enter moves in SAN (``Nf3``, ``exd5``,
``O-O``, ``e8=Q``) or UCI (``g1f3``, ``e7e8q``). Commands: ``moves`` (list the legal moves),
``undo`` (take back your last move and the agent's reply), ``resign``, ``help``, ``quit``. An
illegal, ambiguous or malformed entry is answered with the reason and the list of legal moves.
Input is read line by line from a stream (stdin for ``grpo-chess play``), so a game can be scripted::

    printf 'e4\\nNf3\\nresign\\n' | grpo-chess play random --color white

The game ends by the rules (checkmate, stalemate, insufficient material, and threefold
repetition or the 50-move rule as soon as they can be claimed), by resignation, or when the input
ends (the game is then abandoned).
"""

from __future__ import annotations

from typing import TextIO

import chess

from chess_env.opponents import MoveFn
from grpo_agent.evaluation import rules_termination

HELP = ("Enter a move in SAN (Nf3, exd5, O-O, e8=Q) or UCI (g1f3, e7e8q). "
        "Commands: moves, undo, resign, help, quit.")


def render_board(board: chess.Board, orientation: chess.Color = chess.WHITE, unicode: bool = True) -> str:
    """The board as text with rank and file labels, seen from ``orientation``'s side.

    Pieces are Unicode chess symbols (``unicode=True``) or letters (upper case White), empty
    squares ``·`` (or ``.``).
    """
    empty = "·" if unicode else "."
    ranks = range(7, -1, -1) if orientation == chess.WHITE else range(8)
    files = range(8) if orientation == chess.WHITE else range(7, -1, -1)
    lines = []
    for rank in ranks:
        cells = []
        for file in files:
            piece = board.piece_at(chess.square(file, rank))
            cells.append(empty if piece is None else (piece.unicode_symbol() if unicode else piece.symbol()))
        lines.append(f"{rank + 1} " + " ".join(cells))
    lines.append("  " + " ".join(chess.FILE_NAMES[f] for f in files))
    return "\n".join(lines)


def legal_moves_text(board: chess.Board) -> str:
    """All legal moves in SAN, sorted, space-separated."""
    return " ".join(sorted(board.san(m) for m in board.legal_moves))


def parse_move(board: chess.Board, text: str) -> chess.Move:
    """Parse SAN or UCI input for ``board``.

    Raises:
        ValueError: the reason, naming the input: not a move, illegal here, or ambiguous.
    """
    try:
        return board.parse_san(text)
    except chess.AmbiguousMoveError:
        raise ValueError(f"{text!r} is ambiguous here; add the file or rank of the piece") from None
    except ValueError:
        pass
    try:
        return board.parse_uci(text)
    except chess.IllegalMoveError:
        raise ValueError(f"{text!r} is not a legal move here") from None
    except ValueError:
        pass
    # Distinguish "well-formed but illegal" SAN from text that is no move at all.
    try:
        chess.Board(None).parse_san(text)
    except chess.IllegalMoveError:
        raise ValueError(f"{text!r} is not a legal move here") from None
    except ValueError:
        pass
    raise ValueError(f"{text!r} is neither a move in SAN (e.g. Nf3) nor UCI (e.g. g1f3) nor a command")


def play_interactive(move_fn: MoveFn, human_color: chess.Color, stdin: TextIO, stdout: TextIO,
                     fen: str = chess.STARTING_FEN, agent_name: str = "agent", unicode: bool = True) -> str:
    """Run one game between a human (lines from ``stdin``) and ``move_fn``.

    Returns:
        The PGN result (``1-0``, ``0-1``, ``1/2-1/2``) or ``*`` when the game was abandoned.
    """
    board = chess.Board(fen)

    def say(text: str = "") -> None:
        print(text, file=stdout, flush=True)

    side = "White" if human_color == chess.WHITE else "Black"
    say(f"You play {side} against {agent_name}. {HELP}")
    shown = None  # the board is redrawn only when the position changed
    while True:
        ended = rules_termination(board)
        if ended is not None:
            reason, winner = ended
            say(render_board(board, human_color, unicode))
            result = "1/2-1/2" if winner is None else ("1-0" if winner == chess.WHITE else "0-1")
            verdict = "Draw" if winner is None else ("You win" if winner == human_color else f"{agent_name} wins")
            say(f"Game over: {reason.replace('_', ' ')}. {verdict} ({result}).")
            return result
        if board.turn != human_color:
            move = move_fn(board.copy())
            if move is None or move not in board.legal_moves:
                result = "1-0" if human_color == chess.WHITE else "0-1"
                say(f"{agent_name} played the illegal move {move} and forfeits. You win ({result}).")
                return result
            say(f"{agent_name} plays {board.san(move)} ({move.uci()})")
            board.push(move)
            continue
        if board.fen() != shown:
            say(render_board(board, human_color, unicode))
            shown = board.fen()
        stdout.write("Your move: ")
        stdout.flush()
        line = stdin.readline()
        if not line:
            say("\nInput ended; game abandoned (*).")
            return "*"
        text = line.strip()
        command = text.lower()
        if not text:
            continue
        if command in ("help", "?"):
            say(HELP)
        elif command == "moves":
            say(f"Legal moves: {legal_moves_text(board)}")
        elif command in ("quit", "exit"):
            say("Game abandoned (*).")
            return "*"
        elif command == "resign":
            result = "0-1" if human_color == chess.WHITE else "1-0"
            say(f"You resign. {agent_name} wins ({result}).")
            return result
        elif command == "undo":
            # Take back the agent's reply and your move, back to your previous turn.
            undone = []
            while board.move_stack:
                undone.append(board.pop())
                if board.turn == human_color:
                    break
            if undone and board.turn == human_color:
                say(f"Took back {len(undone)} plies.")
            else:  # nothing of yours to take back (e.g. only the agent's first move was played)
                for move in reversed(undone):
                    board.push(move)
                say("Nothing to undo.")
        else:
            try:
                move = parse_move(board, text)
            except ValueError as exc:
                say(f"{exc}. Legal moves: {legal_moves_text(board)}")
                continue
            board.push(move)
