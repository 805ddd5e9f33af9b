"""ChessEnv: the Gymnasium contract, rewards from the mover's point of view, opponents and rules."""

import io
import pickle
import subprocess
import sys

import chess
import chess.pgn
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from chess_env import ChessEnv, encode_move, legal_action_mask

KIWIPETE = "r3k2r/p1ppqpb1/bn2pnp1/3PN3/1p2P3/2N2Q1p/PPPBBPPP/R3K2R w KQkq - 0 1"
REPLY_ENDS_IT = "7k/8/8/8/8/8/1q6/K7 w - - 0 1"  # White's only move Kxb2 leaves two bare kings
WHITE_MATES = "6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1"  # Ra8#


def action(env: ChessEnv, uci: str) -> int:
    return encode_move(env.board, chess.Move.from_uci(uci))


@pytest.fixture
def env():
    env = ChessEnv(reward_depth=6)
    yield env
    env.close()


def test_issue_example_through_gym_make():
    env = gym.make("GRPOChess-v0", opponent="random", shaping=False)
    obs, info = env.reset(seed=0, options={"fen": KIWIPETE})
    mask = env.unwrapped.action_masks()
    assert mask.dtype == bool and mask.shape == (4672,)
    assert np.array_equal(mask, info["action_mask"])
    assert mask.sum() == 48
    obs, reward, terminated, truncated, info = env.step(int(np.flatnonzero(mask)[0]))
    assert env.observation_space.contains(obs)
    assert isinstance(env.unwrapped.board, chess.Board)
    assert env.unwrapped.board.turn == chess.WHITE  # the random opponent replied
    assert info["ply"] == 2 and info["fen"] == env.unwrapped.board.fen()
    env.close()


def test_registered_without_import():
    code = "import gymnasium as gym; e = gym.make('chess_env:GRPOChess-v0', shaping=False); print(e.reset(seed=1)[0].shape)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "(21, 8, 8)" in out


@pytest.mark.parametrize("shaping", [False, True])
def test_check_env(shaping):
    # Made through the registry so that the checker also renders every render mode from the spec.
    env = gym.make("GRPOChess-v0", shaping=shaping, reward_depth=1, render_mode="ansi").unwrapped
    check_env(env)
    env.close()


def test_pickles_and_runs_in_a_subprocess_vec_env():
    env = ChessEnv(reward_depth=1)
    env.reset(seed=0)
    clone = pickle.loads(pickle.dumps(env))
    obs, _ = clone.reset(seed=0)
    assert np.array_equal(obs, env.reset(seed=0)[0])
    clone.close()
    env.close()


def test_capturing_a_hanging_queen_beats_a_quiet_move_for_both_colours(env):
    for fen, capture, quiet in (
        ("4k3/8/8/3q4/8/8/3R4/4K3 w - - 0 1", "d2d5", "e1f1"),
        ("4k3/3r4/8/8/3Q4/8/8/4K3 b - - 0 1", "d7d4", "e8f8"),
    ):
        env.reset(options={"fen": fen})
        _, capture_reward, *_ = env.step(action(env, capture))
        env.reset(options={"fen": fen})
        _, quiet_reward, *_ = env.step(action(env, quiet))
        # The engine already counts the capture as available before it is played, so taking the
        # queen keeps the value (reward ~0) while the quiet move throws it away.
        assert capture_reward > quiet_reward + 0.3, fen
        assert abs(capture_reward) < 0.1 and quiet_reward < -0.3, fen


def test_a_mating_move_gets_the_win(env):
    for fen, mate in (
        ("6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1", "a1a8"),
        ("r5k1/5ppp/8/8/8/8/5PPP/6K1 b - - 0 1", "a8a1"),
    ):
        env.reset(options={"fen": fen})
        _, reward, terminated, truncated, info = env.step(action(env, mate))
        assert terminated and not truncated
        assert info["termination"] == "checkmate"
        assert reward >= 1.0  # the result, plus shaping from an already winning position up to the bound
        assert info["value_after"] == 1.0


