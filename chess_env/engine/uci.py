"""One Stockfish process driven over a raw UCI pipe: the transport of :class:`~chess_env.engine.StockfishPool`.

Not part of the package's public API: the pool owns these processes, and everything else plays
through :class:`~chess_env.engine.EnginePlayer`.
"""

from __future__ import annotations

import os
import select
import subprocess
import time

import chess.engine


class ProcessFailure(Exception):
    """One process failed one request (crash, hang, protocol error); the pool replaces it and retries."""


# Reset before every search: Stockfish's transposition table and history tables carry state from one
# search to the next, so the same depth-limited search can return different scores depending on what
# the process searched before (measured without a reset: 21% of 200 positions differ at depth 1, 51%
# at depth 4). `ucinewgame` runs Search::clear() (hash *and* histories; `setoption name Clear Hash` does
# the same in Stockfish 15 and costs the same), synchronously in the UCI thread, so it is pipelined in
# the same write as `position` and `go` with no `isready` round-trip. It costs a memset of the hash and
# of ~8 MB of history tables: about +0.25 ms per search with Hash=1 MB, +0.7 ms with 16 MB.
RESET = b"ucinewgame\n"

# Bound on a process start-up (loading the network), independent of the per-search watchdog, which may
# be set far shorter than a start-up on a loaded machine.
STARTUP_TIMEOUT = 30.0

# Limit fields that make a search depend on wall-clock time, hence not reproducible or cacheable.
TIMED_LIMIT_FIELDS = ("time", "white_clock", "black_clock", "white_inc", "black_inc", "remaining_moves")


def limit_key(limit: chess.engine.Limit) -> tuple[int | None, int | None, int | None]:
    """Validate a limit and return ``(depth, nodes, mate)``, the hashable part the cache keys on."""
    if not isinstance(limit, chess.engine.Limit):
        raise TypeError(f"limit must be a chess.engine.Limit, got {limit!r}")
    timed = [name for name in TIMED_LIMIT_FIELDS if getattr(limit, name) is not None]
    if timed:
        raise ValueError(
            f"limit {limit!r} uses time fields {timed}: time-limited searches are not deterministic; "
            "use depth, nodes or mate"
        )
    key = (limit.depth, limit.nodes, limit.mate)
    if all(value is None for value in key):
        raise ValueError(f"limit {limit!r} sets none of depth, nodes, mate: the search would never stop")
    for name, value in zip(("depth", "nodes", "mate"), key):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"limit {name}={value!r} must be a positive int")
    return key


def go_command(key: tuple[int | None, int | None, int | None]) -> bytes:
    """The ``go`` command of a :func:`limit_key`."""
    depth, nodes, mate = key
    parts = ["go"]
    if depth is not None:
        parts += ["depth", str(depth)]
    if nodes is not None:
        parts += ["nodes", str(nodes)]
    if mate is not None:
        parts += ["mate", str(mate)]
    return (" ".join(parts) + "\n").encode()


def request_timeout(base: float, key: tuple[int | None, int | None, int | None], lines: int = 1) -> float:
    """Watchdog for one search of ``lines`` principal variations: ``base`` plus a generous allowance.

    Depth- and node-limited searches have no clock of their own, so this is the only thing that
    notices a hung process. The allowance assumes a slow, loaded core (~50k nodes/s, the effective
    branching factor of Stockfish ~2 per two plies) so that it never fires on a healthy engine; a
    MultiPV search of ``lines`` moves costs up to ``lines`` single searches.
    """
    depth, nodes, mate = key
    extra = 0.0
    if nodes is not None:
        extra = nodes / 50_000
    else:
        plies = depth if depth is not None else 2 * (mate or 0)
        extra = 0.05 * 2 ** (plies / 2)
    return base + extra * lines


