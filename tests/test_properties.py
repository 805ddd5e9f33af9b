"""Property tests over random legal games, with python-chess as the oracle.

Hypothesis plays games of up to 60 plies from the standard start and from a few shipped and
hand-picked positions (castling, en passant, promotions, a mate in one, a pawn fortress whose
50-move clock is nearly spent). Half of the games mostly play the mover's last move backwards, so
that repetitions and their draws come up too.
"""

import chess
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from hypothesis import given, settings
from hypothesis import strategies as st

from chess_env import ChessEnv, ChessVectorEnv, decode_action, encode_move, load_positions
from chess_env.engine import StockfishPool

STARTS = [
    chess.STARTING_FEN,
    *(load_positions(f"builtin:{phase}")[0] for phase in ("opening", "middlegame", "endgame")),
    "r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1",  # both castlings for both sides
    "rnbqkbnr/ppp1p1pp/8/3pPp2/8/8/PPPP1PPP/RNBQKBNR w KQkq f6 0 3",  # exf6 en passant
    "n1n5/PPPk4/8/8/8/8/4Kppp/5N1N w - - 0 1",  # promotions and underpromotions for both sides
    "6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1",  # Ra8# among 15 moves
    # Kings locked out by the pawns: 10 plies to the 50-move claim, 60 to the 75-move rule.
    "4k3/8/8/p1p1p1p1/P1P1P1P1/8/8/4K3 w - - 90 150",
]
PIECES = (chess.PAWN, chess.KNIGHT, chess.BISHOP, chess.ROOK, chess.QUEEN, chess.KING)
NEVER_LEGAL = 4671  # an underpromotion from the mover's last rank onto the board's edge


@pytest.fixture(scope="module")
def pool():
    with StockfishPool(processes=1) as pool:
        yield pool


def is_special(board: chess.Board, move: chess.Move) -> bool:
    """Castling, en passant, a promotion or a mate: moves that uniform draws would seldom try."""
    if board.is_castling(move) or board.is_en_passant(move) or move.promotion:
        return True
    if not board.gives_check(move):
        return False
    board.push(move)
    mate = board.is_checkmate()
    board.pop()
    return mate


def pick_move(data: st.DataObject, board: chess.Board, shuffle: bool) -> chess.Move:
    """A legal move of ``board``: in a shuffling game often the mover's last move played backwards,
    otherwise often a special move (:func:`is_special`) when there is one."""
    moves = list(board.legal_moves)
    if shuffle and len(board.move_stack) >= 2 and data.draw(st.booleans(), label="undo"):
        last = board.move_stack[-2]
        back = chess.Move(last.to_square, last.from_square)
        if back in moves:
            return back
    elif not shuffle and data.draw(st.booleans(), label="special"):
        special = [move for move in moves if is_special(board, move)]
        if special:
            return special[data.draw(st.integers(0, len(special) - 1), label="special move")]
    return moves[data.draw(st.integers(0, len(moves) - 1), label="move")]


def expected_outcome(board: chess.Board, draw_rule: str) -> chess.Outcome | None:
    """The outcome under the env's documented rules, from python-chess's own predicates."""
    outcome = board.outcome(claim_draw=False)  # mate, stalemate, material, fivefold, 75 moves
    if outcome is None and draw_rule == "claim":
        # The draw is taken on the position on the board, not claimed ahead of a move.
        if board.is_fifty_moves():
            return chess.Outcome(chess.Termination.FIFTY_MOVES, None)
        if board.is_repetition(3):
            return chess.Outcome(chess.Termination.THREEFOLD_REPETITION, None)
    return outcome


def mover_square(square: int, mover: chess.Color) -> tuple[int, int]:
    """``(rank, file)`` of ``square`` in ``mover``'s frame (rank 0 is the mover's back rank)."""
    rank = chess.square_rank(square)
    return (rank if mover == chess.WHITE else 7 - rank), chess.square_file(square)


def piece_planes(board: chess.Board, mover: chess.Color) -> np.ndarray:
    """The 12 piece planes of ``board`` from ``mover``'s side, built square by square."""
    planes = np.zeros((12, 8, 8), dtype=np.float32)
    for square, piece in board.piece_map().items():
        plane = PIECES.index(piece.piece_type) + (0 if piece.color == mover else 6)
        planes[(plane, *mover_square(square, mover))] = 1.0
    return planes


