"""Evaluation: statistics against known values, ladder games, ACPL, puzzles, artefacts, callback, CLI."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path

import chess
import chess.engine
import chess.pgn
import numpy as np
import pytest

from chess_env.engine import find_stockfish
from chess_env.positions import load_positions
from chess_env.puzzles import Puzzle, read_puzzles
from grpo_agent.cli.evaluate import add_eval_arguments, run_eval
from grpo_agent.evaluation import (
    CP_CAP,
    EnginePolicy,
    EvalConfig,
    EvalLadderCallback,
    Evaluator,
    Opponent,
    RandomPolicy,
    as_move_fn,
    elo_from_score,
    load_policy,
    move_accuracy,
    score_stats,
    select_puzzles,
    solve_puzzle,
    win_percent,
    wilson_interval,
    write_artifacts,
)

ROOT = Path(__file__).resolve().parents[1]
EVAL_FENS = list(load_positions("builtin:eval"))[:6]


@pytest.fixture(scope="module")
def evaluator():
    with Evaluator(workers=2) as ev:
        yield ev


@pytest.fixture(scope="module")
def engine_best():
    """Full-strength Stockfish at depth 6: the ACPL judge's own best move at that depth."""
    policy = EnginePolicy("stockfish", depth=6)
    yield policy
    policy.close()


# -- statistics ---------------------------------------------------------------------------------


@pytest.mark.parametrize("successes, n, low, high", [
    (5, 10, 0.2366, 0.7634),  # reference values of the Wilson interval, z = 1.96
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (81, 263, 0.2553, 0.3662),
])
def test_wilson_interval_matches_reference_values(successes, n, low, high):
    lo, hi = wilson_interval(successes / n, n)
    assert lo == pytest.approx(low, abs=1e-4)
    assert hi == pytest.approx(high, abs=1e-4)


def test_score_stats_on_known_counts():
    stats = score_stats(6, 4, 2)  # 12 games, 8 points
    assert stats.games == 12 and stats.score == pytest.approx(8 / 12)
    lo, hi = wilson_interval(8 / 12, 12)
    assert (stats.score_low, stats.score_high) == (lo, hi)
    assert stats.elo == pytest.approx(-400 * math.log10(12 / 8 - 1))  # +120.4
    assert stats.elo == pytest.approx(120.41, abs=0.01)
    assert stats.elo_low == pytest.approx(elo_from_score(lo))
    assert stats.elo_high == pytest.approx(elo_from_score(hi))
    assert stats.elo_low < stats.elo < stats.elo_high
    assert not stats.elo_clamped
    assert elo_from_score(0.5) == 0.0
    assert elo_from_score(0.75) == pytest.approx(190.85, abs=0.01)


def test_score_stats_clamps_a_perfect_score_and_says_so():
    lost = score_stats(0, 0, 10)
    assert lost.score == 0.0 and lost.elo_clamped
    assert lost.elo == pytest.approx(elo_from_score(0.05))  # half a game of 10
    assert lost.elo_high == pytest.approx(elo_from_score(0.2775), abs=0.5)
    won = score_stats(10, 0, 0)
    assert won.elo == pytest.approx(-lost.elo) and won.elo_clamped


def test_statistics_reject_bad_input():
    with pytest.raises(ValueError, match="no games"):
        score_stats(0, 0, 0)
    with pytest.raises(ValueError, match="-1"):
        score_stats(-1, 0, 3)
    with pytest.raises(ValueError, match="strictly between"):
        elo_from_score(1.0)
    with pytest.raises(ValueError, match="1.5"):
        wilson_interval(1.5, 10)


def test_lichess_win_percent_and_accuracy():
    assert win_percent(0) == pytest.approx(50.0)
    assert win_percent(5000) == win_percent(CP_CAP)  # clamped like Lichess
    assert win_percent(300) == pytest.approx(50 + 50 * (2 / (1 + math.exp(-0.00368208 * 300)) - 1))
    assert move_accuracy(60.0, 60.0) == pytest.approx(100.0, abs=1e-3)
    assert move_accuracy(80.0, 30.0) == pytest.approx(103.1668 * math.exp(-0.04354 * 50) - 3.1669)
    assert move_accuracy(100.0, 0.0) == 0.0


