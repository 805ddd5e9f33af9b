"""Attack and check planes against python-chess, on random, tactical and edge-case positions."""

import chess
import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from chess_env.encoding import observation
from conftest import random_boards
from grpo_agent.attacks import N_ATTACK_PLANES, N_CHECK_PLANES, AttackPlanes, CheckPlanes
from grpo_agent.policies import ChessResNet

PIECES = (chess.PAWN, chess.KNIGHT, chess.BISHOP, chess.ROOK, chess.QUEEN, chess.KING)

EDGE_CASES = [
    chess.STARTING_FEN,
    "r1bqkbnr/pppp1ppp/2n5/4p3/2B1P3/5Q2/PPPP1PPP/RNB1K1NR w KQkq - 2 3",  # mate in one on f7, Black's view too
    "r1bqkbnr/pppp1ppp/2n5/4p3/2B1P3/5Q2/PPPP1PPP/RNB1K1NR b KQkq - 2 3",
    "7k/P7/8/8/8/8/p7/K7 w - - 0 1",  # pawns on their last-but-one ranks, kings in corners
    "Q6q/8/8/3pP3/8/8/8/q6Q b - d6 0 1",  # queens on every corner, x-rays through each other
    "8/8/8/3k4/8/2B5/1b6/K7 w - - 0 1",  # a slider next to the board's edge
]


def expected(board: chess.Board) -> np.ndarray:
    """python-chess's attacker counts, as planes in the observation's frame (rank 0 the mover's back rank)."""
    out = np.zeros((N_ATTACK_PLANES, 8, 8), dtype=np.float32)
    for side, colour in enumerate((board.turn, not board.turn)):
        for t, piece in enumerate(PIECES):
            mask = board.pieces_mask(piece, colour)
            for square in chess.SQUARES:
                frame = square if board.turn == chess.WHITE else chess.square_mirror(square)
                count = len(board.attackers(colour, square) & chess.SquareSet(mask))
                out[6 * side + t, chess.square_rank(frame), chess.square_file(frame)] = count
    return out


def expected_checks(board: chess.Board) -> np.ndarray:
    """The squares from which each king would be in check, per way of giving check, from python-chess's
    attack tables (a piece on ``s`` attacks ``k`` exactly when the same piece on ``k`` attacks ``s``)."""
    out = np.zeros((N_CHECK_PLANES, 8, 8), dtype=np.float32)
    occupied = board.occupied
    for side, colour in enumerate((board.turn, not board.turn)):
        k = board.king(colour)
        if k is None:  # a test board without kings: no check squares
            continue
        ways = (
            chess.BB_RANK_ATTACKS[k][chess.BB_RANK_MASKS[k] & occupied]
            | chess.BB_FILE_ATTACKS[k][chess.BB_FILE_MASKS[k] & occupied],
            chess.BB_DIAG_ATTACKS[k][chess.BB_DIAG_MASKS[k] & occupied],
            chess.BB_KNIGHT_ATTACKS[k],
            chess.BB_PAWN_ATTACKS[colour][k],  # the enemy pawns that attack k are those a pawn on k would attack
        )
        for way, mask in enumerate(ways):
            for square in chess.SquareSet(mask):
                frame = square if board.turn == chess.WHITE else chess.square_mirror(square)
                out[4 * side + way, chess.square_rank(frame), chess.square_file(frame)] = 1.0
    return out


@pytest.mark.parametrize("history", [0, 2])
def test_check_planes_match_python_chess(history):
    boards = [chess.Board(fen) for fen in EDGE_CASES] + random_boards(60, seed=10 + history, history=True)
    obs = th.as_tensor(np.stack([observation(board, history) for board in boards]))
    got = CheckPlanes()(obs).numpy()
    assert got.shape == (len(boards), N_CHECK_PLANES, 8, 8)
    for board, planes in zip(boards, got):
        np.testing.assert_array_equal(planes, expected_checks(board), err_msg=board.fen())
        # Every checking move of the mover lands on one of the opponent king's squares of its kind.
        for move in board.legal_moves:
            if board.gives_check(move) and not board.is_castling(move) and not board.is_en_passant(move):
                piece = board.piece_type_at(move.from_square)
                to = move.to_square if board.turn == chess.WHITE else chess.square_mirror(move.to_square)
                kind = {chess.ROOK: [0], chess.BISHOP: [1], chess.QUEEN: [0, 1], chess.KNIGHT: [2],
                        chess.PAWN: [3]}.get(move.promotion or piece)
                if kind is not None and not _discovers(board, move):
                    assert any(planes[4 + k][chess.square_rank(to), chess.square_file(to)] for k in kind), move


def _discovers(board: chess.Board, move: chess.Move) -> bool:
    """Whether the move checks by uncovering another piece (the moved piece itself may not be the checker)."""
    after = board.copy(stack=False)
    after.push(move)
    return any(square != move.to_square for square in after.checkers())


