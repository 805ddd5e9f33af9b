"""The players of an evaluation: trained models as move functions, the random mover, Stockfish.

:func:`load_policy` resolves a ``RUN_OR_MODEL`` argument (a model zip, a run directory, ``random`` or
a Stockfish spec), :func:`as_move_fn` turns any of them into a ``board -> chess.Move`` function, and
:class:`Opponent` names a ladder opponent. Stockfish plays through
:class:`chess_env.engine.EnginePlayer`, one process per thread (:class:`ThreadPlayers`).
"""

from __future__ import annotations

import json
import os
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chess
import chess.engine
import numpy as np

from chess_env.encoding import decode_action, legal_action_mask, legal_actions, observation, observation_channels
from chess_env.engine import EnginePlayer, Strength, find_stockfish
from chess_env.opponents import MoveFn, RandomOpponent


class RandomPolicy(RandomOpponent):
    """Plays a uniformly random legal move drawn from its own generator (the env's random opponent).

    :func:`as_move_fn` gives every game a fresh instance on the game's own stream, so results
    do not depend on which worker thread plays which game.
    """

    name = "random"


class ThreadPlayers:
    """One :class:`~chess_env.engine.EnginePlayer` per calling thread, at ``strength``, started on first use.

    The players are configured at ``strength`` (full strength by default) and play other strengths
    per move: python-chess restores the configured options after such a move, so a full-strength
    player judges positions at full strength whatever opponent it played for.
    """

    def __init__(self, strength: Strength | None = None, path: str | None = None, hash_mb: int = 16) -> None:
        self.strength = strength
        self.path = find_stockfish(path)  # fail now, naming the path, not in a worker thread
        self.hash_mb = hash_mb
        self._players: dict[int, EnginePlayer] = {}
        self._lock = threading.Lock()

    def get(self) -> EnginePlayer:
        """This thread's player."""
        key = threading.get_ident()
        with self._lock:
            player = self._players.get(key)
            if player is None:
                player = self._players[key] = EnginePlayer(self.strength, self.path, self.hash_mb)
        return player

    def close(self) -> None:
        """Stop every thread's player."""
        with self._lock:
            players, self._players = list(self._players.values()), {}
        for player in players:
            player.close()


@dataclass(frozen=True)
class Opponent:
    """A ladder opponent: the random mover (``strength`` None) or Stockfish at a :class:`Strength`.

    Specs (:meth:`parse`): ``random``, or any Stockfish strength spec of
    :class:`chess_env.engine.Strength`: ``sf<N>`` (``Skill Level`` N, 0-20; ``stockfish`` is
    ``sf20``), ``elo<N>`` / ``sf_elo<N>`` (``UCI_Elo`` N), ``sf:skill=3,depth=5``, ... An own limit
    (``@d<depth>``, ``@n<nodes>``, ``@t<seconds>``, e.g. ``sf3@d5``) overrides the evaluation's
    default engine limit.
    """

    strength: Strength | None = None

    @classmethod
    def parse(cls, spec: str) -> Opponent:
        """Parse an opponent spec; ``ValueError`` names a malformed one."""
        if spec.strip().lower() == "random":
            return cls()
        try:
            return cls(Strength.parse(spec))
        except ValueError as exc:
            raise ValueError(f"unknown opponent {spec!r}: expected random or a Stockfish strength ({exc})") from None

    @property
    def name(self) -> str:
        """Canonical name, used in metric keys (``eval/score_vs_<name>``) and file names."""
        return "random" if self.strength is None else self.strength.name

    @property
    def is_engine(self) -> bool:
        return self.strength is not None

    def limit(self, default: chess.engine.Limit) -> chess.engine.Limit | None:
        """The search limit: the opponent's own, else ``default``; None for the random mover."""
        return None if self.strength is None else self.strength.limit(default)

    def describe(self, engine_name: str, limit: chess.engine.Limit | None) -> str:
        """Human-readable player name for PGN headers, e.g. ``Stockfish 15.1 (skill 0, depth 5)``."""
        return "Random mover" if self.strength is None else self.strength.describe(engine_name, limit)


def engine_limit(depth: int | None, movetime: float | None) -> chess.engine.Limit:
    """The evaluation's engine limit: ``movetime`` seconds per move when set, else ``depth``."""
    return chess.engine.Limit(time=movetime) if movetime is not None else chess.engine.Limit(depth=depth)


