"""ChessVectorEnv: equals N single ChessEnvs, one batched engine call per step, group resets, autoreset modes."""

import chess
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode

import chess_env
from chess_env import ChessEnv, ChessVectorEnv, encode_move
from chess_env import vector as vector_module
from chess_env.engine import StockfishPool
from chess_env.positions import load_positions

MATE_IN_ONE = "6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1"  # Ra8#
QUIET = "4k3/8/8/8/8/8/4P3/4K3 w - - 0 1"
REPLY_ENDS_IT = "7k/8/8/8/8/8/1q6/K7 w - - 0 1"  # White's only move Kxb2 leaves two bare kings


@pytest.fixture(scope="module")
def pool():
    with StockfishPool(processes=2) as pool:
        yield pool


class CountingPool:
    """A pool proxy that counts the batches submitted and the boards sent."""

    def __init__(self, pool: StockfishPool) -> None:
        self.pool, self.calls, self.batch_sizes = pool, 0, []

    def submit(self, boards, limit):
        self.calls += 1
        self.batch_sizes.append(len(boards))
        return self.pool.submit(boards, limit)

    def __getattr__(self, name):
        return getattr(self.pool, name)


def random_actions(rng: np.random.Generator, masks: np.ndarray) -> np.ndarray:
    return np.array([rng.choice(np.flatnonzero(row)) if row.any() else 0 for row in masks], dtype=np.int64)


@pytest.mark.parametrize(
    "mode, opponent", [(AutoresetMode.NEXT_STEP, "self"), (AutoresetMode.SAME_STEP, "random"), (AutoresetMode.DISABLED, "self")]
)
def test_matches_single_envs_stepped_with_the_same_actions(pool, mode, opponent):
    n, kwargs = 3, dict(reward_depth=1, max_plies=10, start_positions="builtin", opponent=opponent)
    venv = ChessVectorEnv(n, autoreset_mode=mode, engine=pool, **kwargs)
    singles = [ChessEnv(engine=pool, **kwargs) for _ in range(n)]
    obs, infos = venv.reset(seed=7)
    single = [env.reset(seed=7 + i) for i, env in enumerate(singles)]
    assert np.array_equal(obs, np.stack([o for o, _ in single]))
    assert np.array_equal(infos["action_mask"], np.stack([i["action_mask"] for _, i in single]))
    rng = np.random.default_rng(0)
    done = np.zeros(n, dtype=bool)
    for t in range(24):
        actions = random_actions(rng, venv.action_masks())
        if t == 3:
            actions[1] = 4671  # an underpromotion from the last rank: never legal, the game is lost
        obs, rewards, terminated, truncated, infos = venv.step(actions)
        for i, env in enumerate(singles):
            if done[i] and mode == AutoresetMode.DISABLED:
                assert rewards[i] == 0.0 and (terminated[i] or truncated[i]) and not infos["action_mask"][i].any()
                continue
            if done[i] and mode == AutoresetMode.NEXT_STEP:
                o, info = env.reset()
                r, te, tr = 0.0, False, False
            else:
                o, r, te, tr, info = env.step(int(actions[i]))
                if t == 3 and i == 1:
                    vector_info = infos["final_info"] if mode == AutoresetMode.SAME_STEP else infos
                    assert te and info["illegal_action"] and vector_info["illegal_action"][1]
                if (te or tr) and mode == AutoresetMode.SAME_STEP:
                    assert np.array_equal(infos["final_obs"][i], o)
                    assert infos["final_info"]["ply"][i] == info["ply"]
                    o, info = env.reset()
            assert np.array_equal(obs[i], o), (t, i)
            assert rewards[i] == pytest.approx(r, abs=1e-12), (t, i)
            assert (terminated[i], truncated[i]) == (te, tr), (t, i)
            assert np.array_equal(infos["action_mask"][i], info["action_mask"])
            assert infos["ply"][i] == info["ply"] and infos["fen"][i] == info["fen"]
            if "value_after" in info and not ((te or tr) and mode == AutoresetMode.SAME_STEP):
                assert infos["_value_after"][i] and infos["value_after"][i] == pytest.approx(info["value_after"])
            done[i] = (te or tr) and mode != AutoresetMode.SAME_STEP
    assert np.array_equal(venv.action_masks(), infos["action_mask"])
    venv.close()
    assert pool.evaluate([chess.Board()], chess.engine.Limit(depth=1))  # a shared pool outlives the vector env


