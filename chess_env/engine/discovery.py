"""Finding a working Stockfish binary."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

DEBIAN_STOCKFISH = "/usr/games/stockfish"

INSTALL_HINT = (
    "Install Stockfish with `apt-get update && apt-get install -y stockfish` "
    "(prefix with sudo when not root; the binary lands in /usr/games/stockfish), "
    "or point STOCKFISH_PATH at a Stockfish binary."
)


class EngineNotFoundError(FileNotFoundError):
    """No working Stockfish binary could be found."""


def _check_engine(path: str) -> str:
    """Return ``path`` if it runs and speaks UCI, else raise naming it."""
    if not Path(path).is_file() or not os.access(path, os.X_OK):
        raise EngineNotFoundError(f"Stockfish path {path!r} is not an executable file. {INSTALL_HINT}")
    try:
        out = subprocess.run([path], input="uci\nquit\n", capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineNotFoundError(f"Stockfish path {path!r} does not run as a UCI engine: {exc}") from exc
    if "uciok" not in out:
        raise EngineNotFoundError(f"Stockfish path {path!r} does not answer the UCI handshake (no 'uciok').")
    return path


def find_stockfish(path: str | os.PathLike | None = None) -> str:
    """Locate a working Stockfish binary.

    Order: the explicit ``path`` argument, ``$STOCKFISH_PATH``, ``stockfish`` on ``$PATH``, then
    Debian's ``/usr/games/stockfish``. An explicitly configured path (argument or environment
    variable) that is not a working engine is an error naming that path, never a silent fallback.

    Raises:
        EngineNotFoundError: no working engine; the message says how to install one.
    """
    if path is not None:
        return _check_engine(os.fspath(path))
    env_path = os.environ.get("STOCKFISH_PATH")
    if env_path:
        return _check_engine(env_path)
    for candidate in (shutil.which("stockfish"), DEBIAN_STOCKFISH):
        if candidate and Path(candidate).is_file():
            return _check_engine(candidate)
    raise EngineNotFoundError(f"Stockfish was not found on STOCKFISH_PATH, PATH or {DEBIAN_STOCKFISH}. {INSTALL_HINT}")