class EnginePolicy:
    """Stockfish as a policy (a baseline): thread-safe, one engine process per calling thread.

    Args:
        opponent: the strength, as an :class:`Opponent` or its spec string (default ``stockfish``,
            full strength).
        depth: search depth when the spec carries no limit of its own.
        movetime: seconds per move instead of ``depth``.
        path: the Stockfish binary.
    """

    def __init__(self, opponent: Opponent | str = "stockfish", depth: int | None = 1,
                 movetime: float | None = None, path: str | None = None) -> None:
        self.opponent = Opponent.parse(opponent) if isinstance(opponent, str) else opponent
        if not self.opponent.is_engine:
            raise ValueError(f"EnginePolicy needs a Stockfish spec, got {self.opponent.name!r}")
        self.limit = self.opponent.limit(engine_limit(depth, movetime))
        self._players = ThreadPlayers(self.opponent.strength, path)
        self.name = self.opponent.name

    def __call__(self, board: chess.Board) -> chess.Move:
        # A new "game" per move clears the hash: the move depends on the position alone, and at
        # full strength equals the ACPL judge's best move at the same depth.
        return self._players.get().play(board, self.limit, game=object())

    def describe(self) -> str:
        """A player name for PGN headers, e.g. ``Stockfish 15.1 (skill 0, depth 5)`` (starts this thread's engine)."""
        return self.opponent.describe(self._players.get().name, self.limit)

    def close(self) -> None:
        """Stop the engine processes."""
        self._players.close()


# Model inference is serialised: forward passes are tiny next to engine searches, and a stochastic
# policy samples inside ``torch.random.fork_rng`` (process-global state) so it must not overlap.
_MODEL_LOCK = threading.Lock()


def infer_history(model: Any) -> int:
    """The number of history positions a model's observation space was built with.

    Raises:
        ValueError: the observation shape matches no ``observation_channels(history)``.
    """
    shape = tuple(model.observation_space.shape)
    for history in range(65):
        if shape == (observation_channels(history), 8, 8):
            return history
    raise ValueError(f"model observation shape {shape} matches no chess_env observation (C, 8, 8) "
                     f"with C = observation_channels(history)")


def policy_log_probs(model: Any, board: chess.Board, history: int | None = None) -> tuple[list[chess.Move], np.ndarray]:
    """The legal moves of ``board`` and the model's log-probabilities of them, at temperature 1.

    The distribution is the model policy's own masked one (``policy.get_distribution`` with the
    legal-move mask: GRPO's :class:`~grpo_agent.policies.GRPOPolicy` or MaskablePPO's), on the
    observation of ``board`` with ``history`` positions from its move stack (default: the model's,
    :func:`infer_history`). The log-probabilities sum to 1 in probability over the returned moves.

    Raises:
        ValueError: ``board`` has no legal move.
    """
    import torch

    actions = legal_actions(board)
    if len(actions) == 0:
        raise ValueError(f"no legal move in {board.fen()!r}")
    history = infer_history(model) if history is None else history
    policy = model.policy
    obs, _ = policy.obs_to_tensor(observation(board, history))
    mask = legal_action_mask(board)[None]
    with _MODEL_LOCK, torch.no_grad():
        policy.set_training_mode(False)
        # Categorical's logits are normalised log-probabilities; masked actions sit at about -1e8.
        log_probs = policy.get_distribution(obs, action_masks=mask).distribution.logits[0].cpu().numpy()
    return [decode_action(board, int(a)) for a in actions], log_probs[actions].astype(np.float64)


class _ModelMoveFn:
    """``board -> move`` for an SB3 model with masked ``predict``."""

    def __init__(self, model: Any, history: int, deterministic: bool, rng: np.random.Generator | None) -> None:
        self.model = model
        self.history = history
        self.deterministic = deterministic
        self.rng = rng if rng is not None else np.random.default_rng()

    def __call__(self, board: chess.Board) -> chess.Move:
        obs = observation(board, self.history)
        mask = legal_action_mask(board)
        with _MODEL_LOCK:
            if self.deterministic:
                action, _ = self.model.predict(obs, action_masks=mask, deterministic=True)
            else:
                import torch

                device = getattr(self.model, "device", None)
                devices = [] if device is None or device.type != "cuda" else [device.index or 0]
                # Sample from a private torch stream: fork_rng restores the global state after.
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(int(self.rng.integers(2**63)))
                    action, _ = self.model.predict(obs, action_masks=mask, deterministic=False)
        return decode_action(board, int(np.asarray(action).reshape(-1)[0]))


