"""A deterministic, cached, fault-tolerant pool of Stockfish processes for batched scoring."""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple, NoReturn, Union

import chess
import chess.engine

from chess_env.engine.discovery import find_stockfish
from chess_env.engine.uci import (
    STARTUP_TIMEOUT,
    ProcessFailure,
    UciProcess,
    go_command,
    limit_key,
    request_timeout,
)


class EnginePoolError(RuntimeError):
    """A pool's engine crashed, hung or broke the UCI protocol, and retrying on fresh processes failed.

    Not python-chess's ``chess.engine.EngineError``, which :class:`~chess_env.engine.EnginePlayer` raises.
    """


# Requests written ahead to each process (see StockfishPool._drive). 16 depth-1 searches last ~5 ms,
# a GIL switch interval; the requests are ~130 bytes each, far below a pipe's buffer.
_WINDOW = 16


def _shutdown(engines: list[UciProcess | None], threads: list[ThreadPoolExecutor]) -> None:
    """Close everything a pool owns. Module-level so ``weakref.finalize`` holds no reference to the pool."""
    for thread in threads:
        thread.shutdown(wait=True)  # lets a batch in flight finish first
    for i, engine in enumerate(engines):
        if engine is not None:
            engine.close()
            engines[i] = None


class Position(NamedTuple):
    """A position for :meth:`StockfishPool.submit`, encoded by its caller instead of the pool.

    What the pool would read from a board: a caller that has these at hand already (the env makes
    them once per ply, for its own views too) saves the pool building them again. The pool trusts a
    ``Position``: it must be valid and have a legal move, which the pool checks for a board.
    :func:`position` is the reference encoding.
    """

    key: Hashable
    """``board._transposition_key()``, what the cache keys on."""
    epd: str
    """``board.epd()``: pieces, side to move, castling rights, legal en-passant square (no move counters)."""
    turn: chess.Color
    """The side to move, the point of view of the score."""


def position(board: chess.Board) -> Position:
    """The :class:`Position` of ``board``, as the pool itself encodes a board."""
    return Position(board._transposition_key(), board.epd(), board.turn)


MoveScores = dict[chess.Move, chess.engine.PovScore]
"""A score for every legal move of a position, each from the point of view of that position's mover."""
_Result = Union[chess.engine.PovScore, MoveScores]


class _Job(NamedTuple):
    """One search of a batch, taken from its board in the submitting thread: the pool's threads never
    read a ``chess.Board``, which the caller may be changing (``is_repetition()`` pops and pushes moves).
    ``legal`` is None for a position score, else the moves a MultiPV search scores."""

    key: tuple
    fen: str
    turn: chess.Color
    legal: tuple[chess.Move, ...] | None
    timeout: float


def _move_scores(lines: dict[bytes, tuple[bool, int]], legal: tuple[chess.Move, ...], turn: chess.Color) -> MoveScores:
    """The MultiPV answer as a score per legal move; a move missing or unknown fails the process."""
    by_uci = {move.uci().encode(): move for move in legal}
    if lines.keys() != by_uci.keys():
        missing = sorted(m.decode() for m in by_uci.keys() - lines.keys())
        unknown = sorted(m.decode() for m in lines.keys() - by_uci.keys())
        raise ProcessFailure(
            f"MultiPV lines do not cover the legal moves: missing {missing}, unknown {unknown} "
            "(a node limit too small to finish depth 1 over every move leaves some unscored)"
        )
    return {
        by_uci[uci]: chess.engine.PovScore(chess.engine.Mate(value) if is_mate else chess.engine.Cp(value), turn)
        for uci, (is_mate, value) in lines.items()
    }


def _send(engine: UciProcess, job: _Job, go: bytes) -> None:
    engine.send(job.fen, go, 1 if job.legal is None else len(job.legal))


