"""A trained policy as a UCI engine: ``grpo-chess uci MODEL.zip`` speaks UCI on stdin/stdout.

GUIs (Cute Chess, Arena, En Croissant), lichess-bot, cutechess-cli, fastchess and python-chess's
``chess.engine`` load it like any engine. The policy does not search: every ``go`` is answered by one
forward pass on the current position (with the game's moves, for a model with ``history`` planes),
restricted to the legal moves, so the answer is always legal and comes at once whatever the limit
(``movetime``, ``wtime``/``btime``/``winc``/``binc``, ``depth``, ``nodes``). ``go infinite`` and
``go ponder`` answer only when ``stop`` (or ``ponderhit``) arrives, as the protocol requires.

Options:

=============== ======================================================================================
``Temperature`` ``0`` (default): the most probable move; ``T > 0``: a sample from ``softmax(log p / T)``
                (``T = 1`` is the policy itself). A ``string`` option, as Lc0's, since UCI has no real type.
``Seed``        seeds the sampling generator (reset when set; default 0), so a session is reproducible.
``MultiPV``     how many of the policy's moves ``info ... multipv k`` lines show (default 1).
``Threads``     torch's intra-op threads (default 1: one core, like a single-threaded engine).
=============== ======================================================================================

What a ``go`` prints, e.g. for MultiPV 2::

    info depth 1 seldepth 1 multipv 1 nodes 1 time 3 pv e2e4
    info depth 1 seldepth 1 multipv 2 nodes 1 time 3 pv d2d4
    info string policy bestmove e2e4 p 0.3121 greedy top e2e4 0.3121 d2d4 0.2010 g1f3 0.1500 ...
    bestmove e2e4

The ``multipv`` lines rank moves by the policy's probability and carry **no score**: the policy has
no value head, and a probability dressed up as centipawns would be read as an evaluation by
cutechess-cli's draw/resign adjudication and by lichess-bot's draw offers and resignations. The
probabilities are in the ``info string``: the chosen move's, how it was chosen (``greedy`` or
``sampled T``), and the five most probable moves (with ``go searchmoves``, renormalised over those
moves). The ``bestmove`` of a sampling engine need not be the ``multipv 1`` move.

Robustness: an unknown command is reported (``info string ...``) and ignored (unknown leading tokens
are skipped, as the UCI specification asks: ``joho debug on`` is ``debug on``); a malformed command
(a bad FEN, an illegal move in ``position ... moves``, a bad option value) is reported and ignored, the
previous position or value staying in force; unknown or malformed ``go`` parameters are reported and
the move is still played, since the policy needs none of them.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

import chess
import numpy as np

from grpo_agent.evaluation.players import infer_history, policy_log_probs

TOP_MOVES = 5
"""Moves listed with their probabilities in the ``info string`` of every ``go``."""
MAX_MULTIPV = 256
MAX_SEED = 2**31 - 1
MAX_THREADS = 512
_GO_NUMBERS = ("wtime", "btime", "winc", "binc", "movestogo", "depth", "nodes", "mate", "movetime")
_GO_KEYWORDS = (*_GO_NUMBERS, "infinite", "ponder", "searchmoves")


class UciEngine:
    """The UCI protocol over one model: feed it lines with :meth:`handle` (or :meth:`run`).

    Args:
        model: an SB3 model with a masked policy (GRPO or MaskablePPO).
        name: the engine's name after ``grpo-chess`` in ``id name``.
        out: where replies go (flushed after every line).
        history: history positions of the model's observation; default inferred from the model.
    """

    def __init__(self, model: Any, name: str, out: TextIO, history: int | None = None) -> None:
        self.model = model
        self.name = name
        self.out = out
        self.history = infer_history(model) if history is None else history
        self.board = chess.Board()
        self.temperature = 0.0
        self.multipv = 1
        self.rng = np.random.default_rng(0)
        self._pending: str | None = None  # the bestmove line of a go infinite / go ponder
        self._commands: dict[str, Callable[[list[str]], None]] = {
            "uci": self._uci, "isready": lambda _: self._send("readyok"), "ucinewgame": self._ucinewgame,
            "position": self._position, "go": self._go, "stop": self._stop, "ponderhit": self._stop,
            "setoption": self._setoption, "debug": lambda _: None, "register": lambda _: None,
        }

    def run(self, lines: Iterable[str]) -> None:
        """Handle ``lines`` until ``quit`` or their end."""
        for line in lines:
            if not self.handle(line):
                return

    def handle(self, line: str) -> bool:
        """Handle one line; ``False`` after ``quit``. Never raises but for a closed output (``BrokenPipeError``)."""
        tokens = line.split()
        skipped = 0
        while skipped < len(tokens) and tokens[skipped] not in self._commands and tokens[skipped] != "quit":
            skipped += 1
        if skipped == len(tokens):
            if tokens:
                self._info(f"unknown command: {_clip(line)}")
            return True
        if skipped:
            self._info(f"ignored unknown token(s) before {tokens[skipped]!r}: {_clip(' '.join(tokens[:skipped]))}")
        command, args = tokens[skipped], tokens[skipped + 1:]
        if command == "quit":
            return False
        if self._pending is not None and command in ("position", "go", "ucinewgame"):
            self._info(f"{command} while searching: stopping the search first")
            self._stop([])
        try:
            self._commands[command](args)
        except BrokenPipeError:
            raise
        except Exception as exc:  # noqa: BLE001 - an engine reports and carries on, it never dies on input
            self._info(f"error in {command}: {type(exc).__name__}: {_clip(str(exc))}")
        return True

    # -- commands -------------------------------------------------------------------------------

    def _uci(self, _: list[str]) -> None:
        self._send(f"id name grpo-chess {self.name}")
        self._send("id author grpo-chess")
        self._send("option name Temperature type string default 0")
        self._send(f"option name Seed type spin default 0 min 0 max {MAX_SEED}")
        self._send(f"option name MultiPV type spin default 1 min 1 max {MAX_MULTIPV}")
        self._send(f"option name Threads type spin default 1 min 1 max {MAX_THREADS}")
        self._send("uciok")

    def _ucinewgame(self, _: list[str]) -> None:
        self.board = chess.Board()

    def _position(self, args: list[str]) -> None:
        moves_at = args.index("moves") if "moves" in args else len(args)
        head, moves = args[:moves_at], args[moves_at + 1:]
        if head == ["startpos"]:
            board = chess.Board()
        elif head[:1] == ["fen"] and len(head) > 1:
            try:
                board = chess.Board(" ".join(head[1:]))
            except ValueError as exc:
                return self._info(f"position ignored: bad FEN {' '.join(head[1:])!r} ({exc})")
            if not board.is_valid():
                return self._info(f"position ignored: {board.fen()!r} is not a legal chess position")
        else:
            return self._info(f"position ignored: expected 'startpos' or 'fen <FEN>', got {_clip(' '.join(head))!r}")
        for uci in moves:
            try:
                move = board.parse_uci(uci)
            except ValueError:
                move = chess.Move.null()
            if not move:
                return self._info(f"position ignored: {uci!r} is not a legal move in {board.fen()!r}")
            board.push(move)
        self.board = board

    def _go(self, args: list[str]) -> None:
        problems: list[str] = []
        searchmoves: list[chess.Move] | None = None
        wait_for_stop = False
        i = 0
        while i < len(args):
            token = args[i]
            i += 1
            if token in _GO_NUMBERS:
                value = args[i] if i < len(args) and args[i] not in _GO_KEYWORDS else None
                i += value is not None
                if value is None or not _is_int(value):
                    problems.append(f"{token} needs an integer, got {value!r}")
            elif token in ("infinite", "ponder"):
                wait_for_stop = True
            elif token == "searchmoves":
                searchmoves = []
                while i < len(args) and args[i] not in _GO_KEYWORDS:
                    try:
                        move = self.board.parse_uci(args[i])
                    except ValueError:
                        move = chess.Move.null()
                    if move:
                        searchmoves.append(move)
                    else:
                        problems.append(f"searchmove {args[i]} is not a legal move")
                    i += 1
            else:
                problems.append(f"unknown parameter {token!r}")
        if problems:
            self._info(f"go: ignored: {_clip('; '.join(problems))}")
        bestmove = f"bestmove {self._choose(searchmoves)}"
        if wait_for_stop:
            self._pending = bestmove
        else:
            self._send(bestmove)

    def _stop(self, _: list[str]) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._send(pending)

    def _setoption(self, args: list[str]) -> None:
        if args[:1] != ["name"]:
            return self._info("setoption ignored: expected 'setoption name <id> [value <x>]'")
        value_at = args.index("value") if "value" in args else len(args)
        name, value = " ".join(args[1:value_at]).lower(), " ".join(args[value_at + 1:])
        setters = {"temperature": self._set_temperature, "seed": self._set_seed, "multipv": self._set_multipv,
                   "threads": self._set_threads}
        if name not in setters:
            return self._info(f"setoption ignored: no option {name!r}")
        if not setters[name](value):
            self._info(f"setoption ignored: bad value {value!r} for {name}")

    # -- options: each returns False for a bad value, leaving the option as it was ------------------

    def _set_temperature(self, value: str) -> bool:
        try:
            temperature = float(value)
        except ValueError:
            return False
        if not (math.isfinite(temperature) and temperature >= 0):
            return False
        self.temperature = temperature
        return True

    def _set_seed(self, value: str) -> bool:
        if not (_is_int(value) and 0 <= int(value) <= MAX_SEED):
            return False
        self.rng = np.random.default_rng(int(value))
        return True

    def _set_multipv(self, value: str) -> bool:
        if not (_is_int(value) and 1 <= int(value) <= MAX_MULTIPV):
            return False
        self.multipv = int(value)
        return True

    def _set_threads(self, value: str) -> bool:
        if not (_is_int(value) and 1 <= int(value) <= MAX_THREADS):
            return False
        import torch

        torch.set_num_threads(int(value))
        return True

    # -- the move -------------------------------------------------------------------------------

    def _choose(self, searchmoves: list[chess.Move] | None) -> str:
        """Print the ``info`` lines of the current position and return the chosen move (``(none)`` if none)."""
        if not any(self.board.legal_moves):
            self._info("no legal move: the game is over")
            return "(none)"
        started = time.perf_counter()
        moves, log_probs = policy_log_probs(self.model, self.board, self.history)
        if searchmoves:  # empty when none was legal: then every move, as if none had been given
            keep = [i for i, move in enumerate(moves) if move in searchmoves]
            moves, log_probs = [moves[i] for i in keep], log_probs[keep]
            log_probs = log_probs - np.logaddexp.reduce(log_probs)
        probs = np.exp(log_probs)
        order = np.argsort(-probs, kind="stable")
        if self.temperature == 0:
            chosen, how = int(order[0]), "greedy"
        else:
            tempered = np.exp((log_probs - log_probs.max()) / self.temperature)
            chosen, how = int(self.rng.choice(len(moves), p=tempered / tempered.sum())), f"sampled {self.temperature:g}"
        elapsed = round(1000 * (time.perf_counter() - started))
        for k, index in enumerate(order[: self.multipv], start=1):
            self._send(f"info depth 1 seldepth 1 multipv {k} nodes 1 time {elapsed} pv {moves[index].uci()}")
        top = " ".join(f"{moves[i].uci()} {probs[i]:.4f}" for i in order[:TOP_MOVES])
        self._info(f"policy bestmove {moves[chosen].uci()} p {probs[chosen]:.4f} {how} top {top}")
        return moves[chosen].uci()

    # -- output ---------------------------------------------------------------------------------

    def _send(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def _info(self, text: str) -> None:
        self._send(f"info string {text}")


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _clip(text: str, limit: int = 200) -> str:
    """``text`` on one printable line of at most ``limit`` characters: echoed garbage must not break the protocol."""
    text = "".join(c if c.isprintable() else "?" for c in " ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def serve(model: Any, name: str, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
    """Run :class:`UciEngine` on ``stdin``/``stdout`` (default the process's) until ``quit`` or end of input.

    torch starts on one thread (the ``Threads`` option's default). Undecodable input bytes are
    replaced, not fatal; a closed output ends the engine quietly.
    """
    import torch

    torch.set_num_threads(1)
    stdin = stdin if stdin is not None else sys.stdin
    stdout = stdout if stdout is not None else sys.stdout
    if hasattr(stdin, "reconfigure"):
        stdin.reconfigure(errors="replace")
    try:
        UciEngine(model, name, stdout).run(iter(stdin.readline, ""))
    except BrokenPipeError:
        pass
