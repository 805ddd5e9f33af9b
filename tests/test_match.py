"""The shared game loop, the pentanomial GSPRT (against hand-computed values), and ``grpo-chess match``."""

from __future__ import annotations

import math

import chess
import chess.pgn
import pytest
from conftest import needs_stockfish, save_tiny_model

from grpo_agent.cli import main
from grpo_agent.evaluation import GameRecord, play_game
from grpo_agent.evaluation.match import Contestant, MatchConfig, pair_points, run_match, write_pgn
from grpo_agent.evaluation.sprt import PENTANOMIAL, SPRT, TRINOMIAL, expected_score, llr, pentanomial


def elo(score: float) -> float:
    return -400 * math.log10(1 / score - 1)


# -- the game loop ------------------------------------------------------------------------------

def _first_legal(board: chess.Board) -> chess.Move:
    return next(iter(board.legal_moves))


def test_an_illegal_move_forfeits_for_either_side():
    for color in (chess.WHITE, chess.BLACK):
        players = {color: lambda board: chess.Move.from_uci("a1a8"), not color: _first_legal}
        game = play_game(chess.STARTING_FEN, players, 100, lambda board: ("adjudication_draw", None))
        assert (game.reason, game.winner, game.illegal_move) == ("illegal_move", not color, "a1a8")
        assert len(game.board.move_stack) == (0 if color == chess.WHITE else 1)


def test_the_ply_limit_adjudicates_and_players_see_the_game_so_far():
    stacks = []

    def recorder(board: chess.Board) -> chess.Move:
        stacks.append(len(board.move_stack))
        return _first_legal(board)

    seen = []
    game = play_game(chess.STARTING_FEN, {chess.WHITE: recorder, chess.BLACK: recorder}, 6,
                     lambda board: seen.append(board.fen()) or ("adjudication_win", chess.BLACK))
    assert stacks == list(range(6)) and seen == [game.board.fen()]
    record = GameRecord.from_game(game, "x", 0, chess.STARTING_FEN, chess.WHITE)
    assert (record.result, record.score, record.plies, record.termination) == ("0-1", 0.0, 6, "adjudication_win")


# -- the SPRT -----------------------------------------------------------------------------------

def test_llr_matches_hand_computed_values():
    # Trinomial L/D/W = 1/1/2 (mean 0.625). Under H1 (s1 = 0.625) the maximum is the sample itself; under
    # H0 (s0 = 0.5) theta solves 0.25/(1 + theta/2) = 0.125/(1 - theta/2): theta = 2/3, p = (3/8, 1/4, 3/8).
    # LLR = 2 ln(0.5/0.375) + ln(0.25/0.375) = ln(32/27).
    assert llr([1, 1, 2], 0.0, elo(0.625), TRINOMIAL) == pytest.approx(math.log(32 / 27), abs=1e-12)
    # Pentanomial, 1 pair at 1/2 and 3 at 2/2 (mean 0.875 = s1). Under s0 = 0.6 the interior root
    # (theta = 6.875) would make p(0) negative: theta = 1/s0, p(1/2) = 0.3, p(1) = 0.45, the missing
    # 0.25 on the never-seen 0/2. LLR = ln(0.25/0.3) + 3 ln(0.75/0.45) = ln(5/6) + 3 ln(5/3).
    assert llr([0, 0, 1, 0, 3], elo(0.6), elo(0.875), PENTANOMIAL) == pytest.approx(
        math.log(5 / 6) + 3 * math.log(5 / 3), abs=1e-12)
    # Only wins: the best distribution with mean s is p(win) = s, p(loss) = 1 - s; LLR = n ln(s1/s0).
    assert llr([0, 0, 10], 0.0, 200.0, TRINOMIAL) == pytest.approx(10 * math.log(expected_score(200) / 0.5))
    # Only draws, 8 pairs at 1/2 = s0: LLR = 8 ln(p1(1/2)) with the rest on 2/2, p1(1/2) = 0.8 at s1 = 0.6.
    assert llr([0, 0, 8, 0, 0], 0.0, elo(0.6)) == pytest.approx(8 * math.log(0.8), abs=1e-12)


def test_llr_agrees_with_the_normal_approximation_on_a_large_balanced_sample():
    counts = [30, 80, 200, 90, 40]
    n = sum(counts)
    mean = sum(c * x for c, x in zip(counts, PENTANOMIAL)) / n
    var = sum(c * (x - mean) ** 2 for c, x in zip(counts, PENTANOMIAL)) / n
    s0, s1 = expected_score(0), expected_score(20)
    assert llr(counts, 0, 20) == pytest.approx(n * (s1 - s0) * (2 * mean - s0 - s1) / (2 * var), rel=0.01)