def test_one_pool_call_per_step_and_engine_calls_per_ply(pool):
    counting = CountingPool(pool)
    venv = ChessVectorEnv(8, engine=counting, reward_depth=1, max_plies=30)
    venv.reset(seed=0)
    assert counting.calls == 1 and counting.batch_sizes == [8]
    rng = np.random.default_rng(1)
    moved, finished = 0, np.zeros(8, dtype=bool)
    for _ in range(40):  # crosses autoresets (NEXT_STEP) at max_plies
        before = counting.calls
        _, _, terminated, truncated, _ = venv.step(random_actions(rng, venv.action_masks()))
        assert counting.calls - before == 1
        moved += int((~finished).sum())  # a finished game's step is its reset, not a ply
        finished = terminated | truncated
    assert finished.sum() < 8
    stats = venv.engine_stats()
    assert set(stats) >= {"cache_hits", "cache_misses", "engine_calls", "engine_calls_per_ply"}
    assert stats["pool_calls"] == 1 + 40 and stats["plies"] == moved
    assert 0 < stats["engine_calls"] <= stats["plies"]
    assert stats["engine_calls"] == stats["cache_misses"]
    venv.close()


def test_group_reset_gives_each_group_one_start_and_one_colour(pool):
    selfplay = ChessVectorEnv(6, engine=pool, reward_depth=1, start_positions="builtin")
    hits, misses = pool.cache_hits, pool.cache_misses
    selfplay.reset(seed=3, options={"groups": 2, "group_size": 3})
    fens = [board.fen() for board in selfplay.boards]
    assert fens[:3] == [fens[0]] * 3 and fens[3:] == [fens[3]] * 3 and fens[0] != fens[3]
    # One lookup per game, at most one search per group.
    assert pool.cache_misses - misses <= 2 and pool.cache_hits + pool.cache_misses - hits - misses == 6
    selfplay.close()

    venv = ChessVectorEnv(
        6, engine=pool, reward_depth=1, start_positions="builtin", opponent="random", agent_color="alternate"
    )
    venv.reset(seed=3, options={"groups": 3, "group_size": 2})
    colours = [env.agent for env in venv.envs]
    assert colours == [chess.WHITE, chess.WHITE, chess.BLACK, chess.BLACK, chess.WHITE, chess.WHITE]
    starts = [env.board.root().fen() for env in venv.envs]
    assert starts[0] == starts[1] and starts[2] == starts[3] and starts[4] == starts[5]
    assert len(set(starts)) > 1
    venv.reset(seed=3, options={"groups": 3, "group_size": 2})
    assert [env.board.root().fen() for env in venv.envs] == starts  # the seed fixes the draws
    assert [env.agent for env in venv.envs] == [not c for c in colours]  # colours alternate per rollout
    venv.reset(options={"fens": [QUIET, MATE_IN_ONE] * 3})
    assert [env.board.root().fen() for env in venv.envs] == [QUIET, MATE_IN_ONE] * 3
    venv.close()


def assert_groups_start_alike(venv, obs, infos, groups, size):
    """Every game of a group shows its first game's position, history and mask; return the groups' FENs."""
    for b in range(groups):
        first = venv.envs[b * size]
        for i in range(b * size + 1, (b + 1) * size):
            where = (b, i)
            assert np.array_equal(obs[i], obs[b * size]), where
            assert np.array_equal(infos["action_mask"][i], infos["action_mask"][b * size]), where
            assert infos["fen"][i] == infos["fen"][b * size] and infos["ply"][i] == infos["ply"][b * size], where
            assert venv.envs[i].board.move_stack == first.board.move_stack, where
            assert venv.envs[i].board.root() == first.board.root() and venv.envs[i].agent == first.agent, where
    return [infos["fen"][b * size] for b in range(groups)]


