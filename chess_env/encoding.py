"""Moves as action indices and positions as observation planes, from the mover's point of view.

Actions follow AlphaZero's 8x8x73 policy layout: ``action = from_square * 73 + plane`` where
``from_square`` is in the mover's frame (the board is mirrored top-to-bottom when Black is to
move, so the mover's pawns always advance "up", towards rank 8) and ``plane`` is:

* ``0-55``: queen-line moves, ``direction * 7 + (distance - 1)`` with directions
  N, NE, E, SE, S, SW, W, NW and distances 1-7. Castling (king two files) and queen promotions
  are queen-line moves.
* ``56-63``: knight moves, in the order of :data:`KNIGHT_DELTAS`.
* ``64-72``: underpromotions, ``64 + 3 * piece + (file_delta + 1)`` with piece 0, 1, 2 =
  knight, bishop, rook and file delta -1 (capture left), 0 (push), +1 (capture right).

Every conversion is a table lookup built once at import; nothing searches the 4672 actions.
"""

from __future__ import annotations

import chess
import numpy as np

N_PLANES = 73
N_ACTIONS = 64 * N_PLANES  # 4672

QUEEN_DIRECTIONS = ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1))
"""(rank delta, file delta) of the queen-line planes: N, NE, E, SE, S, SW, W, NW."""
KNIGHT_DELTAS = ((2, 1), (1, 2), (-1, 2), (-2, 1), (-2, -1), (-1, -2), (1, -2), (2, -1))
"""(rank delta, file delta) of the knight planes, in plane order."""
UNDERPROMOTIONS = (chess.KNIGHT, chess.BISHOP, chess.ROOK)

# _MOVE_ACTION[from, to]: the queen-line or knight action for a move in the mover's frame, or -1.
# _UNDERPROMOTION_ACTION[from, to, i]: the action for an underpromotion to UNDERPROMOTIONS[i], or -1.
# _ACTION_FROM/_ACTION_TO/_ACTION_PROMOTION: the inverse, with -1 for targets off the board.
_MOVE_ACTION = np.full((64, 64), -1, dtype=np.int64)
_UNDERPROMOTION_ACTION = np.full((64, 64, 3), -1, dtype=np.int64)
_ACTION_FROM = np.repeat(np.arange(64, dtype=np.int64), N_PLANES)
_ACTION_TO = np.full(N_ACTIONS, -1, dtype=np.int64)
_ACTION_PROMOTION = np.zeros(N_ACTIONS, dtype=np.int64)  # 0 = none (or queen, inferred on decode)


def _build_tables() -> None:
    def target(square: int, d_rank: int, d_file: int) -> int:
        rank, file = chess.square_rank(square) + d_rank, chess.square_file(square) + d_file
        return chess.square(file, rank) if 0 <= rank < 8 and 0 <= file < 8 else -1

    for square in chess.SQUARES:
        base = square * N_PLANES
        for direction, (d_rank, d_file) in enumerate(QUEEN_DIRECTIONS):
            for distance in range(1, 8):
                to = target(square, d_rank * distance, d_file * distance)
                if to >= 0:
                    action = base + direction * 7 + distance - 1
                    _MOVE_ACTION[square, to] = action
                    _ACTION_TO[action] = to
        for index, (d_rank, d_file) in enumerate(KNIGHT_DELTAS):
            to = target(square, d_rank, d_file)
            if to >= 0:
                action = base + 56 + index
                _MOVE_ACTION[square, to] = action
                _ACTION_TO[action] = to
        if chess.square_rank(square) == 6:
            for piece_index, piece in enumerate(UNDERPROMOTIONS):
                for d_file in (-1, 0, 1):
                    to = target(square, 1, d_file)
                    if to >= 0:
                        action = base + 64 + 3 * piece_index + d_file + 1
                        _UNDERPROMOTION_ACTION[square, to, piece_index] = action
                        _ACTION_TO[action] = to
                        _ACTION_PROMOTION[action] = piece


_build_tables()


def _frame(board: chess.Board, square: int) -> int:
    """Map a square between the board's frame and the mover's frame (an involution)."""
    return square if board.turn == chess.WHITE else square ^ 56


def encode_move(board: chess.Board, move: chess.Move) -> int:
    """Return the action index of ``move`` played by the side to move in ``board``.

    The move does not have to be legal, only expressible in the 8x8x73 layout.

    Raises:
        ValueError: the move has no action (e.g. a null move or a king-takes-rook castling move).
    """
    from_square, to_square = _frame(board, move.from_square), _frame(board, move.to_square)
    if move.promotion in UNDERPROMOTIONS:
        action = _UNDERPROMOTION_ACTION[from_square, to_square, UNDERPROMOTIONS.index(move.promotion)]
    else:
        action = _MOVE_ACTION[from_square, to_square]
    if action < 0:
        raise ValueError(f"move {move.uci()} cannot be encoded as an action in position {board.fen()!r}")
    return int(action)


