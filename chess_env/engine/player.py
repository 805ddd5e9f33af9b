"""One Stockfish process through python-chess: moves at a strength, and analysis."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import chess
import chess.engine

from chess_env.engine.discovery import find_stockfish
from chess_env.engine.strength import Strength

T = TypeVar("T")


def _quit(engine: chess.engine.SimpleEngine) -> None:
    """Stop ``engine``; module-level so ``weakref.finalize`` holds no reference to its player."""
    try:
        engine.quit()
    except (chess.engine.EngineError, chess.engine.EngineTerminatedError, TimeoutError):
        engine.close()


# python-chess runs each SimpleEngine's event loop on a non-daemon thread, and the interpreter joins
# non-daemon threads *before* it runs atexit (and weakref.finalize) callbacks: a player left running
# would hang the exit for good. threading's own pre-join hook, the one concurrent.futures uses, stops
# the players still running first.
_RUNNING: weakref.WeakSet[EnginePlayer] = weakref.WeakSet()


def _close_running() -> None:
    for player in list(_RUNNING):
        player.close()


threading._register_atexit(_close_running)


class EnginePlayer:
    """Stockfish as a player: its move at a :class:`Strength`, and python-chess's ``analyse``.

    The player behind everything that is not batched scoring (that is
    :class:`~chess_env.engine.StockfishPool`'s job): in-env opponents (a player is a ``board ->
    chess.Move`` callable), evaluation games and baselines, and the judge of a position. Its
    process starts on first use with ``Threads=1``, ``Hash=hash_mb`` and the strength's UCI
    options; it is restarted once when it dies or breaks the protocol during a command, and stopped
    by :meth:`close`, at garbage collection or at exit (a later command starts it again). Pickling
    keeps the settings and drops the process: a copy starts its own. A process serves one command at
    a time and keeps python-chess's notion of the current game, so give each thread its own player.

    Args:
        strength: a :class:`Strength` or its spec (``"sf0"``, ``"elo=1500"``); default full strength.
        path: the Stockfish binary, resolved with :func:`~chess_env.engine.find_stockfish`.
        hash_mb: ``Hash`` in MB.

    Raises:
        ValueError: a malformed strength spec.
        EngineNotFoundError: no Stockfish binary.
    """

    def __init__(self, strength: Strength | str | None = None, path: str | os.PathLike | None = None,
                 hash_mb: int = 16) -> None:
        if isinstance(strength, str):
            strength = Strength.parse(strength)
        self.strength = strength if strength is not None else Strength()
        if not isinstance(hash_mb, int) or hash_mb < 1:
            raise ValueError(f"hash_mb={hash_mb!r} must be a positive int")
        self.path = find_stockfish(path)
        self.hash_mb = hash_mb
        self._engine: chess.engine.SimpleEngine | None = None
        self._finalizer: weakref.finalize | None = None

    def play(self, board: chess.Board, limit: chess.engine.Limit | None = None, *,
             strength: Strength | None = None, game: object = None) -> chess.Move:
        """Stockfish's move in ``board``.

        Args:
            limit: the search limit; default ``strength.limit()`` (its own limit, else depth 1).
            strength: the strength of this move only, instead of the player's (python-chess sends its
                options for this search and restores the player's afterwards).
            game: python-chess's game token: Stockfish gets ``ucinewgame`` (a cleared hash) whenever
                it differs from the previous command's. One ``object()`` per game keeps the hash within
                the game; a new one per move makes the move depend on the position alone.

        Raises:
            ValueError: ``strength.elo`` is outside this engine's ``UCI_Elo`` range.
            chess.engine.EngineError: the engine failed again after a restart, or returned no move.
        """
        strength = self.strength if strength is None else strength
        self.check(strength)
        limit = strength.limit() if limit is None else limit
        options = {} if strength == self.strength else strength.uci_options()
        result = self._call(lambda engine: engine.play(board, limit, options=options, game=game))
        if result.move is None:
            raise chess.engine.EngineError(f"Stockfish returned no move for {board.fen()!r}")
        return result.move

    def analyse(self, board: chess.Board, limit: chess.engine.Limit, *, multipv: int | None = None,
                root_moves: Iterable[chess.Move] | None = None, game: object = None) -> Any:
        """python-chess's ``analyse`` at the player's strength: an ``InfoDict``, a list of them with ``multipv``.

        ``root_moves`` restricts the search to those moves; ``game`` is as in :meth:`play`.

        Raises:
            chess.engine.EngineError: the engine failed again after a restart.
        """
        return self._call(lambda engine: engine.analyse(board, limit, multipv=multipv, root_moves=root_moves,
                                                        game=game))

    def __call__(self, board: chess.Board) -> chess.Move:
        """:meth:`play` with the player's own strength and limit: an opponent for the environment."""
        return self.play(board)

    @property
    def name(self) -> str:
        """The engine's UCI name, e.g. ``Stockfish 15.1`` (starts the process)."""
        return self._started().id.get("name", "Stockfish")

    @property
    def options(self) -> Mapping[str, chess.engine.Option]:
        """The engine's UCI options and their ranges (starts the process)."""
        return self._started().options

    @property
    def pid(self) -> int | None:
        """Process id of the running engine, None when stopped (for monitoring, and the tests)."""
        return None if self._engine is None else self._engine.transport.get_pid()

    def check(self, strength: Strength) -> None:
        """Raise ``ValueError`` unless this engine can play ``strength`` (its ``UCI_Elo`` range)."""
        if strength.elo is None:
            return
        option = self.options.get("UCI_Elo")
        if option is None:
            raise ValueError(f"this Stockfish ({self.path}) has no UCI_Elo option; cannot play {strength.name}")
        if not option.min <= strength.elo <= option.max:
            raise ValueError(f"UCI_Elo {strength.elo} is outside this Stockfish's range {option.min}-{option.max}")

    def close(self) -> None:
        """Stop the engine process, if running."""
        if self._finalizer is not None:
            self._finalizer()
        self._engine = self._finalizer = None
        _RUNNING.discard(self)

    def __enter__(self) -> EnginePlayer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_engine": None, "_finalizer": None}

    def __repr__(self) -> str:
        state = "running" if self._engine is not None else "stopped"
        return f"EnginePlayer({self.strength.name}, hash_mb={self.hash_mb}, {state})"

    def _started(self) -> chess.engine.SimpleEngine:
        if self._engine is None:
            engine = chess.engine.SimpleEngine.popen_uci(self.path)
            self._engine, self._finalizer = engine, weakref.finalize(self, _quit, engine)
            _RUNNING.add(self)
            try:
                self.check(self.strength)
                engine.configure({"Threads": 1, "Hash": self.hash_mb, **self.strength.uci_options()})
            except (ValueError, chess.engine.EngineError) as exc:
                self.close()
                raise ValueError(f"Stockfish at {self.path!r} cannot play {self.strength.name}: {exc}") from exc
        return self._engine

    def _call(self, command: Callable[[chess.engine.SimpleEngine], T]) -> T:
        """Run ``command`` on the engine; once more on a fresh process if it dies or breaks the protocol."""
        try:
            return command(self._started())
        except (chess.engine.EngineTerminatedError, chess.engine.EngineError):
            self.close()
        return command(self._started())