def test_mate_scores_rank_by_length_above_every_centipawn_score():
    from chess_env.rewards import score_value

    Mate, Cp = chess.engine.Mate, chess.engine.Cp
    ladder = [chess.engine.MateGiven, Mate(1), Mate(4), Cp(5000), Cp(50), Cp(0), Cp(-50), Cp(-5000),
              Mate(-4), Mate(-1), Mate(-0)]
    for transform in ("winprob", "cp", "wdl"):
        values = [score_value(s, transform, mate_band=0.05) for s in ladder]
        assert values == sorted(values, reverse=True) and len(set(values)) == len(values), transform
        assert values[0] == 1.0 and values[-1] == -1.0 and values[1] == pytest.approx(0.975)
        assert all(abs(v) <= 0.95 for v, s in zip(values, ladder) if not s.is_mate())
        assert [score_value(s, transform) for s in (Mate(1), Mate(5), Mate(-5))] == [1.0, 1.0, -1.0]  # no band
    assert score_value(Mate(-0), mate_band=0.05) == -1.0  # the side to move is mated
    with pytest.raises(ValueError, match="mate_band.*1.5"):
        score_value(Cp(0), mate_band=1.5)


def test_shaping_rewards_a_shorter_mate(env):
    # Qa8 mates at once; Qh7+ (Kf8 Ra8#) mates in two: both win, the shorter one is worth more
    fen = "6k1/8/6K1/8/8/8/8/R6Q w - - 0 1"
    env.reset(options={"fen": fen})
    _, mate_now, *_ = env.step(action(env, "h1a8"))
    env.reset(options={"fen": fen})
    _, reward, terminated, _, info = env.step(action(env, "h1h7"))
    assert not terminated and info["value_after"] == pytest.approx(0.975)
    assert mate_now > reward


def test_blundering_the_queen_is_negative_for_black(env):
    env.reset(options={"fen": "4k3/8/8/3q4/8/8/3R4/4K3 b - - 0 1"})
    _, reward, *_ = env.step(action(env, "d5d4"))  # still attacked by the rook, unprotected
    assert reward < -0.3


def test_shaping_reuses_the_previous_evaluation(env):
    env.reset(seed=0)
    calls = env.engine.engine_calls + env.engine.cache_hits
    for uci in ("e2e4", "e7e5", "g1f3"):
        _, _, _, _, info = env.step(action(env, uci))
    assert env.engine.engine_calls + env.engine.cache_hits - calls == 3  # one evaluation per ply


def test_rewards_telescope_in_self_play(env):
    """Shaping rewards from alternating points of view sum to V(end) - V(start) for White."""
    env.reset(options={"fen": KIWIPETE})
    white_total = 0.0
    for ply, uci in enumerate(("e2a6", "b4c3", "d2c3", "e7c5")):
        _, reward, _, _, info = env.step(action(env, uci))
        if ply == 0:
            white_start = info["value_before"]  # White moved first: its view is White's
        white_total += reward if ply % 2 == 0 else -reward
        white_end = info["value_after"] if ply % 2 == 0 else -info["value_after"]
    assert white_total == pytest.approx(white_end - white_start, abs=1e-9)
    assert white_total != 0.0


def test_action_masks_follow_the_board_and_are_copies():
    env = ChessEnv(shaping=False)
    _, info = env.reset(seed=0)
    mask = env.action_masks()
    assert np.array_equal(mask, info["action_mask"]) and np.array_equal(mask, legal_action_mask(env.board))
    mask[:] = False  # the caller's copy: the env's stays right
    assert np.array_equal(env.action_masks(), info["action_mask"])
    env.board.push_uci("e2e4")  # a board changed behind the env's back is not answered from the last mask
    assert np.array_equal(env.action_masks(), legal_action_mask(env.board))
    env.board.pop()
    _, _, _, _, info = env.step(action(env, "f2f3"))
    assert np.array_equal(info["action_mask"], legal_action_mask(env.board))
    assert np.array_equal(env.action_masks(), info["action_mask"])