@pytest.mark.parametrize("spec, name", [("random", "random"), ("sf0", "sf0"), ("stockfish", "sf20"),
                                        ("elo1500", "sf_elo1500"), ("sf3@d5", "sf3@d5"), ("SF2@t0.05", "sf2@t0.05")])
def test_opponent_specs(spec, name):
    assert Opponent.parse(spec).name == name


@pytest.mark.parametrize("spec", ["sf21", "bogus", "random@d3", "sf1@d0", "sf1@x4"])
def test_bad_opponent_specs_name_the_spec(spec):
    with pytest.raises(ValueError, match="opponent"):
        Opponent.parse(spec)


def test_config_validation():
    with pytest.raises(ValueError, match="adjudicate"):
        EvalConfig(adjudicate="coin").validate()
    with pytest.raises(ValueError, match="acpl_depth"):
        EvalConfig(acpl_depth=0).validate()
    with pytest.raises(ValueError, match="preset"):
        EvalConfig.preset("huge")


# -- games --------------------------------------------------------------------------------------


def _config(**kw) -> EvalConfig:
    base = dict(engine_depth=1, max_plies=120, adjudicate_depth=6, seed=3)
    return EvalConfig(**{**base, **kw})


def test_engine_best_move_beats_the_random_mover(evaluator, engine_best):
    match = evaluator.play_match(engine_best, "random", 4, EVAL_FENS, _config())
    assert match.stats.score == 1.0, [(g.result, g.termination) for g in match.games]
    assert [g.policy_color for g in match.games] == ["white", "black", "white", "black"]
    assert match.games[0].start_fen == match.games[1].start_fen  # each opening with both colours


def test_random_mover_scores_about_zero_against_stockfish(evaluator):
    match = evaluator.play_match(RandomPolicy(), "sf0", 6, EVAL_FENS, _config())
    assert match.stats.score <= 1 / 6
    assert "checkmate" in match.terminations


def test_games_are_reproducible_and_leave_global_rngs_alone(evaluator):
    torch = pytest.importorskip("torch")
    np.random.seed(123)
    torch.manual_seed(123)
    before_np, before_torch = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    config = _config(max_plies=40, adjudicate="draw")
    first = evaluator.play_match(RandomPolicy(), "random", 4, EVAL_FENS, config)
    second = evaluator.play_match(RandomPolicy(), "random", 4, EVAL_FENS, config)
    assert [g.moves for g in first.games] == [g.moves for g in second.games]
    assert (np.random.get_state()[1] == before_np).all() and torch.equal(torch.get_rng_state(), before_torch)
    assert {g.termination for g in first.games} <= {"adjudication_draw", "checkmate", "stalemate",
                                                   "insufficient_material", "threefold_repetition"}


def test_an_illegal_policy_move_forfeits(evaluator):
    match = evaluator.play_match(lambda board: chess.Move.from_uci("a1a8"), "random", 2, EVAL_FENS[:1], _config())
    assert match.stats.score == 0.0
    assert {g.termination for g in match.games} == {"illegal_move"}


def test_pgn_and_svg_artefacts_parse_back(evaluator, tmp_path):
    config = _config(opponents=("random",), games=2, acpl_positions=0, puzzles=0, positions=EVAL_FENS)
    report = evaluator.evaluate(RandomPolicy(), config, policy_name="rnd")
    json_path = write_artifacts(report, tmp_path)
    data = json.loads(json_path.read_text())
    assert data["metrics"]["eval/score_vs_random"] == report.matches[0].stats.score
    with open(tmp_path / "games" / "random.pgn") as fh:
        parsed = [chess.pgn.read_game(fh) for _ in range(2)]
        assert chess.pgn.read_game(fh) is None
    for game, record in zip(parsed, report.matches[0].games):
        assert game.errors == []
        assert game.headers["Result"] == record.result
        assert game.headers["Event"].startswith("grpo-chess eval")
        assert "Random mover" in (game.headers["White"], game.headers["Black"])
        assert game.headers["TerminationDetail"] == record.termination
        assert game.end().board().fen() == record.board().fen()
    svgs = sorted((tmp_path / "svg").glob("*.svg"))
    assert len(svgs) == 2 and svgs[0].read_text().startswith("<svg")


