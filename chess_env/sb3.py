"""ChessVecEnv: Stable-Baselines3's ``VecEnv`` API over a :class:`~chess_env.vector.ChessVectorEnv`.

SB3 algorithms (and sb3-contrib's ``MaskablePPO``) take a ``VecEnv``; wrapping the Gymnasium vector
env in a ``DummyVecEnv`` would step N single envs one by one, each with its own engine call. This
adapter keeps the batched engine call and translates the API: same-step autoreset, a list of info
dicts with ``terminal_observation``, ``env_method("action_masks")`` from the stacked masks.
Importing it needs stable-baselines3 (``chess_env`` itself does not).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import chess
import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from chess_env.moves import PendingMoveValues, submit_move_values
from chess_env.vector import ChessVectorEnv


class ChessVecEnv(VecEnv):
    """An SB3 ``VecEnv`` over a :class:`ChessVectorEnv`, whose engine calls stay batched.

    The vector env is switched to ``AutoresetMode.SAME_STEP`` (SB3's convention): when a game ends,
    ``step_wait`` returns the new game's observation, ``done=True``, and the finished game's last info
    with ``info["terminal_observation"]`` and ``info["TimeLimit.truncated"]``; the new game's reset
    info is in ``reset_infos``. Stepping while the vector env is in another mode (GRPO switches it to
    ``DISABLED`` during its own rollouts and back) raises RuntimeError.

    ``env_method("action_masks")`` (and ``has_attr("action_masks")``) work, so sb3-contrib's
    ``get_action_masks`` and ``MaskablePPO`` use the stacked legal-move masks. ``get_attr``,
    ``set_attr`` and ``env_method`` reach the per-game :class:`~chess_env.ChessEnv` objects.

    Seeds and options (``seed()``, ``set_options()``) apply at the next :meth:`reset`. Options that
    are the same for every game are passed to :meth:`ChessVectorEnv.reset` as they are, so
    ``set_options({"groups": B, "group_size": G})`` makes a group reset; per-game options may each
    hold one ``"fen"`` (they become ``{"fens": [...]}``).

    Episode statistics for SB3's logger (``ep_rew_mean``): wrap it in
    ``stable_baselines3.common.vec_env.VecMonitor``.

    **Group rollouts.** It also implements the group-rollout protocol that ``grpo_agent``'s collectors
    consume (``docs/architecture.md``): :meth:`group_reset` starts ``B`` groups of ``G`` games from
    shared positions, :meth:`group_step` plays one ply of every game with finished games padded until
    the next reset, :meth:`action_masks`, :meth:`side_to_move` and :meth:`engine_stats` describe the
    games. :meth:`reset` returns the games to SB3's same-step autoreset.

    Args:
        vector_env: the :class:`ChessVectorEnv` to adapt; available as ``.vector_env``.
    """

    def __init__(self, vector_env: ChessVectorEnv) -> None:
        if not isinstance(vector_env, ChessVectorEnv):
            raise ValueError(f"ChessVecEnv needs a chess_env.ChessVectorEnv, got {vector_env!r}")
        self.vector_env = vector_env
        vector_env.autoreset_mode = AutoresetMode.SAME_STEP
        super().__init__(vector_env.num_envs, vector_env.single_observation_space, vector_env.single_action_space)
        self._actions: np.ndarray | None = None

    # Core API --------------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        """Reset every game, with the seeds and options set since the last reset (used once)."""
        self.vector_env.autoreset_mode = AutoresetMode.SAME_STEP
        obs, infos = self.vector_env.reset(seed=self._vector_seed(), options=self._vector_options())
        self.reset_infos = _split_infos(infos, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Remember the actions; :meth:`step_wait` plays them (the vector env steps synchronously)."""
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        """Play the actions of :meth:`step_async`: ``(obs, rewards, dones, infos)``."""
        if self.vector_env.autoreset_mode != AutoresetMode.SAME_STEP:
            raise RuntimeError(
                f"ChessVecEnv needs its vector env in AutoresetMode.SAME_STEP, found "
                f"{self.vector_env.autoreset_mode!r} (after group_step(), call reset() before step())"
            )
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async()")
        actions, self._actions = self._actions, None
        obs, rewards, terminated, truncated, infos = self.vector_env.step(actions.reshape(self.num_envs).astype(np.int64))
        dones = terminated | truncated
        step_infos = _split_infos(infos, self.num_envs)
        finals = _split_infos(infos["final_info"], self.num_envs) if "final_info" in infos else None
        for i in np.flatnonzero(dones):
            # SB3 reports the finished game's last step; the new game's start goes to reset_infos.
            self.reset_infos[i] = step_infos[i]
            step_infos[i] = finals[i]
            step_infos[i]["terminal_observation"] = infos["final_obs"][i]
        for i, info in enumerate(step_infos):
            info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, rewards.astype(np.float32), dones, step_infos

    def close(self) -> None:
        """Close the vector env (and its engine pool if it started one)."""
        self.vector_env.close()

    # The group-rollout protocol ------------------------------------------------------------
    def group_reset(self, n_groups: int, group_size: int) -> np.ndarray:
        """Start ``n_groups`` groups of ``group_size`` games; game ``i`` is member ``i % G`` of group ``i // G``.

        Uses the seeds set by :meth:`seed` since the last reset (once), and pads finished games from now
        until the next reset (:meth:`group_step`).

        Returns:
            the observations ``(num_envs, C, 8, 8)``; every member of a group sees the same one.
        """
        self.vector_env.autoreset_mode = AutoresetMode.DISABLED
        obs, infos = self.vector_env.reset(
            seed=self._vector_seed(), options={"groups": n_groups, "group_size": group_size}
        )
        self.reset_infos = _split_infos(infos, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def group_step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Play one ply of every game; a finished game is padded (its action ignored, reward 0, its
        ``terminated``/``truncated`` repeated, its mask all False) until the next reset.

        Returns:
            ``(obs, rewards, terminated, truncated)``, each with ``num_envs`` rows; rewards are the
            mover's (see :class:`~chess_env.ChessEnv`).
        """
        # Switching mode is safe at any time: it only decides what happens to games that have finished,
        # and after SB3's reset (or a group_reset) none has.
        self.vector_env.autoreset_mode = AutoresetMode.DISABLED
        obs, rewards, terminated, truncated, _ = self.vector_env.step(np.asarray(actions, dtype=np.int64).reshape(-1))
        return obs, rewards.astype(np.float32), terminated, truncated

    def action_masks(self) -> np.ndarray:
        """Bool ``(num_envs, 4672)``: each game's legal moves (all False for a padded game)."""
        return self.vector_env.action_masks()

    def side_to_move(self) -> np.ndarray:
        """Bool ``(num_envs,)``: True where White is to move (who plays each game's next ply)."""
        return np.array([board.turn == chess.WHITE for board in self.vector_env.boards], dtype=bool)

    def submit_move_values(self) -> PendingMoveValues:
        """Start valuing every legal move of every game's current position (move groups); ``.result()`` gives
        ``(num_envs, 4672)`` float32 values for the mover, ``nan`` at illegal entries (see :mod:`chess_env.moves`).

        One MultiPV search per position at the env's shaping limit (``reward_depth`` / ``reward_nodes``), valued
        with its ``reward_transform`` and ``mate_band``; the searches run while the caller works. Don't step until
        the result is read.

        Raises:
            ValueError: the env has no engine (``shaping=False`` and no shared pool).
        """
        venv = self.vector_env
        if venv.engine is None:
            raise ValueError("move values need the engine: make the env with shaping=True or pass engine=StockfishPool(...)")
        first = venv.envs[0]
        return submit_move_values(venv.engine, venv.boards, venv.limit, first.reward_transform, first.cp_clip,
                                  first.draw_rule, first.mate_band)

    def engine_stats(self) -> dict[str, float]:
        """The vector env's :meth:`~chess_env.ChessVectorEnv.engine_stats`: searches, cache hits and misses."""
        return self.vector_env.engine_stats()

    def get_state(self) -> dict[str, Any]:
        """The vector env's :meth:`~chess_env.ChessVectorEnv.get_state`: games, generators, counters."""
        return self.vector_env.get_state()

    def set_state(self, state: dict[str, Any]) -> np.ndarray:
        """Continue from :meth:`get_state`; return the games' observations. The restored generators replace the
        seeds given to :meth:`seed` since the last reset (SB3's ``load`` seeds the env again): those are dropped."""
        self._reset_seeds()
        return self.vector_env.set_state(state)

    # Attributes and methods of the games -----------------------------------------------------
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Attribute ``attr_name`` of the selected games (AttributeError if a game lacks it)."""
        return [getattr(self.vector_env.envs[i], attr_name) for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set attribute ``attr_name`` of the selected games to ``value``."""
        for i in self._get_indices(indices):
            setattr(self.vector_env.envs[i], attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any) -> list[Any]:
        """Call ``method_name`` on the selected games; ``"action_masks"`` reads the stacked masks."""
        selected = list(self._get_indices(indices))
        if method_name == "action_masks" and not method_args and not method_kwargs:
            masks = self.vector_env.action_masks()
            return [masks[i] for i in selected]
        return [getattr(self.vector_env.envs[i], method_name)(*method_args, **method_kwargs) for i in selected]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Always False: the games are bare :class:`~chess_env.ChessEnv` objects."""
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Each game's ``rgb_array`` frame (None for every game in another render mode)."""
        if self.render_mode != "rgb_array":
            return [None] * self.num_envs
        return list(self.vector_env.render())

    # Seeds and options -----------------------------------------------------------------------
    def _vector_seed(self) -> int | list[int | None] | None:
        seeds = self._seeds
        if all(s is None for s in seeds):
            return None
        if seeds[0] is not None and seeds == [seeds[0] + i for i in range(self.num_envs)]:
            return seeds[0]  # SB3's seed(s) pattern: also seeds the group draws
        return list(seeds)

    def _vector_options(self) -> dict[str, Any] | None:
        options = self._options
        if all(not opts for opts in options):
            return None
        if all(opts == options[0] for opts in options):
            return dict(options[0])
        if all(set(opts) == {"fen"} for opts in options):
            return {"fens": [opts["fen"] for opts in options]}
        raise ValueError(
            f"per-game reset options must be equal for all games or each a single 'fen', got {options!r}"
        )


def _split_infos(infos: dict[str, Any], num_envs: int) -> list[dict[str, Any]]:
    """Gymnasium vector infos (dict of arrays + ``_key`` masks) -> one info dict per game."""
    out: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    for key, values in infos.items():
        if key.startswith("_") or key in ("final_obs", "final_info"):
            continue
        present = infos.get(f"_{key}")
        nested = _split_infos(values, num_envs) if isinstance(values, dict) else None
        for i in range(num_envs):
            if present is None or present[i]:
                out[i][key] = nested[i] if nested is not None else values[i]
    return out