def test_illegal_action_loses_or_raises():
    env = ChessEnv(shaping=False)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(0)  # a1 north: no piece can do that at the start
    assert reward == -1.0 and terminated and not truncated and info["illegal_action"]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    strict = ChessEnv(shaping=False, illegal_action="raise")
    strict.reset(seed=0)
    with pytest.raises(ValueError, match=r"action 0 .*rnbqkbnr/pppppppp"):
        strict.step(0)


def test_truncation_at_max_plies():
    env = ChessEnv(shaping=False, max_plies=3)
    env.reset(seed=0)
    results = [env.step(action(env, uci))[2:4] for uci in ("e2e4", "e7e5", "g1f3")]
    assert results == [(False, False), (False, False), (False, True)]


def test_threefold_repetition_ends_the_episode_only_under_claim():
    for draw_rule, ends in (("claim", True), ("automatic", False)):
        env = ChessEnv(shaping=False, draw_rule=draw_rule)
        env.reset(seed=0)
        moves = ("g1f3", "g8f6", "f3g1", "f6g8") * 2
        for uci in moves:
            _, reward, terminated, _, info = env.step(action(env, uci))
        assert terminated == ends
        if ends:
            assert info["termination"] == "threefold_repetition" and reward == 0.0


def test_opponents_reply_inside_the_step():
    def always_first(board):
        return next(iter(board.legal_moves))

    env = ChessEnv(opponent=always_first, shaping=False)
    env.reset(seed=0)
    env.step(action(env, "e2e4"))
    assert len(env.board.move_stack) == 2 and env.board.move_stack[1] == always_first(chess.Board("rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1"))

    black = ChessEnv(opponent="random", agent_color="black", shaping=False)
    obs, info = black.reset(seed=3)
    assert black.board.turn == chess.BLACK and len(black.board.move_stack) == 1  # White opened
    alternating = ChessEnv(opponent="random", agent_color="alternate", shaping=False)
    turns = [alternating.reset(seed=i) and alternating.board.turn for i in range(4)]
    assert turns == [chess.WHITE, chess.BLACK, chess.WHITE, chess.BLACK]


def test_a_drawn_start_that_the_opening_reply_ends_is_resampled_and_counted():
    black_to_move = "4k3/4p3/8/8/8/8/8/4K3 b - - 0 1"  # the agent opens: no reply to check
    positions = [REPLY_ENDS_IT, chess.STARTING_FEN, black_to_move]
    env = ChessEnv(opponent="random", agent_color="black", shaping=False, start_positions=positions)
    reported, starts = 0, set()
    for seed in range(12):
        _, info = env.reset(seed=seed)
        starts.add(env.board.root().fen())
        assert env.ply == len(env.board.move_stack) == int(env.board.root().turn == chess.WHITE)
        assert env.board.turn == chess.BLACK
        reported += info["resampled_starts"]
    assert starts == {chess.STARTING_FEN, black_to_move}
    assert reported > 0 and env.resampled_starts == reported
    _, info = env.reset(seed=0, options={"fen": chess.STARTING_FEN})
    assert info["resampled_starts"] == 0 and env.resampled_starts == reported
    env.close()


def test_a_start_the_opening_reply_ends_is_refused_naming_the_start_and_the_reply():
    mating = ChessEnv(opponent="stockfish", agent_color="black", shaping=False)
    for options in ({"fen": WHITE_MATES}, {"board": chess.Board(WHITE_MATES)}):
        with pytest.raises(ValueError, match=r"reply Ra8# \(a1a8\) to the start position '6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1' ends the game \(checkmate\)"):
            mating.reset(options=options)
    assert mating.resampled_starts == 0
    mating.close()
    hopeless = ChessEnv(opponent="random", agent_color="black", shaping=False, start_positions=[REPLY_ENDS_IT])
    with pytest.raises(ValueError, match=r"every one of the 100 start positions drawn .* last: '7k/8/8/8/8/8/1q6/K7 w - - 0 1', reply Kxb2 \(a1b2\)"):
        hopeless.reset(seed=0)