def check_position(env: ChessEnv, board: chess.Board, obs: np.ndarray, info: dict) -> None:
    """The env's mask, encoding and observation of ``board`` (python-chess's) are what they must be."""
    legal = list(board.legal_moves)
    actions = [encode_move(board, move) for move in legal]
    assert len(set(actions)) == len(legal), "two legal moves share an action"
    for move, action in zip(legal, actions):
        assert decode_action(board, action) == move
    expected = np.zeros(env.action_space.n, dtype=bool)
    expected[actions] = True
    assert np.array_equal(env.action_masks(), expected) and np.array_equal(info["action_mask"], expected)
    assert info["fen"] == board.fen()

    assert obs.shape == env.observation_space.shape and obs.dtype == np.float32
    assert env.observation_space.contains(obs) and set(np.unique(obs[:20])) <= {0.0, 1.0}
    assert np.array_equal(obs[:12], piece_planes(board, board.turn))
    for plane, value in (
        (12, board.is_repetition(2)),
        (13, board.is_repetition(3)),
        (14, board.turn == chess.WHITE),
        (15, board.has_kingside_castling_rights(board.turn)),
        (16, board.has_queenside_castling_rights(board.turn)),
        (17, board.has_kingside_castling_rights(not board.turn)),
        (18, board.has_queenside_castling_rights(not board.turn)),
    ):
        assert (obs[plane] == float(value)).all(), plane
    en_passant = np.zeros((8, 8), dtype=np.float32)
    if any(board.is_en_passant(move) for move in legal):
        en_passant[mover_square(board.ep_square, board.turn)] = 1.0
    assert np.array_equal(obs[19], en_passant)
    assert (obs[20] == np.float32(min(board.halfmove_clock / 100, 1.0))).all()
    past = board.copy()
    for k in range(env.history):
        planes = obs[21 + 12 * k : 33 + 12 * k]
        if past.move_stack:
            past.pop()
            assert np.array_equal(planes, piece_planes(past, board.turn)), k + 1
        else:
            assert not planes.any(), k + 1


@given(data=st.data())
@settings(max_examples=80, deadline=None)
def test_self_play_games_agree_with_python_chess(data):
    start = data.draw(st.sampled_from(STARTS), label="start")
    draw_rule = data.draw(st.sampled_from(["claim", "automatic"]), label="draw_rule")
    max_plies = data.draw(st.one_of(st.integers(1, 60), st.just(200)), label="max_plies")
    history = data.draw(st.sampled_from([0, 2]), label="history")
    shuffle = data.draw(st.booleans(), label="shuffle")
    env = ChessEnv(shaping=False, draw_rule=draw_rule, max_plies=max_plies, history=history, illegal_action="raise")
    board = chess.Board(start)
    obs, info = env.reset(options={"fen": start})
    for ply in range(1, 61):
        check_position(env, board, obs, info)
        move = pick_move(data, board, shuffle)
        obs, reward, terminated, truncated, info = env.step(encode_move(board, move))  # legal: never raises
        board.push(move)
        outcome = expected_outcome(board, draw_rule)
        assert terminated == (outcome is not None) and info["ply"] == ply
        assert truncated == (outcome is None and ply >= max_plies)
        assert info["termination"] == (outcome.termination.name.lower() if outcome else None)
        mover = not board.turn
        assert reward == (0.0 if outcome is None or outcome.winner is None else 1.0 if outcome.winner == mover else -1.0)
        if terminated or truncated:
            assert not env.action_masks().any() and info["fen"] == board.fen()
            break


def step_in_lockstep(data: st.DataObject, venv: ChessVectorEnv, singles: list[ChessEnv], steps: int) -> None:
    """Play the same actions in ``venv`` (autoreset disabled) and in ``singles``; compare every result."""
    n = len(singles)
    done = np.zeros(n, dtype=bool)
    last_obs = [None] * n
    for _ in range(steps):
        padded_only = done.all()
        actions = np.zeros(n, dtype=np.int64)  # a finished game's action is ignored
        for i, env in enumerate(singles):
            if not done[i]:
                illegal = data.draw(st.integers(0, 19), label="illegal") == 0  # about one move in 20
                move = pick_move(data, env.board, shuffle=False)
                actions[i] = NEVER_LEGAL if illegal else encode_move(env.board, move)
        obs, rewards, terminated, truncated, infos = venv.step(actions)
        for i, env in enumerate(singles):
            if done[i]:
                assert rewards[i] == 0.0 and (terminated[i] or truncated[i]) and not infos["action_mask"][i].any()
                assert np.array_equal(obs[i], last_obs[i])
                continue
            o, r, te, tr, info = env.step(int(actions[i]))
            assert np.array_equal(obs[i], o) and rewards[i] == pytest.approx(r, abs=1e-12)
            assert (terminated[i], truncated[i]) == (te, tr)
            assert np.array_equal(infos["action_mask"][i], info["action_mask"])
            assert infos["ply"][i] == info["ply"] and infos["fen"][i] == info["fen"]
            assert infos["illegal_action"][i] == info["illegal_action"]
            done[i], last_obs[i] = te or tr, o
        if padded_only:  # one step with every game finished, to see them all stay padded
            break