@pytest.mark.parametrize("agent_color", ["black", "alternate"])
@pytest.mark.parametrize("opponent, strength", [("random", {}), ("stockfish", {"opponent_skill": 0})])
def test_group_reset_plays_the_opening_reply_once_per_group(opponent, strength, agent_color):
    groups, size = 4, 3
    venv = ChessVectorEnv(
        groups * size, shaping=False, opponent=opponent, agent_color=agent_color, start_positions="builtin", **strength
    )
    replied = 0
    for seed in (0, 1, 2, None, None):
        obs, infos = venv.reset(seed=seed, options={"groups": groups, "group_size": size})
        fens = assert_groups_start_alike(venv, obs, infos, groups, size)
        assert len(set(fens)) > 1  # one reply per group, not one for the whole rollout
        replied += sum(infos["ply"][b * size] == 1 for b in range(groups))
        for env in venv.envs:
            # The opponent opened exactly when it had the move, and the reply counts as the game's ply.
            opened = env.board.root().turn != env.agent
            assert env.ply == len(env.board.move_stack) == int(opened) and env.board.turn == env.agent
    assert replied > 0  # the opponent did open somewhere, so the test compared replies
    venv.close()


def test_group_reset_shares_the_shaping_start_value(pool):
    venv = ChessVectorEnv(6, engine=pool, reward_depth=1, opponent="random", agent_color="black")
    obs, infos = venv.reset(seed=0, options={"groups": 2, "group_size": 3})
    assert_groups_start_alike(venv, obs, infos, 2, 3)
    values = [env._value_white for env in venv.envs]
    assert values[:3] == [values[0]] * 3 and values[3:] == [values[3]] * 3
    venv.close()


def test_group_reset_in_self_play_starts_from_the_drawn_positions():
    venv = ChessVectorEnv(6, shaping=False, start_positions="builtin", agent_color="black")
    obs, infos = venv.reset(seed=5, options={"groups": 3, "group_size": 2})
    drawn = venv.start_positions.sample(seeding.np_random(5)[0], 3)
    assert [env.board.fen() for env in venv.envs] == [fen for fen in drawn for _ in range(2)]
    assert all(env.ply == 0 and not env.board.move_stack for env in venv.envs)
    assert infos["ply"].tolist() == [0] * 6 and infos["resampled_starts"].tolist() == [0] * 6
    venv.close()


def test_group_reset_resamples_a_start_the_opening_reply_ends():
    positions = [REPLY_ENDS_IT, chess.STARTING_FEN, "4k3/8/8/8/8/8/4P3/4K3 w - - 0 1"]
    venv = ChessVectorEnv(8, shaping=False, opponent="random", agent_color="black", start_positions=positions)
    reported = 0
    for seed in range(6):
        obs, infos = venv.reset(seed=seed, options={"groups": 4, "group_size": 2})
        assert_groups_start_alike(venv, obs, infos, 4, 2)
        assert REPLY_ENDS_IT not in [env.board.root().fen() for env in venv.envs]
        counts = infos["resampled_starts"]
        assert (counts[::2] == counts[1::2]).all()  # a group reports its start's discards on every game
        reported += int(counts[::2].sum())
    # Each group's first game drew the replacements: the vector count holds each discard once.
    assert reported > 0 and venv.resampled_starts == reported
    assert sum(env.resampled_starts for env in venv.envs[1::2]) == 0
    with pytest.raises(ValueError, match=r"Kxb2 \(a1b2\).*7k/8/8/8/8/8/1q6/K7 w - - 0 1"):
        venv.reset(options={"fen": REPLY_ENDS_IT})
    only_bad = ChessVectorEnv(4, shaping=False, opponent="random", agent_color="black", start_positions=[REPLY_ENDS_IT])
    with pytest.raises(ValueError, match=r"every one of the \d+ start positions drawn.*Kxb2"):
        only_bad.reset(seed=0, options={"groups": 2, "group_size": 2})
    venv.close()
    only_bad.close()