class UciProcess:
    """One single-thread Stockfish process driven over a raw UCI pipe.

    python-chess's asyncio protocol costs ~0.8 ms per ``analyse`` call, more than a whole depth-1
    search; this speaks just the few commands needed, reading the pipe with ``select`` so every read
    has a deadline. Any failure (EOF, timeout, broken pipe, a missing score) raises
    :class:`ProcessFailure` and leaves the process to be discarded: its output stream can no longer be
    trusted to be in step with the requests.
    """

    def __init__(self, path: str, hash_mb: int, reset: bytes = RESET) -> None:
        self.reset = reset
        self.multipv = 1  # the MultiPV value the requests written so far leave the process with
        self.proc = subprocess.Popen(
            [path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0
        )
        self._fd = self.proc.stdout.fileno()
        self._buf = b""
        self._options = f"setoption name Threads value 1\nsetoption name Hash value {hash_mb}\n".encode()

    def handshake(self, timeout: float) -> None:
        """Finish the UCI start-up; separate from ``__init__`` so a pool can spawn all processes first."""
        deadline = time.monotonic() + timeout
        self._write(b"uci\n")
        while self._readline(deadline) != b"uciok":
            pass
        self._write(self._options + b"isready\n")
        while self._readline(deadline) != b"readyok":
            pass

    def send(self, fen: str, go: bytes, multipv: int = 1) -> None:
        """Queue a search of ``fen`` for ``multipv`` principal variations; Stockfish runs queued
        searches one after the other.

        Its UCI loop reads the next command while a search runs, and ``ucinewgame`` waits for that
        search to end, so requests can be written ahead and the answers come back in order. For the
        same reason a ``MultiPV`` change written after the reset cannot reach the running search;
        it is written only when it differs from the previous request's.
        """
        option = b"" if multipv == self.multipv else b"setoption name MultiPV value %d\n" % multipv
        self._write(self.reset + option + b"position fen " + fen.encode() + b"\n" + go)
        self.multipv = multipv

    def receive(self, timeout: float) -> tuple[bool, int]:
        """The answer to the oldest search sent: ``(is_mate, value)`` from the side to move's view."""
        deadline = time.monotonic() + timeout
        score: tuple[bool, int] | None = None
        while True:
            line = self._readline(deadline)
            if line.startswith(b"bestmove"):
                break
            # The last score line wins, as in python-chess's analyse (it may carry a bound when a node
            # limit interrupts an aspiration re-search; the search is still deterministic).
            if line.startswith(b"info") and b" score " in line:
                tokens = line.split()
                i = tokens.index(b"score")
                try:
                    score = (tokens[i + 1] == b"mate", int(tokens[i + 2]))
                except (IndexError, ValueError) as exc:
                    raise ProcessFailure(f"unparsable score line {line!r}") from exc
        if score is None:
            raise ProcessFailure("bestmove without any score")
        return score

    def receive_lines(self, timeout: float) -> dict[bytes, tuple[bool, int]]:
        """The answer to the oldest MultiPV search sent: each line's first move (UCI) -> ``(is_mate,
        value)``, from the side to move's view.

        Stockfish prints every line after each completed iteration, and all of them once more when a
        node limit stops an iteration, so the last line of each ``multipv`` index is the deepest.
        """
        deadline = time.monotonic() + timeout
        lines: dict[int, tuple[bytes, bool, int]] = {}
        while True:
            line = self._readline(deadline)
            if line.startswith(b"bestmove"):
                break
            if line.startswith(b"info") and b" multipv " in line and b" pv " in line:
                tokens = line.split()
                try:
                    index = int(tokens[tokens.index(b"multipv") + 1])
                    i = tokens.index(b"score")
                    lines[index] = (tokens[tokens.index(b"pv") + 1], tokens[i + 1] == b"mate", int(tokens[i + 2]))
                except (IndexError, ValueError) as exc:
                    raise ProcessFailure(f"unparsable MultiPV line {line!r}") from exc
        return {move: (is_mate, value) for move, is_mate, value in lines.values()}

    def _write(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)
        except OSError as exc:  # BrokenPipeError: the process is gone
            raise ProcessFailure(f"cannot write to the engine: {exc}") from exc

    def _readline(self, deadline: float) -> bytes:
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line, self._buf = self._buf[:nl], self._buf[nl + 1 :]
                return line.rstrip(b"\r")
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._fd], [], [], remaining)[0]:
                raise ProcessFailure("timed out waiting for the engine (hung or stopped process)")
            chunk = os.read(self._fd, 65536)
            if not chunk:
                raise ProcessFailure(f"engine exited (return code {self.proc.poll()})")
            self._buf += chunk

    def close(self, grace: float = 0.5) -> None:
        """Ask the engine to quit, kill it if it does not, and always reap it (no zombies)."""
        proc = self.proc
        if proc.poll() is None:
            try:
                proc.stdin.write(b"stop\nquit\n")
            except OSError:
                pass
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()  # SIGKILL also ends a SIGSTOPped process
                proc.wait()
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