def test_a_start_that_is_already_over_is_refused_naming_it():
    stalemate = "7k/5Q2/6K1/8/8/8/8/8 b - - 0 1"
    for env, options in (
        (ChessEnv(shaping=False), {"fen": stalemate}),
        (ChessEnv(opponent="random", agent_color="white", shaping=False), {"fen": stalemate}),
        # The shipped validation lets a cleared 50-move clock through; the claim rule ends such a game.
        (ChessEnv(shaping=False, start_positions=["4k3/8/8/8/8/8/4P3/4K3 w - - 100 80"]), None),
    ):
        fen = options["fen"] if options else "4k3/8/8/8/8/8/4P3/4K3 w - - 100 80"
        with pytest.raises(ValueError, match=rf"the start position '{fen}' is already over \((stalemate|fifty_moves)\)"):
            env.reset(seed=0, options=options)


def test_stockfish_opponent_punishes_a_hung_rook_within_the_step():
    env = ChessEnv(opponent="stockfish", opponent_depth=4, reward_depth=4)
    env.reset(options={"fen": "3q3k/8/8/8/R7/8/8/6K1 w - - 0 1"})
    _, reward, terminated, _, info = env.step(action(env, "a4a5"))  # into the queen's diagonal
    assert env.board.move_stack[-1].uci() == "d8a5"  # the reply is part of the transition
    assert info["ply"] == 2 and not terminated
    assert reward < -0.3  # shaping spans the move pair, from the agent's point of view
    env.close()


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="'blitz'"):
        ChessEnv(draw_rule="blitz")
    with pytest.raises(ValueError, match="'tiger'"):
        ChessEnv(opponent="tiger")
    with pytest.raises(ValueError, match="'sigmoid'"):
        ChessEnv(reward_transform="sigmoid")
    with pytest.raises(ValueError, match="mate_band.*-0.1"):
        ChessEnv(mate_band=-0.1)
    env = ChessEnv(shaping=False)
    with pytest.raises(ValueError, match="not a fen"):
        env.reset(options={"fen": "not a fen"})
    with pytest.raises(ValueError, match="'fens'"):
        env.reset(options={"fens": []})
    with pytest.raises(ValueError, match="already over"):
        env.reset(options={"fen": "7k/5Q2/6K1/8/8/8/8/8 b - - 0 1"})


def test_engine_errors_name_the_path_and_the_fix(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="/nonexistent/stockfish"):
        ChessEnv(engine_path="/nonexistent/stockfish")
    monkeypatch.setenv("STOCKFISH_PATH", str(tmp_path / "sf"))
    with pytest.raises(FileNotFoundError, match="sf"):
        ChessEnv()
    monkeypatch.delenv("STOCKFISH_PATH")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("chess_env.engine.discovery.DEBIAN_STOCKFISH", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="apt-get install -y stockfish"):
        ChessEnv()
    ChessEnv(shaping=False)  # no engine needed, no error


def test_render_and_pgn():
    env = ChessEnv(shaping=False, render_mode="ansi", opponent="random")
    env.reset(seed=0, options={"fen": KIWIPETE})
    env.step(action(env, "e2a6"))
    text = env.render()
    assert "♔" in text and env.board.fen() in text
    game = chess.pgn.read_game(io.StringIO(env.pgn()))
    assert game.headers["FEN"] == KIWIPETE
    assert game.end().board() == env.board
    picture = ChessEnv(shaping=False, render_mode="rgb_array")
    picture.reset(seed=0)
    image = picture.render()
    assert image.shape == (400, 400, 3) and image.dtype == np.uint8 and image.std() > 10


@pytest.mark.slow
def test_maskable_ppo_learns_on_the_env():
    from sb3_contrib import MaskablePPO

    env = ChessEnv(opponent="random", reward_depth=1, max_plies=40)
    model = MaskablePPO("MlpPolicy", env, n_steps=256, batch_size=64, n_epochs=2, seed=0, verbose=0)
    model.learn(total_timesteps=2048)
    assert model.num_timesteps >= 2048
    obs, _ = env.reset(seed=5)
    action_, _ = model.predict(obs, action_masks=env.action_masks(), deterministic=True)
    assert env.action_masks()[int(action_)]
    env.close()
