"""Shared test set-up and helpers (``from conftest import ...``: pytest puts this folder on the path)."""

import os
import random
from pathlib import Path

import chess
import pytest
import torch

# Before anything imports Ray (it reads them then): no usage reports, and every Ray listener on 127.0.0.1. Ray
# binds its servers to the node's address, which on Linux is the outward one even when 127.0.0.1 is asked for
# (``ray start --node-ip-address=127.0.0.1`` resolves it back); this switch, meant for laptops, makes the node
# address the loopback one. The tests' Ray and their ``ray start`` clusters are reachable from this machine only.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

from chess_env.engine import EngineNotFoundError, find_stockfish

try:
    STOCKFISH: str | None = find_stockfish()
except EngineNotFoundError:  # tests that need no engine still run
    STOCKFISH = None
needs_stockfish = pytest.mark.skipif(STOCKFISH is None, reason="Stockfish is not installed")


def random_boards(n: int, seed: int, history: bool = False) -> list[chess.Board]:
    """Distinct non-terminal positions from seeded random play: with ``history``, each with its moves on
    the stack; otherwise without them and with the move counters normalised to ``0 1``.

    The pool never sends the counters (it sends the EPD plus ``0 1``) because Stockfish's evaluation
    looks at the 50-move counter; normalising them here lets python-chess send the same position.
    """
    rng = random.Random(seed)
    boards, seen = [], set()
    while len(boards) < n:
        board = chess.Board()
        for _ in range(rng.randint(4, 40)):
            board.push(rng.choice(list(board.legal_moves)))
            if board.is_game_over():
                break
        if not board.is_game_over() and board._transposition_key() not in seen:
            seen.add(board._transposition_key())
            boards.append(board if history else chess.Board(board.epd() + " 0 1"))
    return boards


# Two rows in the Lichess puzzle database format (FEN before the opponent's move).
PUZZLE_CSV = """\
PuzzleId,FEN,Moves,Rating,RatingDeviation,Popularity,NbPlays,Themes,GameUrl,OpeningTags
00sHx,q3k1nr/1pp1nQpp/3p4/1P2p3/4P3/B1PP1b2/B5PP/5K2 b k - 0 17,e8d7 a2e6 d7d8 f7f8,1760,80,83,72,mate mateIn2 middlegame short,https://lichess.org/yyznGmXs/black#34,Italian_Game Italian_Game_Classical_Variation
00sJ9,r3r1k1/p4ppp/2p2n2/1p6/3P1qb1/2NQR3/PPB2PP1/R1B3K1 w - - 5 18,e3g3 e8e1 g1h2 e1c1 a1c1 f4h6 h2g1 h6c1,2671,105,87,325,advantage attraction fork long sacrifice veryLong,https://lichess.org/gyFeQsOE#35,French_Defense French_Defense_Exchange_Variation
"""


def alive(pid: int) -> bool:
    """True while ``pid`` exists, zombies included (a reaped child has no /proc entry)."""
    return Path(f"/proc/{pid}").exists()


def save_tiny_model(path, history: int = 0, sharpen: float = 1.0) -> str:
    """Save an untrained 1-block, 8-channel GRPO model at ``path``; ``sharpen`` scales its policy head
    (the policy is near uniform at 1). Returns the path as a string."""
    from chess_env.vector import ChessVectorEnv
    from grpo_agent import GRPO

    model = GRPO("ChessResNetPolicy", ChessVectorEnv(4, shaping=False, history=history), group_size=2, seed=0,
                 policy_kwargs=dict(features_extractor_kwargs=dict(n_blocks=1, channels=8)))
    with torch.no_grad():
        for parameter in model.policy.action_net.parameters():
            parameter.mul_(sharpen)
    model.save(path)
    return str(path)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    # Two cores shared with Stockfish processes: torch's default thread pool oversubscribes them
    # (a small conv ran 8x slower under contention), so tests run torch on one thread.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole run (2 CPUs, no dashboard), shut down at the end."""
    import ray

    from grpo_agent.distributed import init_ray

    init_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def puzzle_csv(tmp_path) -> Path:
    """A two-puzzle file in Lichess's CSV layout (:data:`PUZZLE_CSV`)."""
    path = tmp_path / "puzzles.csv"
    path.write_text(PUZZLE_CSV)
    return path
