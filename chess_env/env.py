"""ChessEnv: one game of chess as a Gymnasium environment, with Stockfish reward shaping."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, NamedTuple

import chess
import chess.engine
import chess.pgn
import gymnasium as gym
import numpy as np

from chess_env.encoding import N_ACTIONS, BoardEncoding, decode_action, observation_channels
from chess_env.engine.pool import Position
from chess_env.opponents import OpponentSpec, RandomOpponent, make_opponent
from chess_env.positions import PositionSet, load_positions
from chess_env.rewards import MATE_BAND, REWARD_TRANSFORMS, score_value
from chess_env.rules import DRAW_RULES, game_outcome, result_for

AGENT_COLORS = ("white", "black", "alternate")
ILLEGAL_ACTIONS = ("lose", "raise")
START_ATTEMPTS = 100
"""Start positions a reset draws, at most, before refusing a set whose every start the opponent's reply ends."""
GAME_STATE_KEYS = ("root", "chess960", "moves", "ply", "agent", "value_white", "done", "resets", "resampled_starts",
                   "np_random", "np_random_seed")
"""The keys of :meth:`ChessEnv.get_state`."""


class Opening(NamedTuple):
    """How a game starts: the start position and the opponent's reply to it, if the opponent opens.

    A group reset of :class:`~chess_env.vector.ChessVectorEnv` has the group's first game find its
    opening and every other game replay it, so that the whole group starts from one position.
    """

    start: chess.Board
    """The start position, before the reply (with the move stack it was given)."""
    reply: chess.Move | None
    """The opponent's first move, or None when the agent (or self-play) moves first."""
    resampled: int = 0
    """Start positions drawn and discarded before this one because the opponent's reply ended them."""


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> Any:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {allowed}")
    return value


