"""chess_env.engine's player and strength specs: one mapping from spec to UCI options and limit,
and a python-chess player that restarts once, closes, and pickles without its process."""

from __future__ import annotations

import gc
import os
import pickle
import signal
import subprocess
import sys
import time

import chess
import chess.engine
import pytest

from chess_env import ChessEnv
from chess_env.engine import EnginePlayer, Strength
from chess_env.opponents import make_opponent
from conftest import alive, needs_stockfish

MATE_IN_ONE = "6k1/8/6K1/8/8/8/8/R7 w - - 0 1"  # Ra8#


# -- strength specs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "strength", "name"),
    [
        ("stockfish", Strength(skill=20), "sf20"),
        ("sf0", Strength(skill=0), "sf0"),
        ("SF2@t0.05", Strength(skill=2, movetime=0.05), "sf2@t0.05"),
        ("sf3@d5", Strength(skill=3, depth=5), "sf3@d5"),
        ("elo1500@n2000", Strength(elo=1500, nodes=2000), "sf_elo1500@n2000"),
        ("sf_elo1500", Strength(elo=1500), "sf_elo1500"),
        ("sf:skill=0", Strength(skill=0), "sf0"),
        ("skill=3", Strength(skill=3), "sf3"),
        ("elo=1500", Strength(elo=1500), "sf_elo1500"),
        ("depth=1", Strength(depth=1), "sf20@d1"),
        ("sf:skill=3, depth=5, nodes=100", Strength(skill=3, depth=5, nodes=100), "sf3@d5@n100"),
    ],
)
def test_specs_parse_to_one_strength_and_back(spec, strength, name):
    assert Strength.parse(spec) == strength
    assert strength.name == name and Strength.parse(name) == strength


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("sf21", "skill=21"),
        ("skill=-1", "skill=-1"),
        ("elo=abc", "elo='abc'"),
        ("sf1@d0", "depth=0"),
        ("sf1@d1.5", "depth='1.5'"),
        ("movetime=0", "movetime=0.0"),
        ("skill=3,elo=1500", "not both"),
        ("sf1@x4", "'@x4'"),
        ("speed=3", "'speed=3'"),
        ("bogus", "'bogus'"),
    ],
)
def test_bad_specs_name_the_spec_and_the_value(spec, named):
    with pytest.raises(ValueError, match="bad Stockfish strength") as info:
        Strength.parse(spec)
    assert repr(spec) in str(info.value) and named in str(info.value)


def test_strength_to_uci_options_and_limit():
    assert Strength().uci_options() == {"Skill Level": 20, "UCI_LimitStrength": False}
    assert Strength(skill=0).uci_options() == {"Skill Level": 0, "UCI_LimitStrength": False}
    assert Strength(elo=1500).uci_options() == {"Skill Level": 20, "UCI_LimitStrength": True, "UCI_Elo": 1500}
    default = chess.engine.Limit(depth=7)
    assert Strength(skill=0).limit() == chess.engine.Limit(depth=1)
    assert Strength(skill=0).limit(default) == default
    assert Strength(skill=0, nodes=500, movetime=0.1).limit(default) == chess.engine.Limit(nodes=500, time=0.1)
    assert Strength(elo=1500).describe("Stockfish 15.1", default) == "Stockfish 15.1 (UCI_Elo 1500, depth 7)"


# -- the player --------------------------------------------------------------------------------------


@needs_stockfish
def test_player_plays_and_analyses():
    with EnginePlayer() as player:
        board = chess.Board(MATE_IN_ONE)
        assert player.play(board, chess.engine.Limit(depth=4)) == chess.Move.from_uci("a1a8")
        infos = player.analyse(board, chess.engine.Limit(depth=4), multipv=3)
        assert len(infos) == 3 and infos[0]["score"].relative == chess.engine.Mate(1)
        only = player.analyse(board, chess.engine.Limit(depth=4), root_moves=[chess.Move.from_uci("g6f6")])
        assert only["pv"][0] == chess.Move.from_uci("g6f6")
        weak = player.play(chess.Board(), strength=Strength(skill=0), game=object())  # this move only
        assert weak in chess.Board().legal_moves
        assert player.name.startswith("Stockfish") and "UCI_Elo" in player.options


@needs_stockfish
def test_elo_outside_the_engines_range_names_it():
    with EnginePlayer() as player:
        low = player.options["UCI_Elo"].min - 1
        with pytest.raises(ValueError, match=f"UCI_Elo {low} is outside"):
            player.play(chess.Board(), strength=Strength(elo=low))
    with pytest.raises(ValueError, match="sf_elo1"):
        EnginePlayer("elo=1").play(chess.Board())


@needs_stockfish
def test_a_killed_engine_is_restarted_once():
    with EnginePlayer("sf0") as player:
        player.play(chess.Board())
        victim = player.pid
        os.kill(victim, signal.SIGKILL)
        time.sleep(0.2)
        assert player.play(chess.Board()) in chess.Board().legal_moves
        assert player.pid not in (None, victim)


@needs_stockfish
def test_player_pickles_without_its_process_and_closes():
    player = EnginePlayer("sf1@d2")
    player.play(chess.Board())
    pid = player.pid
    copy = pickle.loads(pickle.dumps(player))
    assert copy.pid is None and copy.strength == player.strength
    assert copy.play(chess.Board()) in chess.Board().legal_moves and copy.pid != pid
    copy_pid = copy.pid
    player.close()
    player.close()
    assert player.pid is None and not alive(pid)
    del copy
    gc.collect()
    assert not alive(copy_pid)


@needs_stockfish
def test_no_player_process_left_at_interpreter_exit():
    code = (
        "import chess\n"
        "from chess_env.engine import EnginePlayer\n"
        "player = EnginePlayer()\n"
        "player.play(chess.Board())\n"
        "print(player.pid)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    pid = int(out.stdout)
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


# -- opponents ---------------------------------------------------------------------------------------


@needs_stockfish
def test_opponents_from_specs():
    assert make_opponent("self") is None
    assert make_opponent("stockfish", skill=3, depth=2).strength == Strength(skill=3, depth=2)
    assert make_opponent("sf:skill=0").strength == Strength(skill=0)
    with pytest.raises(ValueError, match="unknown opponent 'randm'"):
        make_opponent("randm")
    with pytest.raises(ValueError, match="skill=21"):
        make_opponent("sf:skill=21")
    with pytest.raises(ValueError, match="opponent_skill"):
        make_opponent("elo=1500", skill=3)


@needs_stockfish
def test_env_plays_a_spec_opponent_and_pickles():
    env = ChessEnv(opponent="sf:skill=0,depth=1", agent_color="black", shaping=False)
    try:
        env.reset(seed=0)
        assert len(env.board.move_stack) == 1  # the opponent, White, moved first
        copy = pickle.loads(pickle.dumps(env))
        assert copy.opponent.pid is None and copy.opponent.strength == Strength(skill=0, depth=1)
    finally:
        env.close()
