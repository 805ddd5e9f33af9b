"""Move encoding and observations, with python-chess as the oracle."""

import chess
import numpy as np
import pytest

from chess_env.encoding import (
    N_ACTIONS,
    BoardEncoding,
    decode_action,
    encode_all,
    encode_move,
    legal_action_mask,
    legal_actions,
    observation,
    observation_channels,
    observations,
)

PERFT = {
    "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1": (20, 400, 8902),
    "r3k2r/p1ppqpb1/bn2pnp1/3PN3/1p2P3/2N2Q1p/PPPBBPPP/R3K2R w KQkq - 0 1": (48, 2039, 97862),
    "8/2p5/3p4/KP5r/1R3p1k/8/4P1P1/8 w - - 0 1": (14, 191, 2812),
    "r3k2r/Pppp1ppp/1b3nbN/nP6/BBP1P3/q4N2/Pp1P2PP/R2Q1RK1 w kq - 0 1": (6, 264, 9467),
    "r2q1rk1/pP1p2pp/Q4n2/bbp1p3/Np6/1B3NBn/pPPP1PPP/R3K2R b KQ - 0 1": (6, 264, 9467),
    "rnbq1k1r/pp1Pbppp/2p5/8/2B5/8/PPP1NnPP/RNBQK2R w KQ - 1 8": (44, 1486, 62379),
    "r4rk1/1pp1qppp/p1np1n2/2b1p1B1/2B1P1b1/P1NP1N2/1PP1QPPP/R4RK1 w - - 0 10": (46, 2079, 89890),
}


def mask_moves(board: chess.Board) -> set[chess.Move]:
    return {decode_action(board, int(a)) for a in np.flatnonzero(legal_action_mask(board))}


def perft(board: chess.Board, depth: int) -> int:
    """Count leaf nodes moving only through the action mask, checking it at every inner node."""
    moves = mask_moves(board)
    assert moves == set(board.legal_moves), board.fen()
    if depth == 1:
        return len(moves)
    total = 0
    for move in moves:
        board.push(move)
        total += perft(board, depth - 1)
        board.pop()
    return total


@pytest.mark.parametrize("fen", PERFT)
def test_perft_through_the_mask(fen):
    board = chess.Board(fen)
    for depth, expected in enumerate(PERFT[fen], start=1):
        assert perft(board, depth) == expected


