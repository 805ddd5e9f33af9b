"""Move groups: every legal move valued for its mover, and GRPO's group_mode="moves" collector and update."""

import chess
import numpy as np
import pytest
import torch as th

from chess_env import ChessVectorEnv
from chess_env.encoding import decode_action, encode_move, legal_action_mask, observation
from chess_env.engine import StockfishPool
from chess_env.moves import move_values, rules_value
from grpo_agent import GRPO

TINY = dict(features_extractor_kwargs=dict(n_blocks=1, channels=16))
#: Black to move can take White's undefended queen on d4 with the knight
BLACK_TAKES_QUEEN = "4k3/pp6/4n3/8/3Q4/8/P7/4K3 b - - 0 1"
#: White mates in two with Qxf7+ (the queen defended by the knight on g5), Kh8 Qf8#
MATE_IN_TWO = "6k1/5ppp/8/6N1/8/8/5Q2/6K1 w - - 0 1"


@pytest.fixture(scope="module")
def pool():
    with StockfishPool(processes=1) as p:
        yield p


def values_of(pool, board, depth=4, **kwargs):
    scores = pool.evaluate_moves([board], chess.engine.Limit(depth=depth))
    return move_values([board], scores, **kwargs)[0]


@pytest.mark.parametrize("fen", [chess.STARTING_FEN, BLACK_TAKES_QUEEN, MATE_IN_TWO])
def test_every_legal_move_gets_a_bounded_value_and_nothing_else(pool, fen):
    board = chess.Board(fen)
    values = values_of(pool, board)
    legal = legal_action_mask(board)
    assert np.isfinite(values[legal]).all() and np.isnan(values[~legal]).all()
    assert (np.abs(values[legal]) <= 1.0).all()


def test_values_are_the_movers_view(pool):
    # Black's best move is the queen capture, by far; White's mate in two is the best move, one move from the bound
    board = chess.Board(BLACK_TAKES_QUEEN)
    values = values_of(pool, board)
    capture = encode_move(board, chess.Move.from_uci("e6d4"))
    assert values[capture] == np.nanmax(values) and values[capture] > 0.5
    board = chess.Board(MATE_IN_TWO)
    values = values_of(pool, board)
    mate = encode_move(board, chess.Move.from_uci("f2f7"))
    assert values[mate] == np.nanmax(values) == pytest.approx(0.975)


#: White mates with Ra8 or Qa8; most other moves mate in two
MATES_IN_ONE_AND_TWO = "6k1/8/6K1/8/8/8/8/R6Q w - - 0 1"


def test_a_shorter_mate_is_worth_more(pool):
    board = chess.Board(MATES_IN_ONE_AND_TWO)
    scores = pool.evaluate_moves([board], chess.engine.Limit(depth=6))
    values, flat = move_values([board], scores)[0], move_values([board], scores, mate_band=0.0)[0]
    by_mate = {n: [encode_move(board, m) for m, s in scores[0].items() if s.relative == chess.engine.Mate(n)]
               for n in (1, 2)}
    assert len(by_mate[1]) == 2 and len(by_mate[2]) >= 5
    assert (values[by_mate[1]] == 1.0).all() and np.allclose(values[by_mate[2]], 0.975)
    assert np.nanmax(np.delete(values, by_mate[1])) == pytest.approx(0.975)  # the band: nothing else reaches a mate
    # without the band every mate is worth the bound: the group of a won position has no spread among its mates
    assert (flat[by_mate[1] + by_mate[2]] == 1.0).all()


def test_a_repetition_the_engine_cannot_see_is_valued_by_the_rules(pool):
    board = chess.Board("7k/8/8/8/8/8/3Q4/4K3 w - - 0 1")
    for uci in ["d2d3", "h8g8", "d3d2", "g8h8", "d2d3", "h8g8", "d3d2"]:
        board.push_uci(uci)
    # g8h8 now repeats the start a third time: a draw under the claim rule, whatever the engine thinks
    repeat = chess.Move.from_uci("g8h8")
    assert rules_value(board, repeat, "claim") == 0.0 and rules_value(board, repeat, "automatic") is None
    values = values_of(pool, board)
    assert values[encode_move(board, repeat)] == 0.0
    assert values[encode_move(board, chess.Move.from_uci("g8f8"))] < -0.5  # the engine's value: queen up for White


def make_model(group_size=4, num_envs=8, **kwargs):
    env = ChessVectorEnv(num_envs, reward_depth=1, max_plies=60, start_positions="builtin", engine_processes=1)
    kwargs = {"horizon": 3, "batch_size": 16, "n_epochs": 1, "seed": 0, **kwargs}
    return GRPO("ChessResNetPolicy", env, group_mode="moves", group_size=group_size, policy_kwargs=TINY, **kwargs)


def collect(model):
    _, callback = model._setup_learn(10**9, None)
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer)
    return model.rollout_buffer