def as_move_fn(policy: Any, history: int | None = None, deterministic: bool = True,
               rng: np.random.Generator | None = None) -> MoveFn:
    """Turn a policy into a ``board -> chess.Move`` function.

    Args:
        policy: an SB3 model with ``predict(obs, action_masks=..., deterministic=...)`` (GRPO,
            MaskablePPO), a :class:`RandomPolicy`, or any callable ``board -> chess.Move`` (used
            as is; it must be thread-safe when evaluated with several workers).
        history: history positions in the observation; ``None`` infers it from the model's
            observation space. A value that contradicts the model is an error.
        deterministic: greedy (arg-max) moves; otherwise sample from the policy with ``rng``.
        rng: generator for random movers and stochastic models; never the global one.

    Raises:
        ValueError: ``policy`` is neither a model nor callable, or ``history`` does not fit it.
    """
    if isinstance(policy, RandomPolicy):
        return RandomPolicy(rng) if rng is not None else policy
    if hasattr(policy, "predict") and hasattr(policy, "observation_space"):
        inferred = infer_history(policy)
        if history is not None and history != inferred:
            raise ValueError(f"history={history!r} does not match the model's observation space "
                             f"{tuple(policy.observation_space.shape)} (history {inferred})")
        return _ModelMoveFn(policy, inferred, deterministic, rng)
    if callable(policy):
        return policy
    raise ValueError(f"cannot evaluate {policy!r}: expected an SB3 model with predict() or a callable board -> Move")


def _model_class_module(path: Path) -> str | None:
    """The module of the policy class recorded in an SB3 zip, or ``None`` if unreadable."""
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
        return data["policy_class"]["__module__"]
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile):
        return None


def find_model_zip(run_dir: str | os.PathLike) -> Path:
    """The model of a run directory: ``best_model.zip`` (kept by :class:`EvalLadderCallback`), else
    ``final_model.zip``, else the newest zip; the shallowest wins among equal names.

    Raises:
        ValueError: the directory holds no ``.zip`` file.
    """
    run_dir = Path(run_dir)
    zips = sorted(run_dir.rglob("*.zip"))
    if not zips:
        raise ValueError(f"run directory {str(run_dir)!r} contains no model .zip")
    for preferred in ("best_model.zip", "final_model.zip"):
        named = [z for z in zips if z.name == preferred]
        if named:
            return min(named, key=lambda z: len(z.parts))
    return max(zips, key=lambda z: z.stat().st_mtime)


def load_model(path: str | os.PathLike, device: str = "cpu") -> Any:
    """Load a GRPO or MaskablePPO model zip (the class is read from the zip, both are tried).

    Raises:
        ValueError: the file is missing or neither class can load it.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model file {str(path)!r} does not exist")
    from sb3_contrib import MaskablePPO

    loaders: list[Any] = [MaskablePPO]
    try:
        from grpo_agent import GRPO  # absent until the GRPO algorithm is installed

        module = _model_class_module(path) or ""
        loaders = [GRPO, MaskablePPO] if module.startswith("grpo_agent") or not module else [MaskablePPO, GRPO]
    except ImportError:
        pass
    errors = []
    for cls in loaders:
        try:
            return cls.load(path, device=device)
        except Exception as exc:  # noqa: BLE001 - try the next class, report all failures below
            errors.append(f"{cls.__name__}: {exc}")
    raise ValueError(f"cannot load model {str(path)!r}: " + "; ".join(errors))


def load_policy(spec: str, device: str = "cpu", stockfish_path: str | None = None,
                engine_depth: int | None = 1, engine_movetime: float | None = None) -> tuple[Any, str]:
    """Resolve a ``RUN_OR_MODEL`` argument to ``(policy, name)``.

    ``random`` is the random mover; ``stockfish`` or any Stockfish opponent spec (``sf3``,
    ``elo1500@d6``) is Stockfish as the policy; a ``.zip`` is loaded with :func:`load_model`;
    a directory is a run whose model is found by :func:`find_model_zip`.
    """
    if spec == "random":
        return RandomPolicy(), "random"
    path = Path(spec)
    if path.is_dir():
        model_path = find_model_zip(path)
        return load_model(model_path, device), f"{path.name}/{model_path.stem}"
    if path.suffix == ".zip" or path.exists():
        return load_model(path, device), path.stem
    try:
        opponent = Opponent.parse(spec)
    except ValueError:
        raise ValueError(f"RUN_OR_MODEL {spec!r} is not a model .zip, a run directory, 'random' or a "
                         "Stockfish spec such as 'stockfish' or 'sf5'") from None
    return EnginePolicy(opponent, engine_depth, engine_movetime, stockfish_path), f"stockfish_{opponent.name}"