def random_positions(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    produced = 0
    while produced < n:
        board = chess.Board()
        while not board.is_game_over() and produced < n:
            yield board
            produced += 1
            moves = list(board.legal_moves)
            board.push(moves[rng.integers(len(moves))])


def test_random_playouts_mask_matches_and_round_trips():
    seen_underpromotion = seen_castling = seen_en_passant = False
    for board in random_positions(3000):
        actions = legal_actions(board)
        assert len(set(actions.tolist())) == len(actions)  # no two legal moves share an action
        assert mask_moves(board) == set(board.legal_moves)
        for move in board.legal_moves:
            action = encode_move(board, move)
            assert 0 <= action < N_ACTIONS
            assert decode_action(board, action) == move
            seen_underpromotion |= move.promotion in (chess.KNIGHT, chess.BISHOP, chess.ROOK)
            seen_castling |= board.is_castling(move)
            seen_en_passant |= board.is_en_passant(move)
    assert seen_underpromotion and seen_castling and seen_en_passant


def test_actions_are_in_the_movers_frame():
    white = chess.Board()
    black = chess.Board()
    black.push_uci("e2e4")  # now Black to move; mirror of e2e4 is e7e5
    assert encode_move(white, chess.Move.from_uci("e2e4")) == encode_move(black, chess.Move.from_uci("e7e5"))
    # e2 is square 12; "N" direction plane 0, distance 2 -> plane 1.
    assert encode_move(white, chess.Move.from_uci("e2e4")) == 12 * 73 + 1


def test_promotions_use_queen_planes_and_underpromotion_planes():
    board = chess.Board("8/P6k/8/8/8/8/8/K7 w - - 0 1")
    queen = encode_move(board, chess.Move.from_uci("a7a8q"))
    assert queen == encode_move(board, chess.Move.from_uci("a7a8"))
    assert decode_action(board, queen) == chess.Move.from_uci("a7a8q")
    knight = encode_move(board, chess.Move.from_uci("a7a8n"))
    assert knight % 73 == 64 + 0 * 3 + 1  # knight, straight push
    assert decode_action(board, knight).promotion == chess.KNIGHT
    black = chess.Board("k7/8/8/8/8/8/7p/K7 b - - 0 1")
    assert decode_action(black, encode_move(black, chess.Move.from_uci("h2h1r"))) == chess.Move.from_uci("h2h1r")


def test_bad_actions_raise_naming_the_value():
    board = chess.Board()
    with pytest.raises(ValueError, match="4672"):
        decode_action(board, 4672)
    with pytest.raises(ValueError, match="-1"):
        decode_action(board, -1)
    with pytest.raises(ValueError, match="off the board"):
        decode_action(board, 7 * 73 + 2 * 7)  # h1 moving east
    with pytest.raises(ValueError, match="0000"):
        encode_move(board, chess.Move.null())


def test_observation_planes():
    board = chess.Board("r3k2r/8/8/3pP3/8/8/8/R3K2R w Kq d6 0 40")
    board.halfmove_clock = 50
    obs = observation(board)
    assert obs.shape == (observation_channels(0), 8, 8) == (21, 8, 8)
    assert obs.dtype == np.float32
    assert obs[4].sum() == 0  # no queens on the board
    assert obs[5, 0, 4] == 1  # own king on e1
    assert obs[11, 7, 4] == 1  # opponent king on e8
    assert obs[0, 4, 4] == 1  # own pawn on e5
    assert obs[14].min() == 1  # White to move
    assert obs[15].min() == 1 and obs[16].max() == 0  # own K, not Q
    assert obs[17].max() == 0 and obs[18].min() == 1  # opponent q, not k
    assert obs[19, 5, 3] == 1 and obs[19].sum() == 1  # en passant on d6
    assert np.allclose(obs[20], 0.5)


def test_observation_is_mirrored_for_black():
    board = chess.Board()
    board.push_uci("e2e4")
    obs = observation(board)
    assert obs[0, 1].sum() == 8  # Black's own pawns on its second rank
    assert obs[6, 4, 4] == 1  # White's e4 pawn is on the fifth rank seen from Black's side
    assert obs[14].max() == 0
    start = observation(chess.Board())
    assert np.array_equal(obs[:6], start[:6])  # same own-piece layout as White at the start


def test_repetition_and_history_planes():
    board = chess.Board()
    for uci in ("g1f3", "g8f6", "f3g1", "f6g8"):
        board.push_uci(uci)
    obs = observation(board, history=2)
    assert obs.shape == (45, 8, 8)
    assert obs[12].min() == 1 and obs[13].max() == 0
    one_ply_ago = obs[21:33]  # after g1f3 g8f6 f3g1: White knight back on g1, Black's still on f6
    assert one_ply_ago[1, 0, 6] == 1 and one_ply_ago[7, 5, 5] == 1 and one_ply_ago[7, 7, 6] == 0
    two_plies_ago = obs[33:45]  # after g1f3 g8f6: White knight on f3
    assert two_plies_ago[1, 2, 5] == 1 and two_plies_ago[1, 0, 6] == 0
    fresh = observation(chess.Board(), history=3)
    assert fresh[21:].sum() == 0  # no earlier positions at the start of a game


SPECIAL = [
    "8/8/8/K2pP2r/8/8/8/7k w - d6 0 1",  # exd6 en passant would expose the king along the rank: illegal
    "8/8/8/3pP3/8/8/8/K6k w - d6 0 1",  # exd6 legal
    "b3k3/1P6/8/8/4K3/8/8/8 w - - 0 1",  # the pinned b7 pawn promotes only by taking the pinning bishop
    "4k3/8/8/8/4K3/8/1p6/B7 b - - 0 1",  # the same for Black, mirrored
    "4k3/8/8/8/1b6/8/3P4/4K3 w - - 0 1",  # a pawn pinned on a diagonal: no push
    "4k3/4r3/8/8/8/8/4P3/4K3 w - - 0 1",  # a pawn pinned on a file: pushes only
    "4k3/8/8/1B6/8/8/8/4R1K1 b - - 0 1",  # Black in check from the rook: block, capture or step
    "r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1",  # both castlings for both sides
    "r3k2r/8/8/8/8/5b2/8/R3K2R w KQkq - 0 1",  # castling through an attacked square
    "r3k2r/8/8/8/8/8/8/R3K1R1 w Qk - 0 1",  # rights without the rook on its corner
    "4k3/8/8/8/8/8/5n2/R3K2R w KQ - 0 1",  # in check: no castling
    "3rk3/8/8/8/8/8/4q3/4K3 w - - 0 1",  # the checking queen next to the king, guarded along the d-file
    "4k3/8/8/8/8/5n2/R5B1/r3K3 w - - 0 1",  # double check: only the king moves, no capture of a checker
    "4k3/8/8/8/8/8/4r3/4K2b w - - 0 1",  # a checker that the king may take
    "n1n5/PPPk4/8/8/8/8/4Kppp/5N1N w - - 0 1",  # promotions and underpromotions, captures too
    "n1n5/PPPk4/8/8/8/8/4Kppp/5N1N b - - 0 1",
    "rnbqkbnr/ppp1p1pp/8/3pPp2/8/8/PPPP1PPP/RNBQKBNR w KQkq f6 0 3",
    "7k/5Q2/6K1/8/8/8/8/8 b - - 0 1",  # stalemate
    "6Qk/8/6K1/8/8/8/8/8 b - - 0 1",  # checkmate
]


@pytest.mark.parametrize("fen", [None, *SPECIAL])
def test_board_encoding_matches_python_chess(fen):
    """BoardEncoding's key, mask, EPD and FEN are python-chess's, over random playouts and special positions."""
    boards = random_positions(1500, seed=3) if fen is None else [chess.Board(fen)]
    for board in boards:
        encoding = BoardEncoding(board)
        expected = np.zeros(N_ACTIONS, dtype=bool)
        expected[[encode_move(board, move) for move in board.legal_moves]] = True
        assert np.array_equal(encoding.mask, expected), board.fen()
        assert np.array_equal(legal_action_mask(board), expected)
        assert encoding.has_legal_moves == any(board.legal_moves)
        assert encoding.key == board._transposition_key()
        assert encoding.epd == board.epd() and encoding.fen() == board.fen()
        assert np.array_equal(encoding.observation(), observation(board))


def test_observation_planes_agree_with_python_chess_for_both_sides():
    """The piece, castling and en-passant planes square by square, both colours to move."""
    order = (chess.PAWN, chess.KNIGHT, chess.BISHOP, chess.ROOK, chess.QUEEN, chess.KING)
    boards = [*random_positions(1500, seed=4), *(chess.Board(fen) for fen in SPECIAL)]
    for board in boards:
        mover = board.turn
        obs = observation(board)
        planes = np.zeros((12, 8, 8), dtype=np.float32)
        for square, piece in board.piece_map().items():
            rank = chess.square_rank(square) if mover == chess.WHITE else 7 - chess.square_rank(square)
            planes[order.index(piece.piece_type) + 6 * (piece.color != mover), rank, chess.square_file(square)] = 1
        assert np.array_equal(obs[:12], planes), board.fen()
        rights = [board.has_kingside_castling_rights(mover), board.has_queenside_castling_rights(mover),
                  board.has_kingside_castling_rights(not mover), board.has_queenside_castling_rights(not mover)]
        expected = [float(right) for right in rights]
        assert [obs[p].min() for p in range(15, 19)] == expected == [obs[p].max() for p in range(15, 19)]
        assert obs[19].sum() == board.has_legal_en_passant()


def test_encode_all_builds_what_each_encoding_builds_alone():
    boards = [board.copy() for board in random_positions(40, seed=5)] + [chess.Board(fen) for fen in SPECIAL]
    boards.append(chess.Board("rkrnnbbq/pppppppp/8/8/8/8/PPPPPPPP/RKRNNBBQ w KQkq - 0 1", chess960=True))  # falls back
    batch = [BoardEncoding(board) for board in boards]
    assert batch[3].mask.any() and batch[4].epd  # built before the batch: kept
    encode_all(batch)
    for board, encoding in zip(boards, batch):
        alone = BoardEncoding(board)
        assert np.array_equal(encoding.mask, alone.mask) and np.array_equal(encoding.pieces, alone.pieces)
        assert encoding.epd == alone.epd == board.epd() and encoding.has_legal_moves == alone.has_legal_moves
        assert np.array_equal(encoding.mask, legal_action_mask(board))


@pytest.mark.parametrize("history", [0, 2])
def test_observations_of_a_batch_are_each_positions_own(history):
    """Both colours to move in one batch, move stacks (repetitions, history planes), en passant."""
    boards = [board.copy() for board in random_positions(30, seed=6)][5:]
    boards += [chess.Board(fen) for fen in SPECIAL[:6]]
    for batch in (boards, [b for b in boards if b.turn], [b for b in boards if not b.turn]):
        stacked = observations([BoardEncoding(board) for board in batch], history)
        assert stacked.shape == (len(batch), observation_channels(history), 8, 8) and stacked.dtype == np.float32
        for board, obs in zip(batch, stacked):
            assert np.array_equal(obs, observation(board, history)), board.fen()