class _Batch:
    """The searches of one submitted batch, shared by the slot threads that run them."""

    def __init__(
        self,
        todo: list[_Job],
        workers: int,
        go: bytes,
        results: list[_Result | None],
        pending: dict[tuple, list[int]],
        moves: bool = False,
    ) -> None:
        self.jobs = iter(todo)
        # Requests each worker writes ahead: no more than its share, or the first worker to start
        # would take a small batch all to itself.
        self.window = min(_WINDOW, -(-len(todo) // workers)) if workers else 0
        self.take = threading.Lock()  # guards ``jobs``, ``errors`` and ``running``
        self.stop = threading.Event()  # set on a failure or an interrupt: no more jobs are taken
        self.go = go
        self.moves = moves  # results are per-move dicts, copied for each board
        self.found: dict[tuple, _Result] = {}
        self.errors: list[BaseException] = []
        self.running = workers
        self.results = results  # one per board, filled in by key from ``found`` at the end
        self.pending = pending  # key searched -> indices of the boards waiting for it
        self.future: Future[list] = Future()

    def next_job(self) -> _Job | None:
        with self.take:
            return None if self.stop.is_set() else next(self.jobs, None)

    def worker_done(self, error: BaseException | None) -> bool:
        """Record one worker's end; True for the last one, which finishes the batch."""
        with self.take:
            if error is not None:
                self.errors.append(error)
                self.stop.set()
            self.running -= 1
            return self.running == 0


class StockfishPool:
    """Evaluate batches of positions on a pool of single-thread Stockfish processes.

    Each position is searched by one process with ``Threads=1`` after ``ucinewgame`` (which clears
    the hash and the history tables), so a depth- or node-limited score is a function of the position
    and the limit alone: the same whichever process searches it and whatever it searched before. The
    position sent is the board's EPD with the move counters normalised to ``0 1``: the score depends
    only on what the cache keys on (pieces, side to move, castling rights, legal en-passant square);
    repetitions and the 50-move counter are the rules' business, not the engine's.

    Results are kept in an LRU cache keyed by ``(board._transposition_key(), (depth, nodes, mate))``;
    duplicates within a batch are searched once. A crashed or hung process (the watchdog fires after
    ``timeout`` seconds plus an allowance for the search size) is replaced and the request retried,
    at most ``max_retries`` times before :class:`EnginePoolError`; failures are never cached.

    :meth:`submit` starts a batch and returns a :class:`~concurrent.futures.Future` at once, so the
    caller can work while the engines search; :meth:`evaluate` is ``submit(...).result()``.
    :meth:`submit_moves` / :meth:`evaluate_moves` score every legal move of each board instead, with
    one MultiPV search per board (cached under ``(key, limit, "moves")``). Each
    process is driven by its own thread, so the pool is thread-safe (batches queue per process in
    submission order). It is not picklable (re-create it in each process) and POSIX-only (pipes are
    read with ``select``).

    Args:
        processes: engine processes; default ``os.cpu_count()``.
        path: Stockfish binary, resolved with :func:`find_stockfish`.
        hash_mb: ``Hash`` per process in MB. It is cleared before every search, and the clear costs
            time in proportion (measured: +0.2 ms per search at 1 MB, +0.6 ms at 16 MB, against a
            0.2 ms depth-1 search), while searches of a few thousand nodes do not fill even 1 MB.
        cache_size: LRU capacity in positions; ``0`` disables the cache (every board is searched).
        timeout: base watchdog per search, in seconds.
        max_retries: fresh processes to try a request on after a failure.

    Example:
        >>> with StockfishPool(processes=2) as pool:  # doctest: +SKIP
        ...     score = pool.evaluate([chess.Board()], chess.engine.Limit(depth=8))[0]
        ...     score.relative  # the side to move's view: Cp(...) or Mate(...)
    """

    def __init__(
        self,
        processes: int | None = None,
        path: str | os.PathLike | None = None,
        hash_mb: int = 1,
        cache_size: int = 200_000,
        timeout: float = 10.0,
        max_retries: int = 2,
    ) -> None:
        if processes is None:
            processes = os.cpu_count() or 1
        if not isinstance(processes, int) or processes < 1:
            raise ValueError(f"processes={processes!r} must be a positive int")
        if not isinstance(hash_mb, int) or hash_mb < 1:
            raise ValueError(f"hash_mb={hash_mb!r} must be a positive int")
        if not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"cache_size={cache_size!r} must be a non-negative int")
        if not timeout > 0:
            raise ValueError(f"timeout={timeout!r} must be positive")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries={max_retries!r} must be a non-negative int")
        self.path = find_stockfish(path)
        self.processes = processes
        self.hash_mb = hash_mb
        self.cache_size = cache_size
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.cache_hits = 0
        self.cache_misses = 0
        self.engine_calls = 0
        self.engine_restarts = 0
        self._cache: OrderedDict[tuple, _Result] = OrderedDict()
        # Guards the cache, the counters and ``_closed``; held briefly, never while waiting for a search.
        self._lock = threading.Lock()
        self._closed = False
        self._queued = [0] * processes  # batches queued on or running in each slot's thread
        self._engines: list[UciProcess | None] = [None] * processes
        # One thread per process, the only one that talks to it: batches queue per process in
        # submission order, and pipe I/O releases the GIL, so the searches run truly in parallel
        # with each other and with the caller's own work while a submitted batch runs.
        self._threads = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"stockfish-{i}") for i in range(processes)
        ]
        self._finalizer = weakref.finalize(self, _shutdown, self._engines, self._threads)
        try:
            # Spawn all, then handshake all: the start-ups (loading the network) overlap.
            for i in range(processes):
                self._engines[i] = UciProcess(self.path, hash_mb)
            for engine in self._engines:
                engine.handshake(STARTUP_TIMEOUT)
        except (OSError, ProcessFailure) as exc:
            self.close()
            raise EnginePoolError(f"could not start Stockfish at {self.path!r}: {exc}") from exc

    # -- public API ---------------------------------------------------------------------------------

    def submit(
        self, boards: Sequence[chess.Board | Position], limit: chess.engine.Limit
    ) -> Future[list[chess.engine.PovScore]]:
        """Start scoring ``boards`` and return at once; the future's result is :meth:`evaluate`'s.

        The cache lookups, the validation and the deduplication happen here, in the caller's thread;
        the searches run on the pool's threads while the caller goes on with other work. All that the
        searches need is read from the boards here, so the caller may use and change them at once.
        Batches submitted before an earlier one is done queue behind it (and do not see its results
        in the cache). An entry may be a :class:`Position` the caller encoded (not validated), in
        place of a board; :meth:`evaluate` takes them too.

        Raises:
            ValueError: as :meth:`evaluate`, at once.
            RuntimeError: the pool is closed.

        The future raises :class:`EnginePoolError` as :meth:`evaluate` does.
        """
        return self._submit(boards, limit, moves=False).future

    def evaluate(
        self, boards: Sequence[chess.Board | Position], limit: chess.engine.Limit
    ) -> list[chess.engine.PovScore]:
        """Score every board with the same limit, spreading the searches over the processes.

        Returns one :class:`chess.engine.PovScore` per board, from the point of view of the side to
        move on that board (``score.relative`` is the mover's score). Same as
        ``submit(boards, limit).result()``, except that an interrupt (``KeyboardInterrupt``) while
        waiting stops the batch once the searches already sent to the processes are answered.

        Raises:
            ValueError: a board has no legal moves (checkmate or stalemate: score it by the rules) or is
                not a valid position; the message names its FEN. A time-based limit.
            EnginePoolError: a position failed on ``max_retries + 1`` processes in a row; names the position.
        """
        return self._wait(self._submit(boards, limit, moves=False))

    def submit_moves(self, boards: Sequence[chess.Board], limit: chess.engine.Limit) -> Future[list[MoveScores]]:
        """Start scoring every legal move of each board and return at once; see :meth:`evaluate_moves`.

        Validation, cache lookups and deduplication happen in the caller's thread, and the boards may be
        changed as soon as this returns, as with :meth:`submit`.

        Raises:
            ValueError: as :meth:`evaluate`, at once.
            RuntimeError: the pool is closed.

        The future raises :class:`EnginePoolError` as :meth:`evaluate_moves` does.
        """
        return self._submit(boards, limit, moves=True).future

    def evaluate_moves(self, boards: Sequence[chess.Board], limit: chess.engine.Limit) -> list[MoveScores]:
        """Score every legal move of each board with one MultiPV search per board.

        Each board is searched once with ``MultiPV`` set to its number of legal moves, so Stockfish
        scores every root move to ``limit`` (after ``ucinewgame``, as :meth:`evaluate`: the scores are a
        function of the position and the limit). Returns one dict per board, ``{move: score}`` over all
        its legal moves, each :class:`chess.engine.PovScore` from the point of view of the side to move
        on that board (``score.relative`` is how good the move is for the mover). A move's score is
        that of its line in the deepest iteration Stockfish completed (or, under a node limit, the last
        it printed), so the best move's score agrees with :meth:`evaluate` of the board up to the
        difference MultiPV makes to the search (none at depth 1; measured at depth 5, a median of
        under 60 cp). Results are cached apart from :meth:`evaluate`'s, under the same counters; each
        board gets its own dict. A node limit must let Stockfish finish depth 1 over every move (about
        60 nodes a move; 3000 for the 48 moves of Kiwipete), or the moves it did not reach fail the search.

        Raises:
            ValueError, EnginePoolError: as :meth:`evaluate`. A search whose lines do not cover every legal
                move counts as a failure of that process and is retried.
        """
        return self._wait(self._submit(boards, limit, moves=True))

    @staticmethod
    def _wait(batch: _Batch) -> list:
        try:
            return batch.future.result()
        except BaseException:
            batch.stop.set()
            raise

    def _submit(self, boards: Sequence[chess.Board | Position], limit: chess.engine.Limit, moves: bool) -> _Batch:
        lkey = limit_key(limit)
        if not boards:
            batch = _Batch([], 0, b"", [], {})
            batch.future.set_result([])
            return batch
        tag = ("moves",) if moves else ()
        with self._lock:
            if self._closed:
                raise RuntimeError("StockfishPool is closed")
            results: list[_Result | None] = [None] * len(boards)
            # Unique positions still to search -> indices of the boards waiting for them.
            pending: dict[tuple, list[int]] = {}
            todo: list[_Job] = []
            use_cache = self.cache_size > 0
            hits = 0  # counted once the whole batch is validated
            for i, board in enumerate(boards):
                encoded = type(board) is Position
                if encoded and moves:
                    raise ValueError("submit_moves() needs boards (it generates their legal moves), not Positions")
                key = (board.key if encoded else board._transposition_key(), lkey, *tag)
                if use_cache:
                    cached = self._cache.get(key)
                    if cached is not None:
                        self._cache.move_to_end(key)
                        results[i] = dict(cached) if moves else cached
                        hits += 1
                        continue
                    waiting = pending.get(key)
                    if waiting is not None:  # a duplicate in this batch: searched once
                        waiting.append(i)
                        hits += 1
                        continue
                    pending[key] = [i]
                else:
                    key = (key, i)  # no sharing at all when the cache is off
                    pending[key] = [i]
                if not encoded:
                    self._check_searchable(board)
                legal = tuple(board.generate_legal_moves()) if moves else None
                timeout = request_timeout(self.timeout, lkey, len(legal) if legal else 1)
                # The move counters are not sent: see the class docstring.
                todo.append(_Job(key, (board.epd if encoded else board.epd()) + " 0 1", board.turn, legal, timeout))
            self.cache_hits += hits
            self.cache_misses += len(todo)

            workers = min(self.processes, len(todo))
            batch = _Batch(todo, workers, go_command(lkey), results, pending, moves)
            if not todo:
                batch.future.set_result(results)
            # The first requests are written here: the slot threads need the GIL to write, and the
            # caller, busy in Python right after this call, would hold it for up to 5 ms.
            idle = [slot for slot in range(workers) if self._queued[slot] == 0]
            try:
                ahead = self._send_ahead(idle, batch)
            except BaseException:
                # Interrupted between a write and its bookkeeping: the processes may hold requests no
                # one will read, whose answers would be taken for the next batch's.
                for slot in idle:
                    self._discard(slot)
                raise
            for slot in range(workers):
                self._queued[slot] += 1
                self._threads[slot].submit(self._work, slot, batch, *ahead.get(slot, (deque(), 0)))
            return batch

    def _send_ahead(self, slots: list[int], batch: _Batch) -> dict[int, tuple[deque, int]]:
        """Take up to ``batch.window`` jobs for each idle slot and send them to its process, round-robin.

        Returns each slot's taken jobs and how many were sent; a process found dead here is left to
        its slot's thread to replace (it sends the rest again).
        """
        ahead: dict[int, tuple[deque, int]] = {slot: (deque(), 0) for slot in slots}
        for _ in range(batch.window):
            for slot in slots:
                job = batch.next_job()
                if job is None:
                    return ahead
                taken, sent = ahead[slot]
                taken.append(job)
                engine = self._engines[slot]
                if engine is not None and sent == len(taken) - 1:
                    try:
                        _send(engine, taken[-1], batch.go)
                        ahead[slot] = (taken, sent + 1)
                    except ProcessFailure:
                        pass
        return ahead

    def evaluate_one(self, board: chess.Board, limit: chess.engine.Limit) -> chess.engine.PovScore:
        """Score a single board; see :meth:`evaluate`."""
        return self.evaluate([board], limit)[0]

    def clear_cache(self) -> None:
        """Empty the cache; the counters are kept."""
        with self._lock:
            self._cache.clear()

    @property
    def cache_hit_rate(self) -> float:
        """``cache_hits / (cache_hits + cache_misses)``, 0.0 before any lookup."""
        total = self.cache_hits + self.cache_misses
        return self.cache_hits / total if total else 0.0

    @property
    def pids(self) -> list[int]:
        """Process ids of the live engine processes (for monitoring, and the tests)."""
        return [engine.proc.pid for engine in self._engines if engine is not None]

    def close(self) -> None:
        """Stop every engine process and wait for it; idempotent. Also runs at garbage collection and exit.

        Waits for a batch in flight to finish first.
        """
        with self._lock:
            self._closed = True
        # Not under the lock: the batch in flight needs it to finish.
        self._finalizer()

    def __enter__(self) -> StockfishPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> NoReturn:
        raise TypeError(
            "StockfishPool is not picklable (it owns engine processes and threads); "
            "create a new pool in each process instead"
        )

    def __repr__(self) -> str:
        state = "open" if self._finalizer.alive else "closed"
        return (
            f"StockfishPool(processes={self.processes}, hash_mb={self.hash_mb}, cache_size={self.cache_size}, "
            f"{state}, hits={self.cache_hits}, misses={self.cache_misses}, engine_calls={self.engine_calls})"
        )

    # -- internals ----------------------------------------------------------------------------------

    @staticmethod
    def _check_searchable(board: chess.Board) -> None:
        # Stockfish's behaviour on an illegal setup (no king, side not to move in check) is undefined.
        if not board.is_valid():
            raise ValueError(f"invalid position {board.fen()!r}: {board.status()!r}")
        if not any(board.generate_legal_moves()):
            raise ValueError(
                f"position {board.fen()!r} has no legal moves (checkmate or stalemate): "
                "score terminal positions by the rules, not the engine"
            )

    def _work(self, slot: int, batch: _Batch, taken: deque, sent: int) -> None:
        """Run on slot ``slot``'s thread: search jobs of ``batch`` until none is left; the last worker
        to stop finishes the batch."""
        error: BaseException | None = None
        try:
            self._drive(slot, batch, taken, sent)
        except BaseException as exc:  # handed to the caller through the future
            error = exc
        with self._lock:
            self._queued[slot] -= 1  # this thread is done with the process: the next caller may write
        if batch.worker_done(error):
            self._finish(batch)

    def _drive(self, slot: int, batch: _Batch, taken: deque, sent: int) -> None:
        """Search jobs of ``batch`` on process ``slot``, keeping up to ``batch.window`` queued in it.

        Writing ahead keeps the process busy while this thread waits for the GIL: a caller busy in
        Python holds it for up to ``sys.getswitchinterval()`` (5 ms) at a time, dozens of depth-1
        searches, and one request at a time would leave the process idle meanwhile. A failure is
        charged to the oldest request (the one being searched); the process is replaced, the
        requests it held are sent again, and after ``max_retries`` replacements in a row the oldest
        request fails the batch with :class:`EnginePoolError`. Once the batch is stopped (another
        worker failed), the requests already sent are still answered, so the process stays in step.
        """
        # ``taken``: jobs not answered yet, oldest first; ``sent``: how many of them the current process
        # holds (the caller may have sent the first ones, see _send_ahead).
        failures = 0  # in a row, while ``taken[0]`` was the oldest request
        while True:
            while len(taken) < batch.window and (job := batch.next_job()) is not None:
                taken.append(job)
            if not taken:
                return
            job = taken[0]
            try:
                engine = self._engines[slot]
                if engine is None:
                    engine = self._respawn(slot)
                while sent < len(taken):
                    _send(engine, taken[sent], batch.go)
                    sent += 1
                if job.legal is None:
                    is_mate, value = engine.receive(job.timeout)
                    result: _Result = chess.engine.PovScore(
                        chess.engine.Mate(value) if is_mate else chess.engine.Cp(value), job.turn
                    )
                else:
                    result = _move_scores(engine.receive_lines(job.timeout), job.legal, job.turn)
            except ProcessFailure as exc:
                self._discard(slot)
                sent = 0
                failures += 1
                if failures > self.max_retries:
                    raise EnginePoolError(
                        f"Stockfish failed on position {job.fen!r} ({batch.go.decode().strip()}) "
                        f"{failures} times in a row; last error: {exc}"
                    ) from exc
                continue
            except BaseException:
                # Interrupted mid-search: the process's output is out of step with the requests.
                self._discard(slot)
                raise
            taken.popleft()
            sent -= 1
            failures = 0
            batch.found[job.key] = result

    def _finish(self, batch: _Batch) -> None:
        # Searches that finished are valid even when another failed: count and cache them first.
        with self._lock:
            self.engine_calls += len(batch.found)
            if self.cache_size > 0:
                self._cache.update(batch.found)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        if batch.errors:
            batch.future.set_exception(batch.errors[0])
            return
        for key, result in batch.found.items():
            for i in batch.pending[key]:
                batch.results[i] = dict(result) if batch.moves else result
        batch.future.set_result(batch.results)

    def _discard(self, slot: int) -> None:
        engine = self._engines[slot]
        if engine is not None:
            self._engines[slot] = None
            engine.close(grace=0.0)

    def _respawn(self, slot: int) -> UciProcess:
        try:
            engine = UciProcess(self.path, self.hash_mb)
        except OSError as exc:
            raise ProcessFailure(f"cannot start {self.path!r}: {exc}") from exc
        self._engines[slot] = engine
        with self._lock:
            self.engine_restarts += 1
        engine.handshake(STARTUP_TIMEOUT)
        return engine