# -- ACPL ---------------------------------------------------------------------------------------


def test_acpl_of_the_engines_best_move_is_zero(evaluator, engine_best):
    result = evaluator.acpl(engine_best, EVAL_FENS, depth=6)
    assert result.acpl == 0.0
    assert result.accuracy == pytest.approx(100.0, abs=1e-3)
    assert result.best_move_rate == 1.0


def test_acpl_of_a_random_mover_is_large(evaluator):
    result = evaluator.acpl(RandomPolicy(), EVAL_FENS, depth=6, deterministic=False, seed=1)
    assert result.acpl > 100
    assert result.accuracy < 80
    assert all(p.cp_loss == max(0, p.cp_best - p.cp_played) for p in result.positions)


# -- puzzles ------------------------------------------------------------------------------------


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_puzzles_cover_the_themes():
    puzzles = read_puzzles()
    themes = [p.themes[0] for p in puzzles]
    assert 100 <= len(puzzles) <= 300
    assert {t: themes.count(t) for t in set(themes)} == {"mateIn1": 90, "mateIn2": 60, "winMaterial": 90}
    assert len({p.puzzle_id for p in puzzles}) == len(puzzles)
    picked = select_puzzles(puzzles, 6, np.random.default_rng(0))
    assert sorted(p.themes[0] for p in picked) == ["mateIn1"] * 2 + ["mateIn2"] * 2 + ["winMaterial"] * 2


def test_a_handful_of_shipped_puzzles_reverify():
    gen = _load_script("make_puzzles")
    puzzles = read_puzzles()
    by_theme = {t: [p for p in puzzles if p.themes[0] == t][:3] for t in ("mateIn1", "mateIn2", "winMaterial")}
    for puzzle in by_theme["mateIn1"]:  # exhaustive: exactly one mating move, the solution
        board = puzzle.board()
        assert [m.uci() for m in gen.mating_moves(board)] == [puzzle.moves[1]]
    for puzzle in by_theme["mateIn2"]:  # exhaustive: the first move alone forces mate in two
        board = puzzle.board()
        assert gen.is_unique_mate_in_2(board, chess.Move.from_uci(puzzle.moves[1]))
    with chess.engine.SimpleEngine.popen_uci(find_stockfish()) as engine:
        for puzzle in by_theme["winMaterial"]:  # Stockfish: a unique, clearly winning best move
            board = puzzle.board()
            best, second = engine.analyse(board, chess.engine.Limit(depth=14), multipv=2)
            assert best["pv"][0].uci() == puzzle.moves[1]
            assert best["score"].relative.score(mate_score=100_000) >= 250
            assert second["score"].relative.score(mate_score=100_000) <= 150


def test_puzzle_solving_rules(evaluator):
    puzzles = read_puzzles()
    mate2 = next(p for p in puzzles if p.themes[0] == "mateIn2")

    def oracle(board: chess.Board) -> chess.Move:
        line = chess.Board(mate2.fen)
        for uci in mate2.moves:
            if line.fen() == board.fen():
                return chess.Move.from_uci(uci)
            line.push_uci(uci)
        raise AssertionError("position off the solution line")

    assert solve_puzzle(mate2, oracle)
    # Two rooks, two mates on the back rank: Lichess accepts either.
    twin = Puzzle("twin", "6k1/p4ppp/8/8/8/8/8/3RR1K1 b - - 0 1", ("a7a6", "d1d8"), ("mateIn1",))
    assert solve_puzzle(twin, lambda b: chess.Move.from_uci("e1e8"))
    assert not solve_puzzle(twin, lambda b: chess.Move.from_uci("d1d7"))
    assert not solve_puzzle(twin, lambda b: chess.Move.from_uci("h1h8"))  # illegal: fails, no crash
    result = evaluator.puzzles(RandomPolicy(), puzzles[:30], deterministic=False)
    assert result.by_theme["mateIn1"]["n"] == 30 and result.accuracy < 0.5