def decode_action(board: chess.Board, action: int) -> chess.Move:
    """Return the move that ``action`` stands for when it is played in ``board``.

    A queen-line move of a pawn onto the last rank is a queen promotion. The move is not checked
    for legality; compare with ``legal_action_mask(board)`` or ``board.is_legal``.

    Raises:
        ValueError: ``action`` is outside ``[0, 4672)`` or points off the board.
    """
    if not 0 <= action < N_ACTIONS:
        raise ValueError(f"action {action!r} is outside the action space [0, {N_ACTIONS})")
    to_square = int(_ACTION_TO[action])
    if to_square < 0:
        raise ValueError(f"action {action} points off the board in position {board.fen()!r}")
    from_square = _frame(board, int(_ACTION_FROM[action]))
    to_square = _frame(board, to_square)
    promotion = int(_ACTION_PROMOTION[action]) or None
    if promotion is None and chess.square_rank(to_square) in (0, 7):
        if board.piece_type_at(from_square) == chess.PAWN:
            promotion = chess.QUEEN
    return chess.Move(from_square, to_square, promotion)


def legal_actions(board: chess.Board) -> np.ndarray:
    """Return the action indices of the legal moves of ``board``, in python-chess's move order."""
    flip = 0 if board.turn == chess.WHITE else 56
    actions = []
    for move in board.legal_moves:
        from_square, to_square = move.from_square ^ flip, move.to_square ^ flip
        if move.promotion in UNDERPROMOTIONS:
            actions.append(_UNDERPROMOTION_ACTION[from_square, to_square, UNDERPROMOTIONS.index(move.promotion)])
        else:
            actions.append(_MOVE_ACTION[from_square, to_square])
    return np.asarray(actions, dtype=np.int64)


def legal_action_mask(board: chess.Board) -> np.ndarray:
    """Return a ``bool`` array of shape ``(4672,)``, True exactly at the legal moves of ``board``."""
    mask = np.zeros(N_ACTIONS, dtype=bool)
    mask[legal_actions(board)] = True
    return mask


# Observation planes.
PIECE_PLANES = 12
"""Own pawn, knight, bishop, rook, queen, king, then the opponent's, in the mover's frame."""
N_BASE_PLANES = 21
_PIECE_ORDER = (chess.PAWN, chess.KNIGHT, chess.BISHOP, chess.ROOK, chess.QUEEN, chess.KING)


def observation_channels(history: int = 0) -> int:
    """Number of planes of an observation with ``history`` earlier positions."""
    return N_BASE_PLANES + PIECE_PLANES * history


def _piece_bitboards(board: chess.Board, mover: chess.Color) -> list[int]:
    bitboards = [board.pieces_mask(piece, color) for color in (mover, not mover) for piece in _PIECE_ORDER]
    return bitboards if mover == chess.WHITE else [chess.flip_vertical(bb) for bb in bitboards]


def _unpack(bitboards: list[int]) -> np.ndarray:
    """Bitboards -> float32 planes ``(len, 8, 8)`` indexed ``[rank, file]`` (rank 0 first)."""
    raw = np.array(bitboards, dtype=np.uint64).view(np.uint8)
    return np.unpackbits(raw, bitorder="little").reshape(len(bitboards), 8, 8).astype(np.float32)


def observation(board: chess.Board, history: int = 0) -> np.ndarray:
    """Encode ``board`` as float32 planes of shape ``(21 + 12 * history, 8, 8)``.

    Every plane is in the mover's frame: ``plane[rank, file]`` with rank 0 the mover's back rank
    (the board is mirrored top-to-bottom when Black is to move). Planes:

    * 0-5: the mover's pawns, knights, bishops, rooks, queens, king (1 where present).
    * 6-11: the opponent's pieces, same order.
    * 12: all 1 if the current position occurred before (at least twice in all).
    * 13: all 1 if it occurred at least twice before (three times in all).
    * 14: all 1 if White is to move (the mirroring hides the colour otherwise).
    * 15-18: all 1 for castling rights: mover kingside, mover queenside, opponent kingside,
      opponent queenside.
    * 19: 1 on the en-passant target square when an en-passant capture is legal.
    * 20: halfmove clock / 100 (clipped to 1), the 50-move-rule counter.
    * 21 + 12 * (k - 1) ...: for k = 1..history, the piece planes (as 0-11, from the *current*
      mover's point of view) of the position k plies ago, taken from ``board.move_stack``; all
      zero before the game's start.
    """
    mover = board.turn
    bitboards = _piece_bitboards(board, mover)
    if history:
        past = board.copy(stack=history)
        for _ in range(history):
            if past.move_stack:
                past.pop()
                bitboards.extend(_piece_bitboards(past, mover))
            else:
                bitboards.extend([0] * PIECE_PLANES)
    pieces = _unpack(bitboards)
    planes = np.zeros((observation_channels(history), 8, 8), dtype=np.float32)
    planes[:PIECE_PLANES] = pieces[:PIECE_PLANES]
    planes[N_BASE_PLANES:] = pieces[PIECE_PLANES:].reshape(-1, 8, 8)
    if board.halfmove_clock >= 4 and board.is_repetition(2):  # see rules.game_outcome
        planes[12] = 1.0
        if board.is_repetition(3):
            planes[13] = 1.0
    planes[14] = float(mover == chess.WHITE)
    for plane, color in ((15, mover), (17, not mover)):
        planes[plane] = float(board.has_kingside_castling_rights(color))
        planes[plane + 1] = float(board.has_queenside_castling_rights(color))
    if board.ep_square is not None and board.has_legal_en_passant():
        ep = _frame(board, board.ep_square)
        planes[19, chess.square_rank(ep), chess.square_file(ep)] = 1.0
    planes[20] = min(board.halfmove_clock / 100.0, 1.0)
    return planes
