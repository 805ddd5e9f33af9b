"""Tests for grpo_agent.pretrain: the labelled dataset, its reuse, the targets, training, save/load, warm start."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import chess
import numpy as np
import pandas as pd
import pytest
import torch as th
import yaml

from chess_env import ChessVectorEnv
from chess_env.encoding import decode_action, legal_action_mask, legal_actions, observation
from chess_env.engine import EngineNotFoundError, StockfishPool, find_stockfish
from chess_env.positions import load_positions
from grpo_agent import GRPO
from grpo_agent.pretrain import (
    DATASET_FILE,
    MODEL_FILE,
    LabelledPositions,
    PretrainConfig,
    _Batches,
    build_dataset,
    fit,
    heldout_metrics,
    move_targets,
    parse_section,
    pretrain,
    run_pretrain,
    split_heldout,
    warm_start,
)
from grpo_agent.pretrain_data import STARTS_FILE, dataset_key, grpo_starts, stored_key

try:
    find_stockfish()
    HAVE_STOCKFISH = True
except EngineNotFoundError:
    HAVE_STOCKFISH = False
needs_stockfish = pytest.mark.skipif(not HAVE_STOCKFISH, reason="Stockfish is not installed")

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(features_extractor_kwargs=dict(n_blocks=1, channels=8))
SMALL = dict(n_positions=24, walk_plies=3, depth=1, epochs=2, batch_size=8, heldout_frac=0.2,
             engine_processes=1, device="cpu")


@pytest.fixture(scope="module")
def pool():
    with StockfishPool(processes=1) as engine_pool:
        yield engine_pool


def synthetic(n: int) -> LabelledPositions:
    """``n`` built-in positions without an engine, two per walk, with a learnable labeller: a move's value
    grows with its move plane (``action % 73``), so moves of one plane tie."""
    fens = list(load_positions("builtin"))[:n]
    actions = np.concatenate([legal_actions(chess.Board(fen)).astype(np.int16) for fen in fens])
    counts = [len(legal_actions(chess.Board(fen))) for fen in fens]
    values = (actions % 73) / 36.0 - 1.0
    return LabelledPositions(
        fens=np.array(fens), offsets=np.concatenate([[0], np.cumsum(counts)]), actions=actions,
        values=values.astype(np.float32), mates=np.zeros(len(actions), np.int16), walks=np.arange(n, dtype=np.int32) // 2,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("n_positions", 0), ("depth", 0), ("depth", 2.5), ("targets", "argmax"), ("label_temperature", 0.0),
     ("heldout_frac", 1.0), ("walk_random", -0.1), ("conversion", 1.5), ("conversion_plies", -1), ("lr", "fast"), ("epochs", True), ("lr_schedule", "step"),
     ("engine_processes", 0), ("weight_decay", -1.0), ("positions", []), ("conversion_keep", "some"),
     ("torch_threads", 0), ("conversion_depth", 0), ("conversion_depth", 1)],
)
def test_bad_config_values_raise_naming_them(field, value):
    with pytest.raises(ValueError, match=field) as info:
        PretrainConfig(**{field: value})
    assert repr(value) in str(info.value)


def test_config_sections_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"unknown pretrain key\(s\) \['depht'\]"):
        run_pretrain({"depht": 3}, tmp_path)
    with pytest.raises(ValueError, match="depth must be an integer >= 1, got 0"):
        parse_section({"depth": 0})
    section = yaml.safe_load((ROOT / "configs" / "pretrain.yaml").read_text())["pretrain"]
    config, run_kwargs = parse_section(section)
    assert config.n_positions == section["n_positions"] and set(run_kwargs) <= {"policy", "policy_kwargs", "engine_path"}


def test_soft_targets_follow_the_values_and_sum_to_one_over_the_legal_moves():
    data = synthetic(6)
    for kind, temperature in (("soft", 0.05), ("soft", 10.0), ("best", 1.0)):
        q = move_targets(data, kind, temperature)
        rows = np.repeat(np.arange(len(data)), data.counts)
        np.testing.assert_allclose(np.bincount(rows, q), 1.0, rtol=1e-5)
        for i in range(len(data)):
            values, q_i = data.values[data.offsets[i]:data.offsets[i + 1]], q[data.offsets[i]:data.offsets[i + 1]]
            assert np.argmax(q_i) == np.argmax(values)
            if kind == "soft":  # the softmax ranks the moves as their values do
                np.testing.assert_array_equal(np.argsort(q_i, kind="stable"), np.argsort(values, kind="stable"))
            else:
                assert np.count_nonzero(q_i) == 1
    # minibatch rows over the legal moves: each row's real columns are exactly its position's legal moves
    batches = _Batches(data, move_targets(data, "soft", 0.1), 1.0, th.device("cpu"))
    obs, masks, targets, top, weights, legal = batches(np.array([4, 1, 3]))
    assert weights.tolist() == [1.0, 1.0, 1.0]
    assert masks.shape == legal.shape == (3, max(data.counts[[4, 1, 3]]))
    for row, i in enumerate((4, 1, 3)):
        board = chess.Board(data.fens[i])
        assert sorted(legal[row][masks[row]].tolist()) == np.flatnonzero(legal_action_mask(board)).tolist()
        np.testing.assert_array_equal(obs[row].numpy(), observation(board))
        assert targets[row][~masks[row]].abs().sum() == 0 and not top[row][~masks[row]].any()
        assert targets[row].sum().item() == pytest.approx(1.0, abs=1e-5)
        assert top[row].any() and (targets[row][top[row]] == targets[row].max()).all()


def test_a_forced_mate_puts_the_mass_on_the_shortest_mates():
    data = synthetic(1)
    n = data.counts[0]
    data.mates[:3] = [3, 1, 1]  # two mates in one and a mate in three: score_value makes them all 1
    data.mates[3] = -2
    data.values[:3] = 1.0
    data.values[3] = -1.0
    q = move_targets(data, "soft", 0.05)
    np.testing.assert_allclose(q[:3], [0.0, 0.5, 0.5])
    assert q[3:n].sum() == 0
    assert data.best()[:3].tolist() == [False, True, False]
    both = synthetic(2)
    both.mates[both.offsets[1]] = 2  # the second position has a mate in two
    assert _Batches(both, move_targets(both, "soft", 0.05), 8.0, th.device("cpu"))(np.array([0, 1])).weights.tolist() == [1.0, 8.0]


def test_heldout_split_keeps_walks_whole():
    walks = np.repeat(np.arange(40), 5)
    train, held = split_heldout(walks, 0.1, seed=0)
    assert set(walks[train]).isdisjoint(walks[held])
    assert len(train) + len(held) == len(walks) and len(held) == 20  # 10% of 200, four whole walks
    with pytest.raises(ValueError, match="at least 2 walks, got 1"):
        split_heldout(np.zeros(5, np.int32), 0.1, seed=0)


def test_training_lowers_the_loss_on_a_tiny_set(monkeypatch):
    th.manual_seed(0)
    set_threads = th.set_num_threads
    data = synthetic(24)
    model = GRPO("ChessResNetPolicy", ChessVectorEnv(1, shaping=False), group_size=1, policy_kwargs=TINY, seed=0,
                 device="cpu")
    config = PretrainConfig(epochs=20, batch_size=8, lr=3e-3, heldout_frac=0.2, label_temperature=0.05, device="cpu")
    train, held = split_heldout(data.walks, config.heldout_frac, config.seed)
    batches = _Batches(data, move_targets(data, config.targets, config.label_temperature), 1.0, model.device)
    before = {name: heldout_metrics(model.policy, batches, idx, 64) for name, idx in (("train", train), ("held", held))}
    threads = []
    monkeypatch.setattr(th, "set_num_threads", lambda n: threads.append(n) or set_threads(n))
    stats = fit(model.policy, data, dataclasses.replace(config, torch_threads=2), None)
    # Trained on the config's threads, then the caller's setting (the test session's one thread) again.
    assert threads == [2, 1] and th.get_num_threads() == 1
    after = {name: heldout_metrics(model.policy, batches, idx, 64) for name, idx in (("train", train), ("held", held))}
    assert stats["heldout_loss"] == pytest.approx(after["held"]["heldout_loss"], rel=1e-5)  # the best is kept
    for name in ("train", "held"):
        # The near-uniform initial policy picks the best move by chance; the labeller's rule is learnt.
        assert after[name]["heldout_loss"] < 0.5 * before[name]["heldout_loss"]
        assert after[name]["heldout_top1"] > 0.8 > before[name]["heldout_top1"]


def test_grpo_starts_are_every_forced_mate_and_deep_position_and_as_many_others():
    data = synthetic(40)
    mating = [3, 17, 29]
    for i in mating:  # the mover mates in 2 with one move of these positions
        data.mates[data.offsets[i]] = 2
    data.mates[data.offsets[5]] = -1  # being mated is not a mate for the mover
    starts = grpo_starts(data, seed=0, others=4)
    assert starts[:3] == [data.fens[i] for i in mating] and len(starts) == 3 + 4 == len(set(starts))
    assert grpo_starts(data, seed=0, others=4) == starts and grpo_starts(data, seed=1, others=4) != starts
    assert len(grpo_starts(data, seed=0, others=1)) == 3 + 3  # as many others as mates
    assert len(grpo_starts(data, seed=0)) == 40  # fewer others than asked: all of them
    data.deep[[8, 12]] = True  # won endings searched deeper join the mates, in dataset order
    assert grpo_starts(data, seed=0, others=1)[:5] == [data.fens[i] for i in (3, 8, 12, 17, 29)]
    assert len(grpo_starts(data, seed=0, others=1)) == 5 + 5


@needs_stockfish
def test_dataset_is_labelled_reused_and_rebuilt(tmp_path, pool):
    config = PretrainConfig(**SMALL)
    path = build_dataset(config, pool, tmp_path)
    assert path == tmp_path / DATASET_FILE
    data = LabelledPositions.load(path)
    assert len(data) == config.n_positions and len(set(data.fens)) == len(data)
    assert (data.counts > 1).all() and np.abs(data.values).max() <= 1.0
    for i, fen in enumerate(data.fens):
        board = chess.Board(fen)
        assert sorted(data.actions[data.offsets[i]:data.offsets[i + 1]]) == sorted(legal_actions(board))
    calls, key = pool.engine_calls, stored_key(path)
    # Same settings: no engine call at all. Training settings do not change the dataset either.
    assert build_dataset(dataclasses.replace(config, targets="best", epochs=9), pool, tmp_path) == path
    assert pool.engine_calls == calls and stored_key(path) == key
    # Different labelling settings: rebuilt.
    build_dataset(dataclasses.replace(config, depth=2), pool, tmp_path)
    assert pool.engine_calls > calls and stored_key(path) != key
    key = stored_key(path)
    build_dataset(dataclasses.replace(config, depth=2, n_positions=30), pool, tmp_path)
    assert stored_key(path) != key and len(LabelledPositions.load(path)) == 30


@needs_stockfish
def test_labelling_is_seeded_and_a_smaller_dataset_is_a_prefix_of_a_larger_one(pool, tmp_path):
    # Batches of walks have the same size from 128 positions on, so the walks do not depend on n_positions.
    config = PretrainConfig(**{**SMALL, "n_positions": 130})
    small = LabelledPositions.load(build_dataset(config, pool, tmp_path / "small"))
    large = LabelledPositions.load(build_dataset(dataclasses.replace(config, n_positions=160), pool, tmp_path / "large"))
    again = LabelledPositions.load(build_dataset(config, pool, tmp_path / "again"))
    for field in dataclasses.fields(LabelledPositions):
        np.testing.assert_array_equal(getattr(small, field.name), getattr(again, field.name))
        cut = len(small) + 1 if field.name == "offsets" else small.offsets[-1] if field.name in (
            "actions", "values", "mates") else len(small)
        np.testing.assert_array_equal(getattr(large, field.name)[:cut], getattr(small, field.name))
    other = LabelledPositions.load(build_dataset(dataclasses.replace(config, seed=1), pool, tmp_path / "other"))
    assert set(other.fens) != set(small.fens)


@needs_stockfish
def test_engine_best_moves_are_mates_where_a_mate_in_one_exists(pool, tmp_path):
    fen = "6k1/5ppp/8/8/8/8/5PPP/R5K1 w - - 0 1"  # Ra8# is the only mate in one
    (tmp_path / "mate.fen").write_text(fen + "\n")
    config = PretrainConfig(**{**SMALL, "positions": str(tmp_path / "mate.fen"), "n_positions": 1, "walk_plies": 0})
    data = LabelledPositions.load(build_dataset(config, pool, tmp_path))
    board = chess.Board(fen)
    best = data.actions[data.best()]
    assert decode_action(board, int(best[0])) == chess.Move.from_uci("a1a8")
    assert data.mates[data.best()][0] == 1


@needs_stockfish
def test_conversion_walks_label_the_engine_side_only_and_reach_its_mates(tmp_path, pool):
    # White has king, queen and rook against a bare king: when White is the engine side, its games end in mate.
    starts = ["7k/8/8/8/8/8/8/1RQ1K3 w - - 0 1", "k7/8/8/8/8/8/8/4KQR1 w - - 0 1", "8/8/3k4/8/8/8/8/Q3K2R w - - 0 1",
              "8/8/8/8/5k2/8/8/RQ2K3 w - - 0 1"]
    (tmp_path / "starts.fen").write_text("\n".join(starts) + "\n")
    config = PretrainConfig(**{**SMALL, "positions": str(tmp_path / "starts.fen"), "n_positions": 1500, "depth": 2,
                               "conversion": 1.0, "conversion_plies": 40})
    data = LabelledPositions.load(build_dataset(config, pool, tmp_path / "run"))
    turns = np.array([chess.Board(fen).turn for fen in data.fens])
    mover_mates = np.maximum.reduceat(data.mates, data.offsets[:-1])
    sides = {}
    for walk in np.unique(data.walks):
        rows = data.walks == walk
        assert len(set(turns[rows])) == 1, "a conversion walk labels the positions of one side only"
        sides[walk] = turns[rows][0]
    assert set(sides.values()) == {chess.WHITE, chess.BLACK}  # the engine side is either colour
    assert (mover_mates[turns == chess.WHITE] == 1).any()  # White to mate in one: the game was being won
    assert (mover_mates[turns == chess.BLACK] <= 0).all()  # a bare king mates nobody
    # Plain walks are unchanged by the new settings while conversion is 0 (no extra random draws).
    plain = PretrainConfig(**{**SMALL, "positions": str(tmp_path / "starts.fen")})
    tweaked = dataclasses.replace(plain, conversion_plies=7)
    for field in dataclasses.fields(LabelledPositions):
        np.testing.assert_array_equal(getattr(LabelledPositions.load(build_dataset(plain, pool, tmp_path / "a")), field.name),
                                      getattr(LabelledPositions.load(build_dataset(tweaked, pool, tmp_path / "b")), field.name))
    assert stored_key(tmp_path / "a" / DATASET_FILE) == stored_key(tmp_path / "b" / DATASET_FILE)
    # conversion_keep="mates": the same games, but only the positions where the engine side has a forced mate.
    mates_only = dataclasses.replace(config, n_positions=100, conversion_keep="mates")
    kept = LabelledPositions.load(build_dataset(mates_only, pool, tmp_path / "mates"))
    assert len(kept) == 100 and (np.maximum.reduceat(kept.mates, kept.offsets[:-1]) > 0).all()
    keep_all = dataclasses.replace(mates_only, conversion_keep="all")
    assert dataset_key(mates_only, starts)[0] != dataset_key(keep_all, starts)[0]


@needs_stockfish
def test_won_endings_of_conversion_games_are_searched_deeper_and_played_by_that_search(tmp_path, pool):
    # King and queen (and rook) against a bare king or king and pawn, mates several moves away: depth 1 sees no
    # mate, so these are the won endings whose depth-1 values are flat.
    starts = ["8/8/8/4k3/8/8/2Q5/4K3 w - - 0 1", "8/8/3k4/8/8/8/8/Q3K2R w - - 0 1", "8/5p2/8/3k4/8/8/8/2Q1K3 w - - 0 1"]
    (tmp_path / "starts.fen").write_text("\n".join(starts) + "\n")
    config = PretrainConfig(**{**SMALL, "positions": str(tmp_path / "starts.fen"), "n_positions": 120, "depth": 1,
                               "conversion": 1.0, "conversion_plies": 60, "conversion_keep": "mates",
                               "conversion_depth": 5})
    data = LabelledPositions.load(build_dataset(config, pool, tmp_path / "run"))
    assert stored_key(tmp_path / "run" / DATASET_FILE) != dataset_key(
        dataclasses.replace(config, conversion_depth=None), load_positions(str(tmp_path / "starts.fen")))[0]
    mover_mates = np.maximum.reduceat(data.mates, data.offsets[:-1])
    assert data.deep.any()
    # kept although conversion_keep="mates": deep positions where even depth 5 sees no mate
    assert (data.deep & (mover_mates <= 0)).any()
    targets = move_targets(data, "soft", 0.3)
    top = data.top()
    pairs = checked = 0
    for i in np.flatnonzero(data.deep):
        board = chess.Board(str(data.fens[i]))
        assert not board.occupied_co[not board.turn] & ~(board.kings | board.pawns)  # the random side: K and P
        rows = slice(data.offsets[i], data.offsets[i + 1])
        np.testing.assert_allclose(targets[rows].sum(), 1.0, rtol=1e-6)
        assert (targets[rows][~top[rows]] == 0).all()  # all the mass on the deeper search's best moves
        # The game went on with that search's first best move, then the random reply (the rows of one walk are
        # in the order it played them).
        later = np.flatnonzero((data.walks == data.walks[i]) & (np.arange(len(data)) > i))
        if len(later):
            board.push(decode_action(board, int(data.actions[rows][top[rows]][0])))
            successors = set()
            for reply in board.legal_moves:
                board.push(reply)
                successors.add(board.epd())
                board.pop()
            checked += 1
            pairs += chess.Board(str(data.fens[later[0]])).epd() in successors
    # a position skipped (single legal move, seen before) breaks a few pairs; a walk not played by that search
    # would match about one pair in twenty-five
    assert checked >= 10 and pairs >= 0.9 * checked


@needs_stockfish
def test_pretrained_zip_loads_predicts_legal_moves_and_warm_starts(tmp_path, pool):
    config = PretrainConfig(**SMALL)
    build_dataset(config, pool, tmp_path)
    calls = pool.engine_calls
    model = pretrain(config, tmp_path, policy_kwargs=TINY)
    assert pool.engine_calls == calls  # the dataset was reused
    log = pd.read_csv(tmp_path / "progress_pretrain.csv")
    for column in ("pretrain/loss", "pretrain/heldout_loss", "pretrain/heldout_top1"):
        assert log[column].notna().all()
    assert len(log) == config.epochs * config.evals_per_epoch
    # the GRPO stage's start positions: the dataset's (no mates in 24 opening positions: all the others)
    fens = LabelledPositions.load(tmp_path / DATASET_FILE).fens
    assert sorted(load_positions(str(tmp_path / STARTS_FILE))) == sorted(fens)
    loaded = GRPO.load(tmp_path / MODEL_FILE, device="cpu")
    for fen in list(load_positions("builtin:eval"))[:10]:
        board = chess.Board(fen)
        action, _ = loaded.predict(observation(board), action_masks=legal_action_mask(board), deterministic=True)
        assert decode_action(board, int(action)) in board.legal_moves
    pretrained = model.policy.state_dict()

    fresh = GRPO("ChessResNetPolicy", ChessVectorEnv(4, shaping=False), group_size=4, policy_kwargs=TINY, seed=1,
                 device="cpu")
    assert not all(th.equal(v, fresh.policy.state_dict()[k]) for k, v in pretrained.items())
    warm_start(fresh, tmp_path / MODEL_FILE)
    for network in (fresh.policy, fresh.ref_policy):
        state = network.state_dict()
        assert state.keys() == pretrained.keys()
        assert all(th.equal(state[k], v) for k, v in pretrained.items())
    assert not any(p.requires_grad for p in fresh.ref_policy.parameters())
    # GRPO trains on from there: the optimizer still holds the policy's (now pretrained) parameters.
    fresh.learn(total_timesteps=fresh.n_envs * fresh.horizon)
    assert not all(th.equal(v, fresh.policy.state_dict()[k]) for k, v in pretrained.items())
    assert all(th.equal(v, fresh.ref_policy.state_dict()[k]) for k, v in pretrained.items())

    other = GRPO("ChessResNetPolicy", ChessVectorEnv(4, shaping=False), group_size=4, device="cpu",
                 policy_kwargs=dict(features_extractor_kwargs=dict(n_blocks=2, channels=8)))
    with pytest.raises(ValueError, match="does not fit"):
        warm_start(other, tmp_path / MODEL_FILE)
