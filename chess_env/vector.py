"""ChessVectorEnv: N chess games in one process, one batched Stockfish call per step, group resets."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from concurrent.futures import Future
from typing import Any

import chess
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from chess_env.encoding import N_ACTIONS, encode_all, observations
from chess_env.engine.pool import Position
from chess_env.env import ChessEnv, _generator_from_state, _generator_state
from chess_env.positions import load_positions

_RESET_OPTIONS = ("fens", "groups", "group_size", "fen", "reset_mask")


class ChessVectorEnv(VectorEnv):
    """``num_envs`` games of :class:`ChessEnv` sharing one :class:`~chess_env.engine.StockfishPool`.

    Every sub-game is a real :class:`ChessEnv` (same rules, rewards, observations and infos); the
    vector env only batches their engine work: a :meth:`step` plays every game's move, submits all
    the positions that need a shaping score to the pool in **one** batch (the pool spreads them over
    its processes, searches duplicates once and answers repeats from its cache), builds every
    game's observation, mask and info while the engines search, then waits for the scores and
    finishes every game's step (rewards and values). Observations ``(num_envs, C, 8, 8)`` and masks
    ``(num_envs, 4672)`` are stacked; :meth:`action_masks` gives the masks for sb3-contrib.

    **Resets.** ``reset(seed=s)`` seeds game ``i`` with ``s + i`` and the vector env's own generator
    (which draws group starts) with ``s``. ``options`` may hold one of:

    * ``{"fens": [...]}``: one FEN per game;
    * ``{"groups": B, "group_size": G}`` with ``B * G == num_envs``: ``B`` start positions drawn
      (with replacement) from ``start_positions`` with the vector env's generator; game ``i`` starts
      from position ``i // G``, so each group of ``G`` consecutive games shares its start (GRPO).
      When the opponent has the move there, the group's first game asks it for the opening reply
      and the others replay that move: the whole group begins from one position, with the same
      move stack, ``ply``, observation, mask and shaping value (one opponent call per group). A
      start that the reply ends is redrawn by the first game (:meth:`ChessEnv.reset`, counted in
      :attr:`resampled_starts`), and the group still shares the replacement;
    * ``{"fen": f}``: every game from ``f``;
    * ``{"reset_mask": mask}`` (Gymnasium's partial reset, bool ``(num_envs,)``), alone or with
      ``"fen"``: only the masked games restart.

    With an opponent and ``agent_color="alternate"``, a group reset gives every game of group ``b``
    the same colour, White when ``(k + b)`` is even for the ``k``-th group reset, so the colours
    alternate between groups and between rollouts (passed to each game as its ``agent_color`` reset
    option). Other resets let each game alternate on its own, as a single :class:`ChessEnv` does.

    **Autoreset** (``autoreset_mode``, settable at any time; takes effect from the next step):

    * ``NEXT_STEP`` (default, as Gymnasium's sync vector env): the step after a game ends resets it,
      ignoring its action, with reward 0 and ``terminated = truncated = False``.
    * ``SAME_STEP``: a game that ends is reset within the same step; the returned observation is the
      new game's, and ``infos["final_obs"]`` / ``infos["final_info"]`` (masked by ``"_final_obs"``)
      hold the finished game's. This is the mode of SB3's ``VecEnv`` (:class:`chess_env.sb3.ChessVecEnv`).
      A game *truncated* at ``max_plies`` needs a second pool call for its new start (cached when
      starts repeat); terminated games are reset inside the step's single call.
    * ``DISABLED`` (GRPO rollouts): a finished game waits, padded, until the next :meth:`reset`: its
      actions are ignored, its reward is 0, its ``terminated``/``truncated`` stay as they were when
      it ended, its observation is its final one and its mask row is all False.

    **Infos** are Gymnasium vector infos: a dict of arrays with a boolean ``"_key"`` array saying
    which games carry the key: ``action_mask`` (always), ``ply``, ``fen``, ``outcome``,
    ``termination``, ``illegal_action``, ``resampled_starts`` for games that (re)started (see
    :meth:`ChessEnv.reset`), and ``value_before`` / ``value_after`` (the mover's shaping values)
    for games that moved this step with shaping on.

    Args:
        num_envs: number of games.
        autoreset_mode: an :class:`gymnasium.vector.AutoresetMode`, its value or its name
            (``"disabled"``, ``"same_step"``...).
        engine: a :class:`~chess_env.engine.StockfishPool` to share (it is not closed by
            :meth:`close`); by default, with ``shaping`` on, the vector env starts its own.
        engine_processes: engine processes of the pool it starts (default: one per core).
        **env_kwargs: any :class:`ChessEnv` argument, the same for every game.

    Raises:
        ValueError: ``num_envs < 1``, an unknown ``autoreset_mode``, or a bad ``ChessEnv`` argument.
    """

    def __init__(
        self,
        num_envs: int = 1,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        engine: Any = None,
        engine_processes: int | None = None,
        **env_kwargs: Any,
    ) -> None:
        if not isinstance(num_envs, (int, np.integer)) or isinstance(num_envs, bool) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if "engine" in env_kwargs:
            raise ValueError("pass the shared pool as engine=..., once, to ChessVectorEnv")
        self.num_envs = int(num_envs)
        #: the :class:`ChessEnv` arguments every game was built with: what builds a copy of these games elsewhere
        #: (a rollout worker on another machine starts its own pool, so the engine is not among them)
        self.game_kwargs: dict[str, Any] = dict(env_kwargs)
        self.metadata = dict(ChessEnv.metadata)
        self.autoreset_mode = autoreset_mode
        self._engine = engine
        self._owns_engine = engine is None and env_kwargs.get("shaping", True)
        if self._owns_engine:
            from chess_env.engine import StockfishPool

            self._engine = StockfishPool(processes=engine_processes, path=env_kwargs.get("engine_path"))
        try:
            # Every game shares the pool (a ChessEnv given an engine never starts its own) and one set of start
            # positions: read once, not once per game (64 reads of a 6,000-FEN file took a minute).
            if "start_positions" in env_kwargs:
                env_kwargs = {**env_kwargs, "start_positions": load_positions(env_kwargs["start_positions"])}
            self.envs: list[ChessEnv] = [ChessEnv(engine=self._engine, **env_kwargs) for _ in range(self.num_envs)]
        except BaseException:
            if self._owns_engine:
                self._engine.close()
            raise
        first = self.envs[0]
        self.render_mode = first.render_mode
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.limit = first.limit

        self._obs = np.zeros(self.observation_space.shape, dtype=np.float32)
        self._masks = np.zeros((self.num_envs, N_ACTIONS), dtype=bool)
        self._terminated = np.zeros(self.num_envs, dtype=bool)
        self._truncated = np.zeros(self.num_envs, dtype=bool)
        self._needs_reset = np.ones(self.num_envs, dtype=bool)  # finished games (autoreset or padding)
        self._group_resets = 0
        self._started = False
        self._pool_calls = 0
        self._steps = 0
        self._plies = 0
        self._stats_base = self._pool_counters()

    # Configuration ---------------------------------------------------------------------------
    @property
    def autoreset_mode(self) -> AutoresetMode:
        """How finished games restart (see the class docstring); also ``metadata["autoreset_mode"]``."""
        return self._autoreset_mode

    @autoreset_mode.setter
    def autoreset_mode(self, mode: AutoresetMode | str) -> None:
        # Accept the enum, its value ("Disabled") or its name in any case ("disabled", "next_step").
        by_name = {key.lower(): m for m in AutoresetMode for key in (m.name, m.value)}
        resolved = mode if isinstance(mode, AutoresetMode) else by_name.get(str(mode).lower())
        if resolved is None:
            raise ValueError(f"unknown autoreset_mode {mode!r}; expected one of {sorted(by_name)}")
        self._autoreset_mode = resolved
        self.metadata["autoreset_mode"] = resolved

    @property
    def engine(self) -> Any:
        """The shared :class:`~chess_env.engine.StockfishPool` (None without shaping)."""
        return self._engine

    @property
    def boards(self) -> list[chess.Board]:
        """The games' boards (live objects: copy before modifying)."""
        return [env.board for env in self.envs]

    @property
    def resampled_starts(self) -> int:
        """Start positions discarded because the opponent's opening reply ended the game, over all resets.

        A group's discards are counted once (its first game draws the replacements). Each reset's own
        count is in its infos, as ``resampled_starts`` (the same for every game of a group).
        """
        return sum(env.resampled_starts for env in self.envs)

    @property
    def start_positions(self) -> Any:
        """The :class:`~chess_env.positions.PositionSet` that resets and group resets draw from."""
        return self.envs[0].start_positions

    # Engine ----------------------------------------------------------------------------------
    def _submit(self, positions: list[Position]) -> Future | None:
        """Start one pool batch for ``positions`` (None when there is nothing to score)."""
        if not positions:
            return None
        self._pool_calls += 1
        return self._engine.submit(positions, self.limit)

    def _pool_counters(self) -> tuple[int, int, int]:
        pool = self._engine
        if pool is None:
            return (0, 0, 0)
        return (pool.cache_hits, pool.cache_misses, pool.engine_calls)

    def engine_stats(self) -> dict[str, float]:
        """Engine use since construction (or :meth:`reset_engine_stats`).

        Returns ``cache_hits``, ``cache_misses``, ``engine_calls`` (searches run), ``cache_hit_rate``,
        ``pool_calls`` (batches submitted to the pool), ``steps`` (vector steps), ``plies`` (half-moves
        played by all games, opponents' included) and ``engine_calls_per_ply``. Counts come from the
        pool's counters, so they include other users of a shared pool.
        """
        hits, misses, calls = (now - base for now, base in zip(self._pool_counters(), self._stats_base))
        lookups = hits + misses
        return {
            "cache_hits": hits,
            "cache_misses": misses,
            "engine_calls": calls,
            "cache_hit_rate": hits / lookups if lookups else 0.0,
            "pool_calls": self._pool_calls,
            "steps": self._steps,
            "plies": self._plies,
            "engine_calls_per_ply": calls / self._plies if self._plies else 0.0,
        }

    def reset_engine_stats(self) -> None:
        """Start the :meth:`engine_stats` counts afresh."""
        self._stats_base = self._pool_counters()
        self._pool_calls = self._steps = self._plies = 0

    # Reset -----------------------------------------------------------------------------------
    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start new games (all of them, or those in ``options["reset_mask"]``); see the class docstring.

        Raises:
            ValueError: unknown or conflicting options, a wrong number of FENs or seeds, a group shape
                that does not cover ``num_envs``, or an invalid FEN; the message names the value.
        """
        seeds = self._seeds(seed)
        if isinstance(seed, (int, np.integer)):
            self._np_random, self._np_random_seed = seeding.np_random(int(seed))
        indices, env_options, groups = self._reset_plan(dict(options or {}))
        started = self._restart(indices, [seeds[i] for i in indices], [env_options[i] for i in indices], groups)
        infos = self._stack_infos(list(zip(indices, started)))
        self._started = True
        infos["action_mask"] = self._masks.copy()
        infos["_action_mask"] = np.ones(self.num_envs, dtype=bool)
        return self._obs.copy(), infos

    def _restart(
        self,
        indices: list[int],
        seeds: list[int | None],
        options: list[dict[str, Any] | None],
        groups: tuple[int, list[str]] | None = None,
    ) -> list[dict[str, Any]]:
        """Start new games ``indices`` with one pool batch; return their infos.

        ``groups``: ``(group_size, starts)`` of a group reset (``indices`` are then all the games, in
        order). The group's first game sets out from its drawn start and asks its opponent for the
        opening reply; the others replay that opening, so the whole group starts from one position.
        """
        scored = []
        for i, seed, opts in zip(indices, seeds, options):
            env = self.envs[i]
            if groups is None:
                scored.append(env._begin_reset(seed, opts))
            elif i % groups[0] == 0:
                scored.append(env._begin_reset(seed, opts, drawn=groups[1][i // groups[0]]))
            else:
                scored.append(env._begin_reset(seed, opts, opening=self.envs[i - i % groups[0]]._opening))
        encodings = [self.envs[i]._encoding_of for i in indices]
        encode_all(encodings, masks=False)
        pending = self._submit([self.envs[i]._position() for i, score in zip(indices, scored) if score])
        encode_all(encodings)
        observed = self._observe(indices, resets=indices)  # while the engines search
        infos = [observed[i] for i in indices]
        scores = iter(_scores(pending))
        for i, score in zip(indices, scored):
            self.envs[i]._end_reset(next(scores) if score else None)
            self._terminated[i] = self._truncated[i] = self._needs_reset[i] = False
        return infos

    def _seeds(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, (int, np.integer)):
            return [int(seed) + i for i in range(self.num_envs)]
        seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"got {len(seeds)} seeds {seeds!r} for num_envs={self.num_envs}")
        return seeds

    def _reset_plan(
        self, options: dict[str, Any]
    ) -> tuple[list[int], list[dict[str, Any]], tuple[int, list[str]] | None]:
        """Which games to reset, each one's ChessEnv reset options, and a group reset's size and starts."""
        unknown = set(options) - set(_RESET_OPTIONS)
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; expected some of {list(_RESET_OPTIONS)}")
        starts = [key for key in ("fens", "groups", "fen") if key in options]
        if len(starts) > 1:
            raise ValueError(f"reset options {starts} conflict: give one of 'fens', 'groups', 'fen'")
        if "group_size" in options and "groups" not in options:
            raise ValueError(f"reset option group_size={options['group_size']!r} needs 'groups'")
        indices = list(range(self.num_envs))
        if "reset_mask" in options:
            mask = np.asarray(options["reset_mask"])
            if mask.dtype != np.bool_ or mask.shape != (self.num_envs,) or not mask.any():
                raise ValueError(
                    f"reset_mask must be a bool array of shape ({self.num_envs},) with a True, got {options['reset_mask']!r}"
                )
            if "fens" in options or "groups" in options:
                raise ValueError(f"reset_mask cannot be combined with {starts}; use 'fen' or no start option")
            indices = [int(i) for i in np.flatnonzero(mask)]
        env_options: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        group_starts = None
        if "fen" in options:
            for opts in env_options:
                opts["fen"] = options["fen"]
        elif "fens" in options:
            fens = options["fens"]
            if isinstance(fens, str) or len(fens) != self.num_envs:
                raise ValueError(f"reset option fens needs one FEN per game (num_envs={self.num_envs}), got {fens!r}")
            for opts, fen in zip(env_options, fens):
                opts["fen"] = fen
        elif "groups" in options:
            groups, size = options["groups"], options.get("group_size")
            if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in (groups, size)):
                raise ValueError(f"groups={groups!r} and group_size={size!r} must be positive ints")
            if groups * size != self.num_envs:
                raise ValueError(
                    f"groups={groups} x group_size={size} = {groups * size} does not match num_envs={self.num_envs}"
                )
            starts = self.start_positions.sample(self.np_random, int(groups))
            alternate = self.envs[0].opponent is not None and self.envs[0].agent_color == "alternate"
            if alternate:
                for i, opts in enumerate(env_options):
                    opts["agent_color"] = "white" if (self._group_resets + i // size) % 2 == 0 else "black"
            self._group_resets += 1
            group_starts = (int(size), starts)
        return indices, env_options, group_starts

    # Step ------------------------------------------------------------------------------------
    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Play one action per game (ignored for games being reset or padded); see the class docstring.

        Raises:
            ValueError: ``actions`` does not hold ``num_envs`` integers; an illegal action with
                ``illegal_action="raise"``.
            RuntimeError: :meth:`reset` was never called.
        """
        if not self._started:
            raise RuntimeError("step() called before reset()")
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be {self.num_envs} integers, got {actions!r}")
        mode = self._autoreset_mode
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        plies_before = [env.ply for env in self.envs]
        kind = [""] * self.num_envs  # "step", "reset" (autoreset) or "pad" (a finished game, DISABLED)
        final: dict[int, tuple[np.ndarray, dict[str, Any]]] = {}  # SAME_STEP: the finished games' last step
        owners: list[int] = []  # the games whose positions need a score
        moves = actions.tolist()  # Python ints: cheaper to index and compare than numpy scalars
        for i, env in enumerate(self.envs):
            if self._needs_reset[i]:
                if mode == AutoresetMode.DISABLED:
                    kind[i] = "pad"
                    continue
                kind[i] = "reset"
                score = env._begin_reset(None, None)
            else:
                kind[i] = "step"
                score = env._begin_step(moves[i])
                if not score and mode == AutoresetMode.SAME_STEP and env._done:
                    # Ended without needing a score (mate, draw, illegal move, or truncation without
                    # shaping): finish it now so that its new start joins this step's pool batch.
                    final[i] = env._observe()
                    self._finish_step(i, None, final[i][1], rewards, terminated, truncated, plies_before[i])
                    kind[i] = "reset"
                    score = env._begin_reset(None, None)
            if score:
                owners.append(i)
        # Every new position's pieces and FEN squares in one numpy pass, and the pool's positions from them;
        # the masks (one more pass) and everything else that does not depend on a score while the engines search.
        active = [i for i in range(self.num_envs) if kind[i] != "pad"]
        encodings = [self.envs[i]._encoding_of for i in active]
        encode_all(encodings, masks=False)
        pending = self._submit([self.envs[i]._position() for i in owners])
        encode_all(encodings)
        views = self._observe(active, [i for i in active if kind[i] == "reset"])
        scores = dict(zip(owners, _scores(pending)))

        entries: list[tuple[int, dict[str, Any]]] = []  # (game, info), stacked at the end
        restarts: list[int] = []
        for i, env in enumerate(self.envs):
            if kind[i] == "pad":
                terminated[i], truncated[i] = self._terminated[i], self._truncated[i]
                entries.append((i, env._info()))
                continue
            if kind[i] == "reset":
                env._end_reset(scores.get(i))
                self._needs_reset[i] = False
            else:
                self._finish_step(i, scores.get(i), views[i], rewards, terminated, truncated, plies_before[i])
                if mode == AutoresetMode.SAME_STEP and self._needs_reset[i]:
                    final[i] = (self._obs[i].copy(), views[i])  # the row is the new game's after the restart
                    restarts.append(i)
                    continue  # the info returned is its new game's, added below
            entries.append((i, views[i]))
        if restarts:
            # Games truncated on a position the engine had to score: their new starts can only be set up
            # after that score was used, so they take a second pool batch (a cache hit when starts repeat).
            started = self._restart(restarts, [None] * len(restarts), [None] * len(restarts))
            entries.extend(zip(restarts, started))
        infos = self._stack_infos(entries)
        for i, (obs, info) in final.items():
            infos = self._add_info(infos, {"final_obs": obs, "final_info": info}, i)
        self._steps += 1
        infos["action_mask"] = self._masks.copy()
        infos["_action_mask"] = np.ones(self.num_envs, dtype=bool)
        return self._obs.copy(), rewards, terminated, truncated, infos

    def _finish_step(
        self,
        i: int,
        score: Any,
        info: dict[str, Any],
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        ply_before: int,
    ) -> None:
        """Game ``i``'s reward, termination and values, once its score (if any) is known."""
        env = self.envs[i]
        rewards[i], terminated[i], truncated[i] = env._end_step(score, info)
        self._plies += env.ply - ply_before
        # Kept for padding (DISABLED): a finished game repeats how it ended until the next reset.
        self._terminated[i], self._truncated[i] = terminated[i], truncated[i]
        self._needs_reset[i] = terminated[i] or truncated[i]

    def _observe(self, indices: list[int], resets: Collection[int] = ()) -> dict[int, dict[str, Any]]:
        """The infos of games ``indices`` (a reset's for those in ``resets``); their observations, built all at
        once (:func:`~chess_env.encoding.observations`), and their masks go into the stacked arrays."""
        if not indices:
            return {}
        envs = [self.envs[i] for i in indices]
        self._obs[indices] = observations([env._encoding_of for env in envs], envs[0].history)
        resets = set(resets)
        infos = {}
        for i, env in zip(indices, envs):
            infos[i] = env._info(reset=i in resets)
            self._masks[i] = infos[i]["action_mask"]
        return infos

    def _stack_infos(self, entries: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        """Gymnasium's vector infos of ``(game, info)`` pairs, as ``VectorEnv._add_info`` builds them.

        The same keys in the same order, arrays of the same dtypes (from each key's first value: a
        Python or numpy number's own type, else ``object``) and the same ``_key`` masks, but built a key
        at a time rather than a game and a key at a time (``_add_info`` allocates a mask array per key
        and game). The masks are left out: they are stacked once per call from ``self._masks``.
        """
        columns: dict[str, tuple[list[int], list[Any]]] = {}
        for i, info in entries:
            for key, value in info.items():
                column = columns.get(key)
                if column is None:
                    column = columns[key] = ([], [])
                column[0].append(i)
                column[1].append(value)
        columns.pop("action_mask", None)
        infos: dict[str, Any] = {}
        for key, (games, values) in columns.items():
            kind = type(values[0])
            if kind in (int, float, bool) or issubclass(kind, np.number):
                array = np.zeros(self.num_envs, dtype=kind)
                array[games] = values
            else:  # None, strings, outcomes: what _add_info keeps in an object array (no nested infos here)
                array = np.full(self.num_envs, None, dtype=object)
                for i, value in zip(games, values):
                    array[i] = value
            present = np.zeros(self.num_envs, dtype=np.bool_)
            present[games] = True
            infos[key], infos[f"_{key}"] = array, present
        return infos

    # State -----------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Every game's :meth:`ChessEnv.get_state`, the vector env's own generator (group starts), its
        counters (group resets, which alternate the colours; steps, plies, pool calls), the autoreset mode and
        which games have ended: what :meth:`set_state` needs to continue exactly, in-flight games included.

        The stacked observations and masks are not kept: :meth:`set_state` rebuilds them from the boards.
        """
        return {
            "num_envs": self.num_envs,
            "games": [env.get_state() for env in self.envs],
            "np_random": _generator_state(self._np_random),
            "np_random_seed": self._np_random_seed,
            "autoreset_mode": self._autoreset_mode.name,
            "started": self._started,
            "group_resets": self._group_resets,
            "terminated": self._terminated.tolist(),
            "truncated": self._truncated.tolist(),
            "needs_reset": self._needs_reset.tolist(),
            "counters": [self._pool_calls, self._steps, self._plies],
        }

    def set_state(self, state: dict[str, Any]) -> np.ndarray:
        """Continue from a :meth:`get_state` of a vector env with the same settings and ``num_envs``; return the
        games' observations, as :meth:`reset` does.

        Raises:
            ValueError: ``num_envs`` differs, or a game's state is refused (:meth:`ChessEnv.set_state`).
        """
        if state["num_envs"] != self.num_envs:
            raise ValueError(f"the state is of {state['num_envs']} games, this vector env has num_envs={self.num_envs}")
        for env, game in zip(self.envs, state["games"]):
            env.set_state(game)
        self._np_random = _generator_from_state(state["np_random"])
        self._np_random_seed = state["np_random_seed"]
        self.autoreset_mode = state["autoreset_mode"]
        self._started = bool(state["started"])
        self._group_resets = int(state["group_resets"])
        for name in ("terminated", "truncated", "needs_reset"):
            getattr(self, f"_{name}")[:] = np.asarray(state[name], dtype=bool)
        self._pool_calls, self._steps, self._plies = (int(n) for n in state["counters"])
        # A game's stacked observation and mask are always those of its board (a padded game keeps its final
        # position, whose mask is all False), so they are rebuilt rather than stored.
        encode_all([env._encoding_of for env in self.envs])
        self._observe(list(range(self.num_envs)))
        return self._obs.copy()

    # Views and plumbing ----------------------------------------------------------------------
    def action_masks(self) -> np.ndarray:
        """Bool ``(num_envs, 4672)``: each game's legal moves (all False for a finished, padded game)."""
        return self._masks.copy()

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call method ``name`` of every game (or read the attribute if not callable)."""
        results = []
        for env in self.envs:
            attr = getattr(env, name)
            results.append(attr(*args, **kwargs) if callable(attr) else attr)
        return tuple(results)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """Attribute ``name`` of every game."""
        return tuple(getattr(env, name) for env in self.envs)

    def set_attr(self, name: str, values: Any) -> None:
        """Set attribute ``name`` of every game: to ``values[i]`` given a list or tuple, else to ``values``."""
        if not isinstance(values, (list, tuple)):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"set_attr({name!r}) got {len(values)} values for num_envs={self.num_envs}")
        for env, value in zip(self.envs, values):
            setattr(env, name, value)

    def render(self) -> tuple[Any, ...] | None:
        """Each game's :meth:`ChessEnv.render` (``None`` without a render mode)."""
        if self.render_mode is None:
            return None
        return tuple(env.render() for env in self.envs)

    def close_extras(self, **kwargs: Any) -> None:
        """Close the games (their opponents' engines) and the pool if this vector env started it."""
        for env in self.envs:
            env.close()
        if self._owns_engine and self._engine is not None:
            self._engine.close()
        self._engine = None

    def __repr__(self) -> str:
        return f"ChessVectorEnv(num_envs={self.num_envs}, autoreset_mode={self._autoreset_mode.name})"


def _scores(pending: Future | None) -> list[Any]:
    """The scores of a batch from :meth:`ChessVectorEnv._submit`, once the engines are done."""
    return pending.result() if pending is not None else []
