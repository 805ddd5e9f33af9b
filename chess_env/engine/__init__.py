"""Stockfish, owned in one place: discovery, the scoring pool, the player, and strength specs.

Only this package starts Stockfish processes:

- :class:`StockfishPool`: single-thread processes over raw UCI pipes, for batched, cached,
  deterministic scores of positions (:meth:`~StockfishPool.evaluate`) and of every legal move
  (:meth:`~StockfishPool.evaluate_moves`); its failures are :class:`EnginePoolError`.
- :class:`EnginePlayer`: one process through python-chess, for moves at a :class:`Strength`
  (in-env opponents, evaluation games) and analysis; its failures are python-chess's.
- :func:`find_stockfish`: the binary both use, or :class:`EngineNotFoundError` saying how to install it.
"""

from chess_env.engine.discovery import INSTALL_HINT, EngineNotFoundError, find_stockfish
from chess_env.engine.player import EnginePlayer
from chess_env.engine.pool import EnginePoolError, MoveScores, Position, StockfishPool
from chess_env.engine.strength import Strength

__all__ = [
    "INSTALL_HINT",
    "EngineNotFoundError",
    "EnginePlayer",
    "EnginePoolError",
    "MoveScores",
    "Position",
    "StockfishPool",
    "Strength",
    "find_stockfish",
]