def test_disabled_autoreset_pads_finished_games_until_reset(pool):
    venv = ChessVectorEnv(3, autoreset_mode="disabled", engine=pool, reward_depth=1, max_plies=3)
    obs, _ = venv.reset(options={"fens": [MATE_IN_ONE, QUIET, QUIET]})
    board = chess.Board(MATE_IN_ONE)
    mate = encode_move(board, chess.Move.from_uci("a1a8"))
    king = encode_move(chess.Board(QUIET), chess.Move.from_uci("e1d1"))
    obs, rewards, terminated, truncated, infos = venv.step(np.array([mate, king, 4671]))
    assert terminated.tolist() == [True, False, True] and rewards[0] > 0.9 and rewards[2] == -1.0
    assert infos["termination"][0] == "checkmate" and infos["illegal_action"][2]
    final_obs = obs.copy()
    masks = venv.action_masks()
    assert not masks[0].any() and not masks[2].any() and masks[1].any()
    for t in range(3):
        obs, rewards, terminated, truncated, infos = venv.step(random_actions(np.random.default_rng(t), venv.action_masks()))
        assert rewards[0] == rewards[2] == 0.0 and terminated[0] and terminated[2]
        assert np.array_equal(obs[0], final_obs[0]) and infos["ply"][0] == 1
        assert not venv.action_masks()[0].any()
    assert truncated[1] and venv.boards[1].ply() == 3  # game 1 was truncated at max_plies, then padded too
    assert not venv.action_masks().any()
    venv.reset()
    assert venv.action_masks().any(axis=1).all()
    venv.close()


def test_same_step_autoreset_returns_the_new_game_and_the_final_one(pool):
    venv = ChessVectorEnv(2, autoreset_mode=AutoresetMode.SAME_STEP, engine=pool, reward_depth=1)
    venv.reset(options={"fens": [MATE_IN_ONE, QUIET]})
    mate = encode_move(chess.Board(MATE_IN_ONE), chess.Move.from_uci("a1a8"))
    king = encode_move(chess.Board(QUIET), chess.Move.from_uci("e1d1"))
    obs, rewards, terminated, truncated, infos = venv.step(np.array([mate, king]))
    assert terminated.tolist() == [True, False]
    assert infos["_final_obs"].tolist() == [True, False] and infos["final_info"]["termination"][0] == "checkmate"
    assert venv.boards[0].fen() == chess.STARTING_FEN and infos["ply"][0] == 0
    assert np.array_equal(obs[0], chess_env.observation(chess.Board()))
    assert not np.array_equal(infos["final_obs"][0], obs[0])
    venv.close()


def test_autoreset_mode_is_settable_and_in_metadata():
    venv = ChessVectorEnv(2, shaping=False)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    venv.autoreset_mode = AutoresetMode.DISABLED
    assert venv.metadata["autoreset_mode"] == AutoresetMode.DISABLED
    with pytest.raises(ValueError, match="bogus"):
        venv.autoreset_mode = "bogus"
    venv.close()


def test_spaces_reset_determinism_and_fresh_arrays():
    venv = ChessVectorEnv(4, shaping=False, start_positions="builtin", history=1)
    assert venv.single_observation_space.shape == (33, 8, 8)
    assert venv.observation_space.shape == (4, 33, 8, 8) and venv.action_space.shape == (4,)
    obs1, info1 = venv.reset(seed=11)
    obs2, info2 = venv.reset(seed=11)
    assert venv.observation_space.contains(obs1) and np.array_equal(obs1, obs2)
    assert np.array_equal(info1["action_mask"], info2["action_mask"]) and info1["action_mask"].dtype == bool
    actions = random_actions(np.random.default_rng(0), info2["action_mask"])
    obs3, rewards, terminated, truncated, _ = venv.step(actions)
    assert not np.shares_memory(obs2, obs3) and np.array_equal(obs1, obs2)  # returned data is not reused
    assert rewards.dtype == np.float64 and terminated.dtype == truncated.dtype == bool
    assert venv.observation_space.contains(obs3) and venv.action_space.contains(actions)
    venv.close()


def test_bad_options_and_actions_are_named():
    venv = ChessVectorEnv(4, shaping=False)
    for options, message in (
        ({"groups": 3, "group_size": 2}, "groups=3 x group_size=2 = 6 does not match num_envs=4"),
        ({"groups": 2}, "group_size=None"),
        ({"group_size": 2}, "group_size=2 needs 'groups'"),
        ({"fens": [chess.STARTING_FEN] * 3}, "one FEN per game"),
        ({"fen": "not a fen"}, "not a fen"),
        ({"fen": chess.STARTING_FEN, "groups": 2, "group_size": 2}, "conflict"),
        ({"colour": "white"}, "colour"),
    ):
        with pytest.raises(ValueError, match=message):
            venv.reset(options=options)
    with pytest.raises(RuntimeError, match="before reset"):
        ChessVectorEnv(1, shaping=False).step(np.array([0]))
    venv.reset()
    with pytest.raises(ValueError, match="4 integers"):
        venv.step(np.array([0, 1]))
    with pytest.raises(ValueError, match="num_envs"):
        ChessVectorEnv(0, shaping=False)
    with pytest.raises(ValueError, match="draw_rule"):
        ChessVectorEnv(2, draw_rule="never")
    venv.close()