def make_lockstep_pair(data: st.DataObject, n: int, kwargs: dict, engine=None):
    """A vector env of ``n`` games and ``n`` single envs, reset alike; checks the first observations."""
    seed = data.draw(st.integers(0, 2**16), label="seed")
    venv = ChessVectorEnv(n, autoreset_mode=AutoresetMode.DISABLED, engine=engine, **kwargs)
    singles = [ChessEnv(engine=engine, **kwargs) for _ in range(n)]
    obs, infos = venv.reset(seed=seed)
    for i, env in enumerate(singles):
        o, info = env.reset(seed=seed + i)
        assert np.array_equal(obs[i], o) and np.array_equal(infos["action_mask"][i], info["action_mask"])
        assert infos["fen"][i] == info["fen"] and infos["resampled_starts"][i] == info["resampled_starts"]
    return venv, singles


@given(data=st.data())
@settings(max_examples=30, deadline=None)
def test_vector_env_equals_single_envs(data):
    kwargs = dict(
        shaping=False,
        start_positions=STARTS,
        opponent=data.draw(st.sampled_from(["self", "random"]), label="opponent"),
        agent_color=data.draw(st.sampled_from(["white", "black", "alternate"]), label="agent_color"),
        max_plies=data.draw(st.integers(1, 40), label="max_plies"),
        history=data.draw(st.sampled_from([0, 1]), label="history"),
    )
    venv, singles = make_lockstep_pair(data, data.draw(st.integers(1, 4), label="num_envs"), kwargs)
    step_in_lockstep(data, venv, singles, steps=40)
    venv.close()


@given(data=st.data())
@settings(max_examples=4, deadline=None)
def test_vector_env_equals_single_envs_with_shaping(pool, data):
    kwargs = dict(reward_depth=1, start_positions=STARTS, max_plies=6)
    venv, singles = make_lockstep_pair(data, 2, kwargs, engine=pool)
    step_in_lockstep(data, venv, singles, steps=6)
    venv.close()


def play_alike(data: st.DataObject, venvs: list[ChessVectorEnv], steps: int) -> None:
    """Play the same legal moves in every vector env of ``venvs``; every result must agree."""
    first = venvs[0]
    for _ in range(steps):
        masks = first.action_masks()
        actions = np.array([encode_move(board, pick_move(data, board, shuffle=True)) if mask.any() else 0
                            for board, mask in zip(first.boards, masks)], dtype=np.int64)
        results = [venv.step(actions) for venv in venvs]
        for obs, rewards, terminated, truncated, infos in results[1:]:
            assert np.array_equal(obs, results[0][0]) and np.array_equal(rewards, results[0][1])
            assert np.array_equal(terminated, results[0][2]) and np.array_equal(truncated, results[0][3])
            for key in ("fen", "ply", "action_mask"):
                assert np.array_equal(infos[key], results[0][4][key]), key


@given(data=st.data())
@settings(max_examples=25, deadline=None)
def test_a_restored_vector_env_continues_like_the_original(data):
    """get_state() at any point of any games, set_state() into a fresh env: the two play on identically (random
    opponents and new starts drawn from the restored generators, repetitions seen through the move stacks)."""
    kwargs = dict(
        shaping=False,
        start_positions=STARTS,
        opponent=data.draw(st.sampled_from(["self", "random"]), label="opponent"),
        agent_color=data.draw(st.sampled_from(["white", "alternate"]), label="agent_color"),
        max_plies=data.draw(st.integers(1, 30), label="max_plies"),
        history=data.draw(st.sampled_from([0, 2]), label="history"),
    )
    n = data.draw(st.integers(1, 3), label="num_envs")
    mode = data.draw(st.sampled_from(["same_step", "next_step", "disabled"]), label="autoreset_mode")
    venv = ChessVectorEnv(n, autoreset_mode=mode, **kwargs)
    venv.reset(seed=data.draw(st.integers(0, 2**16), label="seed"))
    play_alike(data, [venv], data.draw(st.integers(0, 30), label="plies before"))
    restored = ChessVectorEnv(n, **kwargs)
    obs = restored.set_state(venv.get_state())
    assert np.array_equal(obs, venv._obs) and np.array_equal(restored.action_masks(), venv.action_masks())
    play_alike(data, [venv, restored], 30)