def test_llr_symmetries_and_empty_samples():
    counts = [3, 5, 11, 6, 2]
    assert llr(counts, -10, 15) == pytest.approx(-llr(counts, 15, -10))
    assert llr(counts, -10, 15) == pytest.approx(llr(counts[::-1], 10, -15))  # the same test from B's side
    assert llr([0] * 5, 0, 10) == 0.0
    with pytest.raises(ValueError, match="categories"):
        llr([1, 2], 0, 10)


def test_sprt_bounds_and_decisions():
    test = SPRT.parse("0,10", alpha=0.05, beta=0.1)
    lower, upper = test.bounds
    assert lower == pytest.approx(math.log(0.1 / 0.95)) and upper == pytest.approx(math.log(0.9 / 0.05))
    assert (test.decision(upper), test.decision(lower), test.decision(0.0)) == ("H1", "H0", None)
    for bad in ("10,0", "0", "a,b"):
        with pytest.raises(ValueError):
            SPRT.parse(bad)
    with pytest.raises(ValueError, match="alpha"):
        SPRT(0, 10, alpha=0.5)


def test_pairs_are_counted_by_points():
    records = [GameRecord("b", i, chess.STARTING_FEN, "white", [], "", "", score, 0)
               for i, score in enumerate([1, 1, 0.5, 0, 1, 0.5, 1])]
    assert pair_points(records) == [2, 0.5, 1.5]  # the unpaired last game does not count
    assert pentanomial(pair_points(records)) == (0, 1, 0, 1, 1)


# -- matches ------------------------------------------------------------------------------------

@needs_stockfish
def test_a_tiny_model_plays_skill_0_with_paired_openings(tmp_path):
    a = Contestant.load(save_tiny_model(tmp_path / "tiny.zip"))
    b = Contestant.load("sf:skill=0", depth=1)
    try:
        outcome = run_match(a, b, MatchConfig(games=4, max_plies=60, adjudicate_depth=4, seed=1))
    finally:
        b.close()
    assert [g.policy_color for g in outcome.games] == ["white", "black", "white", "black"]
    assert outcome.games[0].start_fen == outcome.games[1].start_fen != outcome.games[2].start_fen
    assert outcome.stats.games == 4 and sum(outcome.pairs) == 2 and outcome.decision is None
    assert b.description.startswith("Stockfish") and "skill 0, depth 1" in b.description
    with open(write_pgn(outcome, tmp_path / "m.pgn")) as fh:
        games = [chess.pgn.read_game(fh) for _ in range(4)]
    for game, record in zip(games, outcome.games):
        assert {game.headers["White"], game.headers["Black"]} == {"tiny", b.description}
        assert game.headers["Result"] == record.result and game.end().board() == record.board()


@needs_stockfish
def test_the_sprt_stops_a_lopsided_match_early():
    a, b = Contestant.load("sf:depth=5"), Contestant.load("random")
    try:
        outcome = run_match(a, b, MatchConfig(games=100, sprt=SPRT(0, 200), max_plies=150, adjudicate_depth=6))
    finally:
        a.close()
    # Every pair won 2-0 adds ln(s1/s0) = 0.418 (see test_llr_matches_hand_computed_values): 8 pairs pass 2.944.
    assert outcome.decision == "H1" and outcome.llr >= SPRT(0, 200).bounds[1]
    assert outcome.decided_after == len(outcome.games) <= 24
    assert outcome.pairs[4] >= 7


@needs_stockfish
def test_match_command_prints_the_table_and_writes_the_pgn(tmp_path, capsys):
    model = save_tiny_model(tmp_path / "tiny.zip")
    pgn = tmp_path / "out.pgn"
    assert main(["match", model, "sf:skill=0", "--games", "2", "--depth", "1", "--max-plies", "40",
                 "--adjudicate", "draw", "--pgn", str(pgn), "--sprt=-100,100"]) == 0
    captured = capsys.readouterr()
    assert "A tiny vs B stockfish_sf0" in captured.out and "SPRT (pentanomial GSPRT)" in captured.out
    assert "games 2/2" in captured.err  # not a terminal: plain progress lines
    assert pgn.read_text().count('[Event "grpo-chess match: tiny vs stockfish_sf0"]') == 2


@pytest.mark.parametrize("argv, message", [
    (["random", "random", "--games", "3"], "even number"),
    (["random", "nonsense"], "not a model"),
    (["random", "random", "--sprt", "5"], "SPRT bounds"),
])
def test_match_command_rejects_bad_arguments(argv, message, capsys):
    assert main(["match", *argv, "--adjudicate", "draw"]) == 2
    assert message in capsys.readouterr().err