def test_partial_reset_with_reset_mask():
    venv = ChessVectorEnv(3, shaping=False)
    venv.reset()
    venv.step(np.array([encode_move(chess.Board(), chess.Move.from_uci("e2e4"))] * 3))
    venv.reset(options={"reset_mask": np.array([False, True, False]), "fen": QUIET})
    assert [b.fen() for b in venv.boards][1] == QUIET and venv.boards[0].ply() == 1 and venv.boards[2].ply() == 1
    venv.close()


@pytest.mark.parametrize("mode", ["vector_entry_point", "sync", "async"])
def test_make_vec_in_every_mode(mode):
    kwargs = dict(reward_depth=1) if mode == "vector_entry_point" else dict(shaping=False)
    envs = gym.make_vec("GRPOChess-v0", num_envs=2, vectorization_mode=mode, **kwargs)
    if mode == "vector_entry_point":
        assert isinstance(envs, ChessVectorEnv) and envs.engine is not None
    obs, infos = envs.reset(seed=0)
    assert obs.shape == (2, 21, 8, 8) and infos["action_mask"].shape == (2, 4672)
    actions = random_actions(np.random.default_rng(0), infos["action_mask"])
    obs, rewards, terminated, truncated, infos = envs.step(actions)
    assert obs.shape == (2, 21, 8, 8) and rewards.shape == (2,) and infos["ply"].tolist() == [1, 1]
    envs.close()


def test_closing_stops_the_pool_it_started():
    venv = ChessVectorEnv(2, reward_depth=1, engine_processes=1)
    pool = venv.engine
    venv.reset(seed=0)
    venv.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.evaluate([chess.Board()], chess.engine.Limit(depth=1))


def test_stacked_infos_are_what_gymnasium_builds_game_by_game():
    """The infos stacked a key at a time equal VectorEnv._add_info's, one game and key at a time:
    the same keys in the same order, dtypes, values and ``_key`` masks."""
    venv = ChessVectorEnv(5, shaping=False)
    mate = chess.Outcome(chess.Termination.CHECKMATE, chess.WHITE)
    base = dict(outcome=None, termination=None, illegal_action=False, fen=chess.STARTING_FEN, ply=3)
    entries = [
        (4, {**base, "action_mask": np.ones(4, dtype=bool)}),  # games in any order; the mask is left out
        (0, {**base, "outcome": mate, "termination": "checkmate", "ply": 7, "value_before": 0.25, "value_after": 1.0}),
        (2, {**base, "illegal_action": True, "resampled_starts": 2}),
        (1, {**base, "value_before": -0.5, "value_after": -0.75, "ply": np.int64(9)}),
    ]
    expected: dict = {}
    for i, info in entries:
        expected = gym.vector.VectorEnv._add_info(venv, expected, {k: v for k, v in info.items() if k != "action_mask"}, i)
    stacked = venv._stack_infos(entries)
    assert list(stacked) == list(expected)
    for key, array in expected.items():
        assert stacked[key].dtype == array.dtype and stacked[key].tolist() == array.tolist(), key
    venv.close()


def test_games_share_one_set_of_start_positions_read_once(tmp_path, monkeypatch):
    path = tmp_path / "starts.epd"
    path.write_text("\n".join(list(load_positions("builtin"))[:20]) + "\n")
    reads = []
    monkeypatch.setattr(vector_module, "load_positions", lambda spec: reads.append(spec) or load_positions(spec))
    venv = ChessVectorEnv(4, shaping=False, start_positions=str(path))
    assert reads == [str(path)] and all(env.start_positions is venv.start_positions for env in venv.envs)
    assert len(venv.start_positions) == 20 and venv.game_kwargs["start_positions"] == str(path)  # the spec, for copies
    venv.close()