# -- model policies and the training callback ---------------------------------------------------


def test_callback_evaluates_during_learn_and_keeps_the_best_model(tmp_path):
    from sb3_contrib import MaskablePPO

    from chess_env import ChessEnv

    env = ChessEnv(opponent="random", shaping=False, max_plies=20)
    model = MaskablePPO("MlpPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
    config = EvalConfig(opponents=("random",), games=2, engine_depth=1, max_plies=12, adjudicate="draw",
                        acpl_positions=2, acpl_depth=2, puzzles=3, positions=EVAL_FENS)
    callback = EvalLadderCallback(eval_freq_rollouts=1, config=config, save_path=tmp_path, workers=1)
    model.learn(32, callback=callback)
    assert len(callback.history) == 2
    keys = set(callback.history[0])
    assert {"eval/score_vs_random", "eval/elo_vs_random", "eval/acpl", "eval/puzzle_accuracy",
            "eval/selection_score"} <= keys
    assert callback.best_score == max(h["eval/selection_score"] for h in callback.history)
    assert not list(tmp_path.glob(".*.tmp"))
    saved = json.loads((tmp_path / "best_eval.json").read_text())
    assert saved["selection_score"] == callback.best_score
    # A run directory resolves to its best model, which plays legal moves.
    policy, name = load_policy(str(tmp_path))
    assert name.endswith("best_model")
    move_fn = as_move_fn(policy)
    board = chess.Board(EVAL_FENS[0])
    assert move_fn(board) in board.legal_moves
    with pytest.raises(ValueError, match="history"):
        as_move_fn(policy, history=2)
    with pytest.raises(ValueError, match="eval_freq_rollouts"):
        EvalLadderCallback(eval_freq_rollouts=0)


def test_a_sampling_grpo_model_is_reproducible_and_leaves_torch_rng_alone(evaluator):
    torch = pytest.importorskip("torch")
    from grpo_agent import GRPO

    model = GRPO("MlpPolicy", "GRPOChess-v0", n_envs=4, group_size=2, horizon=2, env_kwargs=dict(shaping=False))
    state = torch.get_rng_state().clone()
    first = evaluator.acpl(model, EVAL_FENS[:4], depth=2, deterministic=False, seed=5)
    second = evaluator.acpl(model, EVAL_FENS[:4], depth=2, deterministic=False, seed=5)
    assert [p.move for p in first.positions] == [p.move for p in second.positions]
    assert torch.equal(state, torch.get_rng_state())
    greedy = as_move_fn(model)
    board = chess.Board(EVAL_FENS[0])
    assert greedy(board) == greedy(board) and greedy(board) in board.legal_moves


# -- CLI ----------------------------------------------------------------------------------------


def _parse(*argv: str) -> argparse.Namespace:
    return add_eval_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def test_the_heldout_preset_judges_every_held_out_position_and_puzzle():
    config = EvalConfig.preset(_parse("random", "--heldout").preset)
    assert config.games == 40 and config.acpl_positions is None and config.puzzles is None
    assert config.positions == "builtin:eval"


def test_run_eval_writes_the_report(tmp_path, capsys):
    out = tmp_path / "out"
    args = _parse("random", "--quick", "--games", "2", "--opponents", "random", "--acpl-positions", "2",
                  "--puzzles", "3", "--out", str(out), "--workers", "2")
    assert run_eval(args) == 0
    data = json.loads((out / "eval.json").read_text())
    assert data["policy"] == "random" and data["config"]["games"] == 2
    assert data["acpl"]["n"] == 2 and data["puzzles"]["n"] == 3
    assert (out / "games" / "random.pgn").exists()
    assert "ladder results" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (("random", "--opponents", "sf99"), "sf99"),
    (("random", "--stockfish", "/no/such/stockfish"), "/no/such/stockfish"),
    (("no/such/model.zip",), "model.zip"),
    (("random", "--games", "-3"), "games"),
])
def test_run_eval_rejects_bad_arguments(argv, message, capsys):
    assert run_eval(_parse(*argv)) == 2
    assert message in capsys.readouterr().err