def test_check_planes_see_the_mate():
    # Qxf7#: f7 is on the black king's diagonal (it is adjacent), and the queen attacks it.
    board = chess.Board(EDGE_CASES[1])
    planes = CheckPlanes()(th.as_tensor(observation(board))[None])[0]
    f7 = (chess.square_rank(chess.F7), chess.square_file(chess.F7))
    assert planes[4 + 1][f7] == 1 and planes[4 + 0][f7] == 0
    # Black to move sees the same board mirrored: its own king (plane 0-3) now, f7 is its rank-2 square.
    mirrored = CheckPlanes()(th.as_tensor(observation(chess.Board(EDGE_CASES[2])))[None])[0]
    assert mirrored[1][1, 5] == 1


@pytest.mark.parametrize("history", [0, 2])
def test_attack_planes_match_python_chess(history):
    boards = [chess.Board(fen) for fen in EDGE_CASES] + random_boards(60, seed=history, history=True)
    obs = th.as_tensor(np.stack([observation(board, history) for board in boards]))
    got = AttackPlanes()(obs).numpy()
    assert got.shape == (len(boards), N_ATTACK_PLANES, 8, 8)
    for board, planes in zip(boards, got):
        np.testing.assert_array_equal(planes, expected(board), err_msg=board.fen())


def test_attack_planes_see_the_mate():
    # Qxf7#: the queen attacks f7 and the bishop defends it; the king's escape squares are covered.
    board = chess.Board(EDGE_CASES[1])
    planes = AttackPlanes()(th.as_tensor(observation(board))[None])[0]
    f7 = (chess.square_rank(chess.F7), chess.square_file(chess.F7))
    assert planes[4][f7] == 1 and planes[2][f7] == 1  # the mover's queen and bishop
    assert planes[6 + 5][f7] == 1  # the opponent's king guards it


def test_resnet_with_attack_planes():
    space = spaces.Box(0.0, 1.0, (21, 8, 8), np.float32)
    plain, attacked = ChessResNet(space, 1, 8), ChessResNet(space, 1, 8, attack_planes=True)
    assert plain.stem[0].in_channels == 21 and attacked.stem[0].in_channels == 21 + N_ATTACK_PLANES
    # The kernels are fixed: no parameter beyond the wider stem, none saved in the state dict.
    assert sum(p.numel() for p in attacked.parameters()) - sum(p.numel() for p in plain.parameters()) == 12 * 8 * 9
    assert not any("attacks" in key for key in attacked.state_dict())
    obs = th.as_tensor(np.stack([observation(board) for board in random_boards(4, seed=5)]))
    assert attacked(obs).shape == (4, 8 * 64)
    with pytest.raises(ValueError, match="attack_planes needs the 12 piece planes"):
        ChessResNet(spaces.Box(0.0, 1.0, (6, 8, 8), np.float32), attack_planes=True)


def test_resnet_with_check_planes():
    space = spaces.Box(0.0, 1.0, (21, 8, 8), np.float32)
    both = ChessResNet(space, 1, 8, attack_planes=True, check_planes=True)
    assert both.stem[0].in_channels == 21 + N_ATTACK_PLANES + N_CHECK_PLANES
    assert not any("checks" in key for key in both.state_dict())
    obs = th.as_tensor(np.stack([observation(board) for board in random_boards(4, seed=6)]))
    stem_input = th.cat([obs, AttackPlanes()(obs), CheckPlanes()(obs)], dim=1)
    np.testing.assert_allclose(both(obs).detach(), both.blocks(both.stem(stem_input)).flatten(1).detach())
    with pytest.raises(ValueError, match="check_planes needs the 12 piece planes"):
        ChessResNet(spaces.Box(0.0, 1.0, (6, 8, 8), np.float32), check_planes=True)


def test_a_model_with_both_planes_saves_and_loads(tmp_path):
    from chess_env.vector import ChessVectorEnv
    from grpo_agent import GRPO

    kwargs = dict(features_extractor_kwargs=dict(n_blocks=1, channels=8, attack_planes=True, check_planes=True))
    model = GRPO("ChessResNetPolicy", ChessVectorEnv(2, shaping=False), group_size=2, seed=0, policy_kwargs=kwargs)
    model.save(tmp_path / "m.zip")
    loaded = GRPO.load(tmp_path / "m.zip", device="cpu")
    assert loaded.policy.features_extractor.checks is not None and loaded.policy.features_extractor.attacks is not None
    obs = th.as_tensor(np.stack([observation(board) for board in random_boards(3, seed=7)]))
    with th.no_grad():
        np.testing.assert_array_equal(loaded.policy.logits(obs).numpy(), model.policy.logits(obs).numpy())