class ChessEnv(gym.Env):
    """A game of chess seen from the side to move, rewarded by the game result and by Stockfish.

    **Spaces.** Observations are ``Box(0, 1, (21 + 12 * history, 8, 8), float32)`` planes described
    in :func:`chess_env.encoding.observation`; actions are ``Discrete(4672)`` in AlphaZero's layout
    (:mod:`chess_env.encoding`). :meth:`action_masks` (and ``info["action_mask"]``) marks the legal
    moves, as sb3-contrib's MaskablePPO expects.

    **Reward** of a step, from the point of view of the side that moved:
    ``shaping_scale * (V(after) - V(before)) + result_scale * result``, where ``V`` is
    :func:`chess_env.rewards.score_value` of Stockfish's score (``reward_transform``, limited by
    ``reward_depth`` or ``reward_nodes``), ``V(before)`` is the previous step's ``V(after)`` (one
    engine call per step), a finished game is valued by the rules (+1, -1 or 0, never by the
    engine), and ``result`` is +1 / -1 / 0 on the step that ends the game. With an in-env opponent
    a step is the agent's move *and* the reply, and ``V(after)`` is taken after the reply.
    ``shaping=False`` drops the shaping term and needs no engine.

    Args:
        opponent: ``"self"`` (every step is a move of the side to move), ``"random"``,
            ``"stockfish"``, or a callable ``board -> chess.Move``.
        agent_color: with an opponent, the agent's colour: ``"white"``, ``"black"`` or
            ``"alternate"`` (switches every reset). The opponent moves first when it is its turn.
        opponent_skill, opponent_elo, opponent_depth: the Stockfish opponent's strength.
        draw_rule: ``"claim"`` (threefold repetition and the 50-move rule end the game) or
            ``"automatic"`` (only the fivefold repetition and the 75-move rule do).
        max_plies: plies (both sides') after which the episode is truncated.
        illegal_action: ``"lose"`` (the mover loses: reward ``-result_scale``, the episode
            terminates, ``info["illegal_action"] = True``) or ``"raise"`` (ValueError).
        shaping: add Stockfish shaping to the result reward.
        reward_transform: ``"winprob"``, ``"cp"`` or ``"wdl"`` (see :func:`score_value`).
        reward_depth: engine depth limit of the shaping evaluations.
        reward_nodes: engine node limit; replaces ``reward_depth`` when given.
        cp_clip: centipawn bound of the ``"cp"`` transform.
        mate_band: the top and bottom share of ``[-1, 1]`` that mate scores fill by their length (see
            :func:`score_value`): with the default 0.05 a mate given is worth 1, a mate one move away 0.975, a
            long mate about 0.95, and every centipawn value is scaled into ``[-0.95, 0.95]``, so that a shorter
            mate is worth more, in the shaping and in the move values of move groups. 0: every mate is worth +-1.
        shaping_scale: weight of the shaping term.
        result_scale: weight of the game result.
        history: earlier positions stacked in the observation.
        start_positions: where resets start without ``options``: ``"standard"``, ``"builtin"``,
            a file, a list of FENs or a :class:`PositionSet` (see :func:`load_positions`).
        engine: a :class:`chess_env.engine.StockfishPool` to share; by default the environment
            starts its own one-process pool on first use and closes it in :meth:`close`.
        engine_path: the Stockfish binary (default: ``STOCKFISH_PATH``, ``PATH``,
            ``/usr/games/stockfish``).
        render_mode: ``"ansi"`` (Unicode board) or ``"rgb_array"``.

    Attributes:
        resampled_starts: start positions this environment drew and discarded, over all its resets,
            because the opponent's opening reply ended the game (see :meth:`reset`); for the logger.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 2}

    def __init__(
        self,
        opponent: OpponentSpec = "self",
        agent_color: str = "white",
        opponent_skill: int | None = None,
        opponent_elo: int | None = None,
        opponent_depth: int | None = None,
        draw_rule: str = "claim",
        max_plies: int = 200,
        illegal_action: str = "lose",
        shaping: bool = True,
        reward_transform: str = "winprob",
        reward_depth: int = 4,
        reward_nodes: int | None = None,
        cp_clip: float = 1000.0,
        mate_band: float = MATE_BAND,
        shaping_scale: float = 1.0,
        result_scale: float = 1.0,
        history: int = 0,
        start_positions: str | list[str] | PositionSet = "standard",
        engine: Any = None,
        engine_path: str | None = None,
        render_mode: str | None = None,
    ) -> None:
        self.agent_color = _choice("agent_color", agent_color, AGENT_COLORS)
        self.draw_rule = _choice("draw_rule", draw_rule, DRAW_RULES)
        self.illegal_action = _choice("illegal_action", illegal_action, ILLEGAL_ACTIONS)
        self.reward_transform = _choice("reward_transform", reward_transform, REWARD_TRANSFORMS)
        if render_mode is not None:
            _choice("render_mode", render_mode, tuple(self.metadata["render_modes"]))
        for name, value in (("max_plies", max_plies), ("reward_depth", reward_depth)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value!r}")
        if history < 0:
            raise ValueError(f"history must be non-negative, got {history!r}")
        self.max_plies = max_plies
        self.shaping = shaping
        self.limit = chess.engine.Limit(nodes=reward_nodes) if reward_nodes else chess.engine.Limit(depth=reward_depth)
        self.cp_clip = cp_clip
        if not 0.0 <= mate_band < 1.0:
            raise ValueError(f"mate_band must be in [0, 1), got {mate_band!r}")
        self.mate_band = mate_band
        self.shaping_scale = shaping_scale
        self.result_scale = result_scale
        self.history = history
        self.start_positions = load_positions(start_positions)
        self.engine_path = engine_path
        self.render_mode = render_mode
        self.opponent = make_opponent(opponent, None, opponent_skill, opponent_elo, opponent_depth, engine_path)
        if self.shaping and engine is None:
            from chess_env.engine import find_stockfish

            self.engine_path = find_stockfish(engine_path)  # fail now, with the install hint, not mid-episode
        self._engine = engine
        self._owns_engine = engine is None

        self.observation_space = gym.spaces.Box(0.0, 1.0, (observation_channels(history), 8, 8), np.float32)
        self.action_space = gym.spaces.Discrete(N_ACTIONS)

        self.board = chess.Board()
        self.agent = chess.WHITE
        self.ply = 0
        self._value_white = 0.0  # V of the current position from White's point of view
        self._outcome: chess.Outcome | None = None
        self._done = True
        self._resets = 0
        self.resampled_starts = 0
        self._opening: Opening | None = None  # how the current game started (see _begin_reset)
        # The encodings of the current position (mask, observation, EPD, key), built once per ply and
        # shared by the step's consumers; see _encoding().
        self._encoding_of: BoardEncoding | None = None

    # Engine ---------------------------------------------------------------------------------
    @property
    def engine(self) -> Any:
        """The shaping engine pool, started on first use."""
        if self._engine is None:
            from chess_env.engine import StockfishPool

            self._engine = StockfishPool(processes=1, path=self.engine_path)
        return self._engine

    def _value(self, board: chess.Board, score: chess.engine.PovScore | None) -> float:
        """V of ``board`` from White's point of view: the rules when the game is over, else the engine."""
        if self._outcome is not None:
            return result_for(self._outcome, chess.WHITE)
        if not self.shaping:
            return 0.0
        return score_value(score.white(), self.reward_transform, cp_clip=self.cp_clip, ply=board.ply(),
                           mate_band=self.mate_band)

    # Reset ----------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start a game from ``options["fen"]`` / ``options["board"]``, or from a start position.

        ``options["board"]`` keeps the board's move stack (history planes, repetitions).
        ``options["agent_color"]`` (``"white"`` or ``"black"``) sets the agent's colour for this game
        only, overriding ``agent_color`` (the vector env uses it to give a whole group one colour).

        When the opponent has the move in the start position it plays its reply here (``info["ply"]``
        is then 1). A start drawn from ``start_positions`` that the reply ends (e.g. a puzzle in which
        the opponent mates in one) is discarded and another one drawn: ``info["resampled_starts"]``
        counts the discards of this reset, :attr:`resampled_starts` those of every reset.

        Raises:
            ValueError: an unknown option or colour, an invalid FEN or position, a start that is over
                before any move, a ``"fen"``/``"board"`` start that the opponent's reply ends (the
                message names the start's FEN and the reply in SAN and UCI), or
                :data:`START_ATTEMPTS` drawn starts in a row that the reply ends.
        """
        pending = self._submit(self._position() if self._begin_reset(seed, options) else None)
        obs, info = self._observe(reset=True)  # while the engine searches
        self._end_reset(_first(pending))
        return obs, info

    def _begin_reset(
        self,
        seed: int | None,
        options: dict[str, Any] | None,
        drawn: str | None = None,
        opening: Opening | None = None,
    ) -> bool:
        """Set up the start position; return whether it needs an engine score (then see :meth:`_position`).

        ``drawn`` is a start the caller drew from ``start_positions`` in place of this env's own draw
        (the vector env's group starts). ``opening`` is another game's :class:`Opening` to replay: its
        start and the opponent's reply to it, without asking this env's opponent.
        """
        super().reset(seed=seed)
        if isinstance(self.opponent, RandomOpponent):
            self.opponent.rng = self.np_random
        options = options or {}
        unknown = set(options) - {"fen", "board", "agent_color"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; expected 'fen', 'board' or 'agent_color'")
        if "agent_color" in options:
            color = _choice("agent_color", options["agent_color"], AGENT_COLORS[:2])
            self.agent = chess.WHITE if color == "white" else chess.BLACK
        elif self.agent_color == "alternate":
            self.agent = chess.WHITE if self._resets % 2 == 0 else chess.BLACK
        else:
            self.agent = chess.WHITE if self.agent_color == "white" else chess.BLACK
        self._resets += 1
        self._opening = opening if opening is not None else self._find_opening(options, drawn)
        self.board = self._opening.start.copy()
        self.ply = 0
        self._outcome = None  # _find_opening checked that the game goes on
        self._encoding_of = BoardEncoding(self.board)
        if self._opening.reply is not None:
            self._push(self._opening.reply)
        self._done = False
        return self.shaping

    def _find_opening(self, options: dict[str, Any], drawn: str | None) -> Opening:
        """The start position of ``options`` (or ``drawn``, or a draw) and the opponent's reply to it.

        A drawn start that the reply ends (a puzzle whose mate is the opponent's) is drawn again, at
        most :data:`START_ATTEMPTS` times in all, and counted in :attr:`resampled_starts`; a start the
        caller chose is refused instead, as is a start that is over before any move.
        """
        if "board" in options:
            board = options["board"].copy()
        elif "fen" in options:
            try:
                board = chess.Board(options["fen"])
            except ValueError as exc:
                raise ValueError(f"invalid FEN {options['fen']!r}: {exc}") from exc
        else:
            board = chess.Board(drawn if drawn is not None else self._draw_start())
        chosen = "board" in options or "fen" in options
        for resampled in range(START_ATTEMPTS):
            if resampled:
                board = chess.Board(self._draw_start())
            if not board.is_valid():
                raise ValueError(f"invalid position {board.fen()!r}: {board.status()!r}")
            outcome = game_outcome(board, self.draw_rule)
            if outcome is not None:
                raise ValueError(
                    f"the start position {board.fen()!r} is already over ({_termination(outcome)}): no move is left to play"
                )
            reply = None
            if self.opponent is not None and board.turn != self.agent:
                reply = self.opponent(board)
                board.push(reply)
                outcome = game_outcome(board, self.draw_rule)
                board.pop()
            if outcome is None:
                self.resampled_starts += resampled
                return Opening(board, reply, resampled)
            if chosen:
                raise ValueError(
                    f"the opponent's reply {board.san(reply)} ({reply.uci()}) to the start position {board.fen()!r} "
                    f"ends the game ({_termination(outcome)}), leaving the agent no move; start from a position "
                    "where the game goes on after the reply"
                )
        raise ValueError(
            f"the opponent's opening reply ended the game in every one of the {START_ATTEMPTS} start positions "
            f"drawn from {self.start_positions!r}; the last: {board.fen()!r}, reply {board.san(reply)} ({reply.uci()}), "
            f"{_termination(outcome)}"
        )

    def _draw_start(self) -> str:
        return self.start_positions.sample(self.np_random, 1)[0]

    def _end_reset(self, score: chess.engine.PovScore | None) -> None:
        """Take the start position's value from its engine score (None when none was needed)."""
        self._value_white = self._value(self.board, score)

    # Step -----------------------------------------------------------------------------------
    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Play ``action`` for the side to move (and the opponent's reply, if any)."""
        pending = self._submit(self._position() if self._begin_step(action) else None)
        obs, info = self._observe()  # while the engine searches
        reward, terminated, truncated = self._end_step(_first(pending), info)
        return obs, reward, terminated, truncated, info

    # A step (and a reset) is split in three so that ChessVectorEnv can run one engine batch for all
    # its games and build their observations while the engine searches: ``_begin_*`` plays the
    # move(s) and says whether the position needs a score, ``_observe`` builds everything that does
    # not depend on the score, ``_end_*`` uses the score. In between, the vector env encodes all its
    # games' positions at once (chess_env.encoding.encode_all) before it asks for their Positions.
    def _submit(self, position: Position | None) -> Future | None:
        """Start scoring ``position`` (None: nothing to score)."""
        return self.engine.submit([position], self.limit) if position is not None else None

    def _position(self) -> Position:
        """The current position as the engine pool takes it: its key and EPD come from the ply's encoding
        (the EPD is the head of ``info["fen"]`` too), and the game goes on, so the pool need not check it."""
        encoding = self._encoding_of  # made by the reset or the push that reached the position
        return Position(encoding.key, encoding.epd, self.board.turn)

    def _begin_step(self, action: int) -> bool:
        """Play the move(s) of a step; return whether the position reached needs an engine score."""
        if self._done:
            raise RuntimeError("step() called on a finished game; call reset() first")
        self._mover = self.board.turn
        self._illegal = False
        move = self._legal_move(int(action))
        if move is None:
            self._illegal = True
            self._done = True
            return False
        self._push(move)
        if self.opponent is not None and self._outcome is None and self.ply < self.max_plies:
            self._push(self.opponent(self.board))
        self._done = self._outcome is not None or self.ply >= self.max_plies
        return self.shaping and self._outcome is None

    def _end_step(self, score: chess.engine.PovScore | None, info: dict[str, Any]) -> tuple[float, bool, bool]:
        """Reward, terminated and truncated of the step begun by :meth:`_begin_step`; adds the values to ``info``."""
        if self._illegal:
            info["illegal_action"] = True
            return -self.result_scale, True, False
        sign = 1.0 if self._mover == chess.WHITE else -1.0
        value_before = self._value_white
        self._value_white = self._value(self.board, score)
        reward = 0.0
        if self.shaping:
            reward += self.shaping_scale * sign * (self._value_white - value_before)
            info.update(value_before=sign * value_before, value_after=sign * self._value_white)
        terminated = self._outcome is not None
        if terminated:
            reward += self.result_scale * result_for(self._outcome, self._mover)
        return float(reward), terminated, not terminated and self.ply >= self.max_plies

    def _legal_move(self, action: int) -> chess.Move | None:
        # The mask is exactly the legal moves (tests check it against python-chess), so it replaces
        # board.is_legal; decode_action gives a legal action's move.
        if 0 <= action < N_ACTIONS and self._encoding().mask[action]:
            return decode_action(self.board, action)
        if self.illegal_action == "raise":
            raise ValueError(f"action {action!r} is not a legal move in position {self.board.fen()!r}")
        return None

    def _push(self, move: chess.Move) -> None:
        self.board.push(move)
        self.ply += 1
        self._encoding_of = encoding = BoardEncoding(self.board)
        # The legal moves are generated once, for the mask and the rules alike.
        self._outcome = game_outcome(self.board, self.draw_rule, has_legal_moves=encoding.has_legal_moves)

    # Views ----------------------------------------------------------------------------------
    def action_masks(self) -> np.ndarray:
        """Bool array ``(4672,)``: True at the legal moves (all False once the game is over)."""
        if self._done:
            return np.zeros(N_ACTIONS, dtype=bool)
        return self._encoding().mask.copy()

    def _encoding(self) -> BoardEncoding:
        """The current position's :class:`BoardEncoding`, made afresh if the board was changed in place.

        The env makes one per position it reaches, which its own views (observation, info, the engine's
        position) use as they are. A caller may push or pop moves on :attr:`board` between steps, so what
        a caller reads or plays (:meth:`action_masks`, the action of a step) is checked against the
        transposition key first (~0.5 us).
        """
        encoding = self._encoding_of
        if encoding is None or encoding.board is not self.board or encoding.key != self.board._transposition_key():
            encoding = self._encoding_of = BoardEncoding(self.board)
        return encoding

    def _observe(self, reset: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
        """The observation and info of the current position: everything of a step but the engine's part.

        ``reset``: the info is a reset's, which also says how many starts were discarded before this one.
        """
        return self._observation(), self._info(reset)

    def _observation(self) -> np.ndarray:
        return self._encoding_of.observation(self.history)

    def _info(self, reset: bool = False) -> dict[str, Any]:
        """The info of the current position (a reset's, with the starts it discarded, if ``reset``)."""
        info = {
            "outcome": self._outcome,
            "termination": _termination(self._outcome) if self._outcome else None,
            "illegal_action": False,
            "fen": self._encoding_of.fen(),
            "ply": self.ply,
            "action_mask": self.action_masks(),
        }
        if reset:
            info["resampled_starts"] = self._opening.resampled
        return info

    def pgn(self) -> str:
        """The game so far as PGN text (with a ``SetUp``/``FEN`` header for a custom start)."""
        game = chess.pgn.Game.from_board(self.board)
        game.headers["Event"] = "GRPOChess-v0"
        if self.opponent is not None:
            opponent = getattr(self.opponent, "__name__", type(self.opponent).__name__)
            game.headers["White" if self.agent == chess.BLACK else "Black"] = opponent
            game.headers["White" if self.agent == chess.WHITE else "Black"] = "agent"
        if self._outcome is None and self.ply >= self.max_plies:
            game.headers["Termination"] = "max_plies"
        return str(game)

    def render(self) -> str | np.ndarray | None:
        """``"ansi"``: the Unicode board; ``"rgb_array"``: a ``(400, 400, 3)`` uint8 image."""
        if self.render_mode == "ansi":
            return self.board.unicode(borders=True, empty_square="·") + f"\n{self.board.fen()}\n"
        if self.render_mode == "rgb_array":
            from chess_env.render import board_rgb

            return board_rgb(self.board)
        return None

    # State ------------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """The game in progress and the generator, as plain values: what :meth:`set_state` needs to continue
        this env exactly as if it had never stopped.

        The board is kept as its root position (FEN with the en-passant square as set) and its moves in UCI,
        so repetitions and history planes survive; also the ply counter, the agent's colour, the value of
        the position, whether the game is over, the reset counters and the state of :attr:`np_random` (which
        draws the start positions and the random opponent's moves). The settings of the env (opponent,
        rewards, limits, start positions) are not part of it: :meth:`set_state` restores into an env built
        with the same ones. The engine pool holds no state a game depends on (its scores are a function of
        the position and the limit).
        """
        root = self.board.root()
        return {
            "root": root.fen(en_passant="fen"),
            "chess960": self.board.chess960,
            "moves": [move.uci() for move in self.board.move_stack],
            "ply": self.ply,
            "agent": bool(self.agent),
            "value_white": float(self._value_white),
            "done": self._done,
            "resets": self._resets,
            "resampled_starts": self.resampled_starts,
            "np_random": _generator_state(self._np_random),
            "np_random_seed": self._np_random_seed,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`get_state` of an env with the same settings.

        A random opponent draws from the restored generator again, as it does after any reset. A Stockfish
        opponent restarts with the env: its skill levels below 20 pick moves with Stockfish's own
        time-seeded generator, so games against it do not replay exactly even without a restore.

        Raises:
            ValueError: a key is missing, or the moves are not legal from the root position; the message
                names it.
        """
        missing = sorted(set(GAME_STATE_KEYS) - set(state))
        if missing:
            raise ValueError(f"game state lacks {missing}; expected the keys of ChessEnv.get_state()")
        board = chess.Board(state["root"], chess960=state["chess960"])
        for uci in state["moves"]:
            try:
                board.push_uci(uci)
            except ValueError as exc:
                raise ValueError(f"game state move {uci!r} is not legal in {board.fen()!r}: {exc}") from None
        self.board = board
        self.ply = int(state["ply"])
        self.agent = chess.WHITE if state["agent"] else chess.BLACK
        self._value_white = float(state["value_white"])
        # _push keeps _outcome equal to the rules' verdict on the board (an illegal move ends a game
        # without one), so it is recomputed rather than stored.
        self._outcome = game_outcome(self.board, self.draw_rule)
        self._done = bool(state["done"])
        self._resets = int(state["resets"])
        self._encoding_of = BoardEncoding(self.board)
        self.resampled_starts = int(state["resampled_starts"])
        self._np_random = _generator_from_state(state["np_random"])
        self._np_random_seed = state["np_random_seed"]
        if isinstance(self.opponent, RandomOpponent) and self._resets:
            self.opponent.rng = self.np_random  # as _begin_reset leaves it

    # Lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the engine processes this environment started."""
        if self._owns_engine and self._engine is not None:
            self._engine.close()
            self._engine = None
        close_opponent = getattr(self.opponent, "close", None)
        if close_opponent is not None:
            close_opponent()

    def __getstate__(self) -> dict[str, Any]:
        # Engine processes do not cross process boundaries: a copy starts its own pool on first use.
        state = self.__dict__.copy()
        state["_engine"] = None
        state["_owns_engine"] = True
        return state


def _termination(outcome: chess.Outcome) -> str:
    """How ``outcome`` ended the game, as in ``info["termination"]``: ``"checkmate"``, ``"stalemate"``..."""
    return outcome.termination.name.lower()


def _first(pending: Future | None) -> chess.engine.PovScore | None:
    """The score of a one-board batch from :meth:`ChessEnv._submit`, once the engine is done."""
    return pending.result()[0] if pending is not None else None


def _generator_state(rng: np.random.Generator | None) -> dict[str, Any] | None:
    """The state of a NumPy generator as plain values (None for none)."""
    return None if rng is None else rng.bit_generator.state


def _generator_from_state(state: dict[str, Any] | None) -> np.random.Generator | None:
    """A NumPy generator in the state given by :func:`_generator_state`."""
    if state is None:
        return None
    rng = np.random.Generator(getattr(np.random, state["bit_generator"])())
    rng.bit_generator.state = state
    return rng