@pytest.mark.parametrize("group_size,without", [(4, False), (6, True), ("all", False)])
def test_candidates_are_legal_valued_and_centered(group_size, without):
    model = make_model(group_size, sample_without_replacement=without)
    buffer = collect(model)
    n = buffer.pos * buffer.n_envs
    assert n == 3 * 8 and model.num_timesteps == 3 * 8
    cand, actions = buffer.candidates[:n], buffer.actions[:n]
    rows = np.repeat(np.arange(n)[:, None], actions.shape[1], axis=1)
    assert buffer.action_masks[rows[cand], actions[cand]].all()
    if group_size == "all":
        np.testing.assert_array_equal(cand.sum(axis=1), buffer.action_masks[:n].sum(axis=1))
        # weights are the old probabilities: each position's weights sum to 1, the weighted advantage to 0
        w = buffer.weights[:n]
        np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose((w * buffer.advantages[:n]).sum(axis=1), 0.0, atol=1e-4)
    else:
        # without replacement a position with fewer legal moves than the group has that many candidates
        n_legal = buffer.action_masks[:n].sum(axis=1)
        np.testing.assert_array_equal(cand.sum(axis=1), np.minimum(n_legal, group_size) if without else group_size)
        np.testing.assert_allclose(buffer.advantages[:n].sum(axis=1), 0.0, atol=1e-4)
        if without:
            assert all(len(set(row[c])) == c.sum() for row, c in zip(actions, cand))
    assert -1.0 <= buffer.values[:n][cand].min() and buffer.values[:n][cand].max() <= 1.0
    stats = model.last_rollout_stats
    assert stats["engine_evals"] == buffer.action_masks[:n].sum() and 0 < stats["entropy_norm"] <= 1.0
    assert stats["regret"] >= 0 and -1 <= stats["policy_value"] <= 1
    # the stored log-probabilities are the policy's own: the first minibatch's ratio is exactly 1
    model.train()
    assert model.last_train_stats["ratio_dev_first_batch"] < 1e-5
    model.env.close()


def test_every_legal_move_weighted_uniformly():
    model = make_model("all", all_moves_weighting="uniform")
    buffer = collect(model)
    n = buffer.pos * buffer.n_envs
    cand, w = buffer.candidates[:n], buffer.weights[:n]
    np.testing.assert_allclose(w[cand], np.repeat(1.0 / cand.sum(axis=1), cand.sum(axis=1)), rtol=1e-5)
    np.testing.assert_allclose(buffer.advantages[:n].sum(axis=1), 0.0, atol=1e-4)
    assert "action_agreement_mean" not in model.last_rollout_stats  # every move is there: nothing to agree on
    with pytest.raises(ValueError, match="all_moves_weighting"):
        make_model("all", all_moves_weighting="prior")
    model.env.close()


def test_candidate_values_match_the_engine():
    model = make_model(4, num_envs=2, horizon=1)
    _, callback = model._setup_learn(10**9, None)
    boards = [board.copy() for board in model.env.vector_env.boards]
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer)
    buffer = model.rollout_buffer
    with StockfishPool(processes=1) as pool:
        expected = move_values(boards, pool.evaluate_moves(boards, chess.engine.Limit(depth=1)))
    for i in range(2):
        np.testing.assert_allclose(buffer.values[i], expected[i, buffer.actions[i]], rtol=1e-6)
    model.env.close()


@pytest.mark.parametrize("group_size", [4, "all"])
def test_greedy_advance_moves_every_game_by_the_policys_most_probable_move(group_size, tmp_path):
    model = make_model(group_size, num_envs=4, horizon=1, advance="greedy")
    _, callback = model._setup_learn(10**9, None)
    boards = [board.copy() for board in model.env.vector_env.boards]
    expected = [decode_action(board, int(model.predict(observation(board), action_masks=legal_action_mask(board),
                                                       deterministic=True)[0])) for board in boards]
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer)
    assert [board.move_stack[-1] for board in model.env.vector_env.boards] == expected
    model.save(tmp_path / "greedy.zip")
    loaded = GRPO.load(tmp_path / "greedy.zip", env=model.env)
    assert loaded.advance == "greedy" and loaded.collector.advance == "greedy"
    model.env.close()


def test_bad_advance_values_are_refused():
    env = ChessVectorEnv(4, shaping=False)
    try:
        with pytest.raises(ValueError, match="advance must be one of.*'best'"):
            GRPO("ChessResNetPolicy", env, group_mode="moves", advance="best", policy_kwargs=TINY)
        with pytest.raises(ValueError, match="advance='greedy' needs group_mode='moves'"):
            GRPO("ChessResNetPolicy", env, group_mode="games", group_size=4, advance="greedy", policy_kwargs=TINY)
    finally:
        env.close()


def test_learn_save_load_and_dynamic_sampling(tmp_path):
    model = make_model(4, kl_coef=0.1, drop_zero_std_groups=True)
    model.learn(3 * 3 * 8)
    assert model.num_timesteps == 72 and model.n_rollouts == 3
    assert "dropped_groups" in model.last_rollout_stats
    path = tmp_path / "moves.zip"
    model.save(path)
    loaded = GRPO.load(path, env=model.env)
    assert loaded.group_mode == "moves" and loaded.group_size == 4
    loaded.learn(24, reset_num_timesteps=False)
    assert loaded.num_timesteps == 96
    before = th.nn.utils.parameters_to_vector(loaded.policy.parameters()).clone()
    assert not th.equal(before, th.nn.utils.parameters_to_vector(loaded.ref_policy.parameters()))
    model.env.close()


def test_bad_move_group_settings_are_refused():
    env = ChessVectorEnv(6, shaping=False)
    with pytest.raises(ValueError, match="group_size='all'.*group_mode='moves'"):
        GRPO("ChessResNetPolicy", env, group_size="all")
    with pytest.raises(ValueError, match="group_mode must be one of"):
        GRPO("ChessResNetPolicy", env, group_mode="positions")
    # no divisibility needed: every game is a group of its own
    model = GRPO("ChessResNetPolicy", env, group_mode="moves", group_size=4, policy_kwargs=TINY)
    with pytest.raises(ValueError, match="move values need the engine"):
        model.learn(12)
    env.close()
