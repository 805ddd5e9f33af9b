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
Legal-move masks and observations are built from python-chess's bitboards, without a Python loop
over squares or a :class:`chess.Move` per legal move; :class:`BoardEncoding` builds all of a
position's encodings (mask, observation, EPD, key) once for every consumer. python-chess is the
reference every one of them is tested against.
"""

from __future__ import annotations

from collections.abc import Sequence

import chess
import numpy as np

from chess_env.rules import is_repetition

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
# Python lists of the same, for scalar lookups (indexing a numpy array is ~5x slower for one element).
_ACTION_TO_LIST = _ACTION_TO.tolist()
_ACTION_PROMOTION_LIST = _ACTION_PROMOTION.tolist()


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
    action = int(action)
    to_square = _ACTION_TO_LIST[action]
    if to_square < 0:
        raise ValueError(f"action {action} points off the board in position {board.fen()!r}")
    from_square = _frame(board, action // N_PLANES)
    to_square = _frame(board, to_square)
    promotion = _ACTION_PROMOTION_LIST[action] or None
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


# Legal-move masks straight from the bitboards. python-chess builds a Move object per legal move and
# tests each one (1-2 us a move); the mask only needs, per piece, the set of squares it may go to.
# So the generator below works on target bitboards, one per piece (or one per kind of pawn move for
# all the pawns at once), and turns them into actions with one numpy unpack and a table lookup.
# python-chess stays the reference: tests/test_encoding.py and tests/test_properties.py compare the
# masks with ``board.legal_moves``.
#
# _ROWS[row, to]: the action of a move landing on ``to`` (mover's frame) for a row of targets, -1 where
# there is none. Rows 0-63: the piece on that from-square (queen-line and knight moves). Rows 64-67: all
# the mover's unpinned pawns at once, the from-square implied by the to-square: single pushes, double
# pushes, captures towards the a-file, captures towards the h-file. Rows 68-76: underpromotions,
# ``68 + 3 * piece + (file_delta + 1)`` as the action planes 64-72.
_PAWN_PUSH, _PAWN_DOUBLE, _PAWN_LEFT, _PAWN_RIGHT, _UNDER = 64, 65, 66, 67, 68
_ROWS = np.full((77, 64), -1, dtype=np.int64)
_ROWS[:64] = _MOVE_ACTION


def _build_pawn_rows() -> None:
    for to in range(8, 64):
        for row, delta, d_file in ((_PAWN_PUSH, 8, 0), (_PAWN_DOUBLE, 16, 0), (_PAWN_LEFT, 7, -1), (_PAWN_RIGHT, 9, 1)):
            src = to - delta
            if src >= 0 and chess.square_file(to) - chess.square_file(src) == d_file:
                _ROWS[row, to] = _MOVE_ACTION[src, to]
        if chess.square_rank(to) == 7:
            for piece_index in range(3):
                for d_file in (-1, 0, 1):
                    if 0 <= chess.square_file(to) - d_file < 8:
                        row = _UNDER + 3 * piece_index + d_file + 1
                        _ROWS[row, to] = _UNDERPROMOTION_ACTION[to - 8 - d_file, to, piece_index]


_build_pawn_rows()
# Black's rows, indexed by the board-frame to-square (Black's targets are not mirrored, the table is):
# row r + _BLACK_ROWS for Black is row r with its columns in board order.
_BLACK_ROWS = len(_ROWS)
_ROWS = np.concatenate([_ROWS, _ROWS[:, np.arange(64) ^ 56]]).astype(np.int32)  # int32: half the gather
# The same tables as nested lists, for the scalar lookups of the rare moves (en passant, pinned pawns).
_MOVE_ACTION_LIST = _MOVE_ACTION.tolist()
_UNDERPROMOTION_LIST = _UNDERPROMOTION_ACTION.tolist()
_BETWEEN = [[chess.between(a, b) for b in chess.SQUARES] for a in chess.SQUARES]
# python-chess's attack tables under module names of their own: the generator reads them in its inner loops.
_KNIGHT_ATTACKS = chess.BB_KNIGHT_ATTACKS
_KING_ATTACKS = chess.BB_KING_ATTACKS
_PAWN_ATTACKS = chess.BB_PAWN_ATTACKS
_DIAG_ATTACKS = chess.BB_DIAG_ATTACKS
_DIAG_MASKS = chess.BB_DIAG_MASKS
_RANK_ATTACKS = chess.BB_RANK_ATTACKS
_RANK_MASKS = chess.BB_RANK_MASKS
_FILE_ATTACKS = chess.BB_FILE_ATTACKS
_FILE_MASKS = chess.BB_FILE_MASKS
_RAYS = chess.BB_RAYS
_SQUARES = chess.BB_SQUARES
_ORTHOGONAL = [chess.BB_RANK_ATTACKS[s][0] | chess.BB_FILE_ATTACKS[s][0] for s in chess.SQUARES]
_DIAGONAL = [chess.BB_DIAG_ATTACKS[s][0] for s in chess.SQUARES]


def legal_action_mask(board: chess.Board) -> np.ndarray:
    """Return a ``bool`` array of shape ``(4672,)``, True exactly at the legal moves of ``board``.

    Built from the board's bitboards, without a :class:`chess.Move` per move, and equal to the
    actions of ``board.legal_moves`` for every valid position (``board.is_valid()``); boards
    python-chess's standard rules do not cover (Chess960, variants) are encoded through
    ``board.legal_moves``.
    """
    return BoardEncoding(board).mask


_Targets = tuple[list[int], list[int], list[int]]


def _legal_targets(board: chess.Board) -> _Targets:
    """The legal moves of ``board`` as ``(rows, targets, extra)``: rows of :data:`_ROWS` (Black's offset by
    :data:`_BLACK_ROWS`), the board-frame squares each row's moves go to, and single actions; the
    position has a legal move exactly when ``rows or extra``. :func:`_build_masks` turns them into masks."""
    turn = board.turn
    us, them = board.occupied_co[turn], board.occupied_co[not turn]
    king_bb = board.kings & us
    if (
        type(board) is not chess.Board
        or board.chess960
        or not king_bb
        or king_bb & (king_bb - 1)
        or board.pawns & (chess.BB_RANK_1 | chess.BB_RANK_8)
    ):
        # Outside the positions the generator is written for: python-chess decides.
        return [], [], legal_actions(board).tolist()
    occupied = board.occupied
    king = king_bb.bit_length() - 1
    # Rows of pieces are their mover-frame from-squares; Black's rows take board-frame targets.
    flip, black = (0, 0) if turn == chess.WHITE else (56, _BLACK_ROWS)
    rooks_queens = board.rooks | board.queens
    bishops_queens = board.bishops | board.queens
    rows: list[int] = []  # _ROWS rows ...
    targets: list[int] = []  # ... and the squares each may go to (board frame)
    extra: list[int] = []  # actions of the rare moves handled one by one

    # Pieces pinned to the king: a single piece of ours between it and an enemy slider.
    pinned = 0
    snipers = (_ORTHOGONAL[king] & rooks_queens | _DIAGONAL[king] & bishops_queens) & them
    while snipers:
        sniper = snipers.bit_length() - 1
        snipers ^= 1 << sniper
        between = _BETWEEN[king][sniper] & occupied
        if between and not between & (between - 1):
            pinned |= between
    pinned &= us
    checkers = board.attackers_mask(not turn, king)

    # King steps onto squares no enemy piece attacks (board.attackers_mask, inlined), the king itself
    # taken off the board so that a slider's ray through it counts.
    steps = _KING_ATTACKS[king] & ~us
    without_king = occupied ^ king_bb
    their_rooks_queens, their_bishops_queens = rooks_queens & them, bishops_queens & them
    their_steppers = board.knights & them, board.kings & them, board.pawns & them
    king_targets = 0
    while steps:
        square = steps.bit_length() - 1
        steps ^= 1 << square
        if not (
            _KNIGHT_ATTACKS[square] & their_steppers[0]
            or _KING_ATTACKS[square] & their_steppers[1]
            or _PAWN_ATTACKS[turn][square] & their_steppers[2]
            or (
                _RANK_ATTACKS[square][_RANK_MASKS[square] & without_king]
                | _FILE_ATTACKS[square][_FILE_MASKS[square] & without_king]
            )
            & their_rooks_queens
            or _DIAG_ATTACKS[square][_DIAG_MASKS[square] & without_king] & their_bishops_queens
        ):
            king_targets |= 1 << square
    if checkers:
        if checkers & (checkers - 1):  # double check: only the king moves
            if king_targets:
                rows.append((king ^ flip) + black)
                targets.append(king_targets)
            return rows, targets, extra
        # Single check: capture the checker or step in between.
        allowed = _BETWEEN[king][checkers.bit_length() - 1] | checkers
    else:
        allowed = chess.BB_ALL
        if board.castling_rights & (chess.BB_RANK_1 if turn == chess.WHITE else chess.BB_RANK_8):
            for move in board.generate_castling_moves():
                king_targets |= _SQUARES[move.to_square]
    if king_targets:
        rows.append((king ^ flip) + black)
        targets.append(king_targets)

    # Knights, bishops, rooks, queens: their attacks, on a pin's line only when pinned.
    free = ~us & allowed
    knights = board.knights
    pieces = us & ~board.pawns & ~king_bb
    while pieces:
        square = pieces.bit_length() - 1
        bb = 1 << square
        pieces ^= bb
        if bb & knights:
            moves = _KNIGHT_ATTACKS[square]
        else:
            moves = _DIAG_ATTACKS[square][_DIAG_MASKS[square] & occupied] if bb & bishops_queens else 0
            if bb & rooks_queens:
                moves |= (
                    _RANK_ATTACKS[square][_RANK_MASKS[square] & occupied]
                    | _FILE_ATTACKS[square][_FILE_MASKS[square] & occupied]
                )
        moves &= free
        if bb & pinned:
            moves &= _RAYS[king][square]
        if moves:
            rows.append((square ^ flip) + black)
            targets.append(moves)

    # Unpinned pawns, all at once per kind of move.
    pawns = board.pawns & us
    unpinned = pawns & ~pinned
    empty = ~occupied & chess.BB_ALL
    if turn == chess.WHITE:
        single = unpinned << 8 & empty
        double = (single & chess.BB_RANK_3) << 8 & empty
        left = (unpinned & ~chess.BB_FILE_A) << 7 & them
        right = (unpinned & ~chess.BB_FILE_H) << 9 & them
        last_rank = chess.BB_RANK_8
    else:
        single = unpinned >> 8 & empty
        double = (single & chess.BB_RANK_6) >> 8 & empty
        left = (unpinned & ~chess.BB_FILE_A) >> 9 & them
        right = (unpinned & ~chess.BB_FILE_H) >> 7 & them
        last_rank = chess.BB_RANK_1
    for row, moves, d_file in ((_PAWN_PUSH, single, 0), (_PAWN_DOUBLE, double, None), (_PAWN_LEFT, left, -1), (_PAWN_RIGHT, right, 1)):
        moves &= allowed
        if moves:
            rows.append(row + black)
            targets.append(moves)
            promotions = moves & last_rank
            if promotions and d_file is not None:
                for piece_index in range(3):
                    rows.append(_UNDER + 3 * piece_index + d_file + 1 + black)
                    targets.append(promotions)

    # Pinned pawns, one by one (rare): their pushes and captures along the pin's line.
    pinned_pawns = pawns & pinned
    while pinned_pawns:
        square = pinned_pawns.bit_length() - 1
        pinned_pawns ^= 1 << square
        step = 8 if turn == chess.WHITE else -8
        moves = _PAWN_ATTACKS[turn][square] & them
        if not _SQUARES[square + step] & occupied:
            moves |= _SQUARES[square + step]
            if square >> 3 == (1 if turn == chess.WHITE else 6) and not _SQUARES[square + 2 * step] & occupied:
                moves |= _SQUARES[square + 2 * step]
        moves &= allowed & _RAYS[king][square]
        while moves:
            to = moves.bit_length() - 1
            moves ^= 1 << to
            extra.append(_MOVE_ACTION_LIST[square ^ flip][to ^ flip])
            if _SQUARES[to] & last_rank:
                extra.extend(_UNDERPROMOTION_LIST[square ^ flip][to ^ flip])

    # En passant: python-chess's own check (the captured pawn may uncover the king along the rank).
    if board.ep_square is not None:
        for move in board.generate_legal_ep():
            extra.append(_MOVE_ACTION_LIST[move.from_square ^ flip][move.to_square ^ flip])
    return rows, targets, extra


def _build_masks(encodings: Sequence[BoardEncoding]) -> None:
    """Set the masks of ``encodings`` from their targets, all in one numpy pass: the rows of every
    position are unpacked together and scattered into one ``(len, 4672)`` array, a row per position."""
    masks = np.zeros((len(encodings), N_ACTIONS), dtype=bool)
    rows: list[int] = []
    targets: list[int] = []
    offsets: list[int] = []  # each row's position's start in the flattened masks
    extra: list[int] = []
    for j, encoding in enumerate(encodings):
        some_rows, some_targets, some_extra = encoding.targets
        if some_rows:
            rows += some_rows
            targets += some_targets
            offsets += [j * N_ACTIONS] * len(some_rows)
        if some_extra:
            extra += [j * N_ACTIONS + action for action in some_extra]
    flat = masks.reshape(-1)
    if rows:
        bits = np.unpackbits(np.array(targets, dtype=np.uint64).view(np.uint8), bitorder="little")
        flat[(_ROWS[rows] + np.array(offsets, dtype=np.int32)[:, None])[bits.view(bool).reshape(len(rows), 64)]] = True
    if extra:
        flat[extra] = True
    for encoding, mask in zip(encodings, masks):
        encoding._mask = mask


# Observation planes.
PIECE_PLANES = 12
"""Own pawn, knight, bishop, rook, queen, king, then the opponent's, in the mover's frame."""
N_BASE_PLANES = 21
_PIECE_ORDER = (chess.PAWN, chess.KNIGHT, chess.BISHOP, chess.ROOK, chess.QUEEN, chess.KING)
_BLACK_FIRST = np.r_[6:12, 0:6]  # board-frame piece planes (White's first) as Black sees them


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


def _build_pieces(encodings: Sequence[BoardEncoding], squares: bool) -> None:
    """Set the piece planes of ``encodings`` (and, with ``squares``, their FEN squares) from one unpack of
    all their piece bitboards."""
    bitboards: list[int] = []
    for encoding in encodings:
        board = encoding.board
        black, white = board.occupied_co
        p, n, b, r, q, k = board.pawns, board.knights, board.bishops, board.rooks, board.queens, board.kings
        bitboards += (p & white, n & white, b & white, r & white, q & white, k & white,
                      p & black, n & black, b & black, r & black, q & black, k & black)  # fmt: skip
    raw = np.array(bitboards, dtype=np.uint64).view(np.uint8)
    pieces = np.unpackbits(raw, bitorder="little").reshape(len(encodings), 12, 64)
    for encoding, planes in zip(encodings, pieces):
        encoding._pieces = planes
    if squares:
        # One character per square, rank 8 first: "1" where empty, else the piece's letter.
        codes = np.einsum("p,nps->ns", _PIECE_CODES, pieces)  # 0 on an empty square, else 1 + the piece's plane
        chars = _FEN_CHARS[codes].reshape(len(encodings), 8, 8)[:, ::-1].tobytes().decode()
        for j, encoding in enumerate(encodings):
            encoding._squares = chars[64 * j : 64 * j + 64]


def encode_all(encodings: Sequence[BoardEncoding], masks: bool = True) -> None:
    """Build the legal-move mask, piece planes and FEN squares of each of ``encodings``, all at once.

    The same arrays as each encoding builds on its own, with a handful of numpy calls for the whole
    batch rather than for each position: a vector env calls it on its games' encodings once a step,
    before reading their masks, observations and EPDs. Whatever an encoding has built already is kept;
    ``masks=False`` leaves the masks for a later call (the vector env's EPDs go to the engines first).
    """
    need_masks = [encoding for encoding in encodings if encoding._mask is None] if masks else []
    if need_masks:
        _build_masks(need_masks)
    need_pieces = [encoding for encoding in encodings if encoding._pieces is None]
    if need_pieces:
        _build_pieces(need_pieces, squares=True)


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
    return BoardEncoding(board).observation(history)


# Castling: clean castling rights -> (X-FEN field, (White K, White Q, Black K, Black Q)). For a standard
# board both are functions of the rights alone (rights sit on the corner rooks with the king on its
# e-file square), so python-chess computes each of the 16 possible entries once.
_CASTLING: dict[int, tuple[str, tuple[bool, bool, bool, bool]]] = {}
_FEN_CHARS = np.frombuffer(b"1PNBRQKpnbrqk", dtype=np.uint8)
_PIECE_CODES = np.arange(1, 13, dtype=np.uint8)
_FEN_RUNS = [("1" * n, str(n)) for n in range(8, 1, -1)]
# A rank's eight characters ("1" for an empty square) -> its FEN; a few thousand ranks cover most games.
_FEN_RANKS: dict[str, str] = {}
_FEN_RANKS_MAX = 1 << 16


def _fen_rank(squares: str) -> str:
    fen = squares
    for run, count in _FEN_RUNS:
        if run in fen:
            fen = fen.replace(run, count)
    if len(_FEN_RANKS) >= _FEN_RANKS_MAX:
        _FEN_RANKS.clear()
    _FEN_RANKS[squares] = fen
    return fen


def _castling(board: chess.Board) -> tuple[str, tuple[bool, bool, bool, bool]]:
    rights = board.clean_castling_rights()
    entry = _CASTLING.get(rights)
    if entry is None:
        entry = _CASTLING[rights] = (
            board.castling_xfen(),
            tuple(
                has(color)
                for color in (chess.WHITE, chess.BLACK)
                for has in (board.has_kingside_castling_rights, board.has_queenside_castling_rights)
            ),
        )
    return entry


class BoardEncoding:
    """The encodings of one position, each built on first use and then shared.

    :class:`~chess_env.ChessEnv` makes one for every position it reaches, so that the transposition
    key (the mask's and the engine pool's cache key), the legal-move mask, the observation and the
    EPD (the pool's position string and the head of ``info["fen"]``) are each computed once per ply,
    by whichever consumer asks first, and nothing is computed that none asks for. The piece planes
    are unpacked from the bitboards once for both the observation and the EPD.

    It reads ``board`` when asked: it describes the board only as long as the board is not changed.
    Everything it returns equals python-chess's own (``board._transposition_key()``,
    ``board.legal_moves``, ``board.epd()``, ``board.fen()``); the mask it returns is shared, so copy
    it before changing it. Chess960 and variant boards fall back to python-chess.
    """

    __slots__ = ("board", "_key", "_targets", "_mask", "_pieces", "_squares", "_epd")

    def __init__(self, board: chess.Board) -> None:
        self.board = board
        self._key: tuple | None = None
        self._targets: _Targets | None = None  # the legal moves, before they are made a mask
        self._mask: np.ndarray | None = None
        self._pieces: np.ndarray | None = None
        self._squares: str | None = None  # a character per square for the FEN, rank 8 first
        self._epd: str | None = None

    @property
    def key(self) -> tuple:
        """``board._transposition_key()``: pieces, side to move, castling rights, legal en-passant square."""
        if self._key is None:
            self._key = self.board._transposition_key()
        return self._key

    @property
    def targets(self) -> _Targets:
        """The legal moves as the generator finds them (see :func:`_legal_targets`); the mask is made of them."""
        if self._targets is None:
            self._targets = _legal_targets(self.board)
        return self._targets

    @property
    def has_legal_moves(self) -> bool:
        """Whether the position has a legal move (from the generator's targets, before any mask is made)."""
        rows, _, extra = self.targets
        return bool(rows or extra)

    @property
    def mask(self) -> np.ndarray:
        """The legal-move mask, as :func:`legal_action_mask` (shared: do not modify it)."""
        if self._mask is None:
            _build_masks([self])
        return self._mask

    @property
    def pieces(self) -> np.ndarray:
        """uint8 ``(12, 64)``: White's then Black's P N B R Q K, by square (a1 = 0)."""
        if self._pieces is None:
            _build_pieces([self], squares=False)
        return self._pieces

    @property
    def epd(self) -> str:
        """``board.epd()``: the piece placement, side to move, castling rights and legal en-passant square."""
        if self._epd is None:
            board = self.board
            if type(board) is not chess.Board or board.chess960:
                self._epd = board.epd()
            else:
                squares = self._squares
                if squares is None:
                    # 0 on an empty square, else 1 + the piece's row of the planes; rank 8 first.
                    squares = _FEN_CHARS[_PIECE_CODES @ self.pieces].reshape(8, 8)[::-1].tobytes().decode()
                ranks = _FEN_RANKS
                placement = "/".join(
                    [ranks.get(rank) or _fen_rank(rank) for rank in (squares[i : i + 8] for i in range(0, 64, 8))]
                )
                ep = board.ep_square
                ep = chess.SQUARE_NAMES[ep] if ep is not None and board.has_legal_en_passant() else "-"
                self._epd = f"{placement} {'w' if board.turn else 'b'} {_castling(board)[0]} {ep}"
        return self._epd

    def fen(self) -> str:
        """``board.fen()``: the EPD and the move counters."""
        return f"{self.epd} {self.board.halfmove_clock} {self.board.fullmove_number}"

    def observation(self, history: int = 0) -> np.ndarray:
        """The observation planes of :func:`observation`."""
        return observations([self], history)[0]


def observations(encodings: Sequence[BoardEncoding], history: int = 0) -> np.ndarray:
    """float32 ``(len(encodings), 21 + 12 * history, 8, 8)``: each position's :func:`observation`, built together.

    The piece planes are copied in and the constant planes broadcast for all the positions at once (a few
    numpy calls for the batch, not per position); only the en-passant square and the history planes are
    set position by position.
    """
    n = len(encodings)
    planes = np.zeros((n, observation_channels(history), 8, 8), dtype=np.float32)
    pieces = np.stack([encoding.pieces for encoding in encodings]).reshape(n, PIECE_PLANES, 8, 8)
    white = [j for j, encoding in enumerate(encodings) if encoding.board.turn == chess.WHITE]
    if len(white) == n:
        planes[:, :PIECE_PLANES] = pieces
    elif not white:
        planes[:, :PIECE_PLANES] = pieces[:, _BLACK_FIRST, ::-1]  # Black's pieces first, ranks mirrored
    else:
        black = sorted(set(range(n)) - set(white))
        planes[white, :PIECE_PLANES] = pieces[white]
        planes[black, :PIECE_PLANES] = pieces[black][:, _BLACK_FIRST, ::-1]
    constants = []  # planes 12-18 and 20 of each position, each plane a single value
    for j, encoding in enumerate(encodings):
        board = encoding.board
        mover = board.turn
        repeated = is_repetition(board, 2)
        rights = _castling(board)[1]
        own, other = (rights[:2], rights[2:]) if mover == chess.WHITE else (rights[2:], rights[:2])
        clock = min(board.halfmove_clock / 100.0, 1.0)
        constants.append((repeated, repeated and is_repetition(board, 3), mover == chess.WHITE, *own, *other, clock))
        if board.ep_square is not None and board.has_legal_en_passant():
            ep = _frame(board, board.ep_square)
            planes[j, 19, chess.square_rank(ep), chess.square_file(ep)] = 1.0
        if history:
            bitboards: list[int] = []
            past = board.copy(stack=history)
            for _ in range(history):
                if past.move_stack:
                    past.pop()
                    bitboards.extend(_piece_bitboards(past, mover))
                else:
                    bitboards.extend([0] * PIECE_PLANES)
            planes[j, N_BASE_PLANES:] = _unpack(bitboards)
    values = np.array(constants, dtype=np.float32)[:, :, None, None]
    planes[:, 12:19] = values[:, :7]
    planes[:, 20:21] = values[:, 7:]
    return planes
