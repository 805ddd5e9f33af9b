"""A Stockfish-distilled starting policy for GRPO: label positions with a score for every legal move
(:mod:`grpo_agent.pretrain_data`), then train the GRPO policy network on them by cross-entropy over the legal
moves, and warm-start GRPO (policy and KL reference) from the result.

**Targets** ``q`` over the legal moves of a position, from the engine's values ``v`` in ``[-1, 1]`` (mover's
view) and mate distances: ``"best"`` is one-hot on the engine's best move; ``"soft"`` is
``softmax(v / label_temperature)``, except that a position with a forced mate puts all the mass on its
shortest mates (``score_value`` maps every mate to 1, and a spread over mates of different lengths would
teach the policy to dawdle and miss mate-in-one puzzles), and a won ending searched at ``conversion_depth``
puts it on the deeper search's best moves (its values are win probabilities near 1 that a softmax would
spread over every safe move).

**Loss** of a position: ``-sum_a q(a) log pi(a | s)`` with ``pi`` the policy's own masked distribution at
temperature 1 (:meth:`~grpo_agent.policies.GRPOPolicy.log_probs`, the distribution GRPO samples
from), averaged over minibatches; AdamW, a cosine (or constant) learning rate, gradient-norm clipping.

**Held out**: whole walks, ``heldout_frac`` of the positions, so neighbouring positions of one walk never
straddle the split. The held-out loss is measured ``evals_per_epoch`` times an epoch; training stops after
``patience`` measurements without improvement and the best parameters are kept. ``heldout_top1`` is the
share of held-out positions whose most likely legal move has the best move's rank (ties count).

Files in the run folder: ``pretrain_dataset.npz`` (reused when its settings key matches, rebuilt otherwise),
``grpo_starts.epd`` (start positions for the GRPO stage: :func:`~grpo_agent.pretrain_data.grpo_starts`),
``progress_pretrain.csv`` (SB3 logger: ``pretrain/loss``, ``pretrain/heldout_loss``,
``pretrain/heldout_top1``, ...), ``pretrain_summary.json`` and ``pretrained.zip`` (a
:class:`~grpo_agent.grpo.GRPO` model: ``GRPO.load`` and ``grpo-chess eval`` read it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import chess
import numpy as np
import torch as th
from stable_baselines3.common.logger import Logger, make_output_format

from chess_env.encoding import observation
from grpo_agent.grpo import GRPO
from grpo_agent.policies import GRPOPolicy
from grpo_agent.pretrain_data import DATASET_FILE, STARTS_FILE, LabelledPositions, build_dataset, grpo_starts
from grpo_agent.progress import Progress
from grpo_agent.save_util import atomic_write

__all__ = [
    "DATASET_FILE",
    "MODEL_FILE",
    "STARTS_FILE",
    "Batch",
    "LabelledPositions",
    "PretrainConfig",
    "build_dataset",
    "fit",
    "move_targets",
    "parse_section",
    "pretrain",
    "pretrain_loss",
    "run_pretrain",
    "warm_start",
]

TARGETS = ("best", "soft")
LR_SCHEDULES = ("cosine", "constant")
CONVERSION_KEEP = ("all", "mates")
MODEL_FILE = "pretrained.zip"
LOG_SUFFIX = "_pretrain"
SUMMARY_FILE = "pretrain_summary.json"


@dataclass
class PretrainConfig:
    """Settings of :func:`pretrain`. The fields marked (data) define the labelled dataset (its settings key);
    the others only the training, so changing them reuses the dataset.

    :param positions: (data) start-position spec(s) for :func:`~chess_env.positions.load_positions`
    :param n_positions: (data) labelled positions to keep
    :param walk_plies: (data) plies walked from each start; every position on the walk is labelled
    :param walk_random: (data) probability that a walk's move is uniformly random (a likely blunder)
    :param walk_temperature: (data) temperature, in value units, of the engine-guided walk moves
    :param conversion: (data) share of the walks that are conversion games, the engine-guided mover against a
        uniformly random one, labelled on the engine-guided side only (see :mod:`grpo_agent.pretrain_data`)
    :param conversion_plies: (data) plies of a conversion game at most (it ends earlier at mate or a draw)
    :param conversion_keep: (data) which of a conversion game's positions are kept: ``"all"`` of the engine
        side's, or only ``"mates"``, those where it has a forced mate (the game is still searched ply by ply
        to play it, but the long won-but-not-yet-mating stretch, whose targets are flat, is not stored)
    :param conversion_depth: (data) ``None`` (default) or the Stockfish depth at which a conversion game's won
        endings (the random side down to king and pawns, no mate seen at ``depth``) are searched again, kept and
        labelled one-hot on the deeper search's best move, which the engine side then plays (see
        :mod:`grpo_agent.pretrain_data`)
    :param depth: (data) Stockfish depth of the MultiPV search labelling a position
    :param seed: (data) seed of the walks, the held-out split, the network and the minibatches
    :param targets: ``"soft"`` (MultiPV softmax) or ``"best"`` (one-hot on the best move)
    :param label_temperature: temperature of the soft targets, in value units (winprob: 0.1 is ~50 cp near 0)
    :param heldout_frac: share of the positions (whole walks) held out for the held-out metrics
    :param epochs: passes over the training positions at most
    :param batch_size: positions per minibatch
    :param lr: peak AdamW learning rate
    :param weight_decay: AdamW weight decay
    :param lr_schedule: ``"cosine"`` (to 0 over ``epochs``) or ``"constant"``
    :param max_grad_norm: gradient-norm clip
    :param mate_weight: loss weight of the positions where the mover has a forced mate (about 0.4% of the
        walks' positions, and two thirds of the shipped puzzles), relative to 1 for the others
    :param evals_per_epoch: held-out measurements (and log rows) per epoch
    :param patience: measurements without a better held-out loss before training stops
    :param engine_processes: Stockfish processes labelling (``None``: one per core)
    :param torch_threads: torch threads while training (``None``: one per core; the labelling engines have
        quit by then, so the cores they used are free: 1.5x the positions/s of one thread on two cores)
    :param device: torch device of the network
    """

    positions: str | list[str] = "builtin"
    n_positions: int = 20_000
    walk_plies: int = 8
    walk_random: float = 0.2
    walk_temperature: float = 0.1
    conversion: float = 0.0
    conversion_plies: int = 120
    conversion_keep: str = "all"
    conversion_depth: int | None = None
    depth: int = 4
    seed: int = 0
    targets: str = "soft"
    label_temperature: float = 0.3
    heldout_frac: float = 0.05
    epochs: int = 3
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    lr_schedule: str = "cosine"
    max_grad_norm: float = 1.0
    mate_weight: float = 1.0
    evals_per_epoch: int = 2
    patience: int = 3
    engine_processes: int | None = None
    torch_threads: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.positions, (list, tuple)):
            self.positions = [str(p) for p in self.positions]
            if not self.positions:
                raise ValueError("positions must name at least one position set, got []")
        elif not isinstance(self.positions, (str, os.PathLike)):
            raise ValueError(f"positions must be a load_positions spec or a list of them, got {self.positions!r}")
        for name in ("n_positions", "depth", "epochs", "batch_size", "evals_per_epoch", "patience"):
            _integer(name, getattr(self, name), 1)
        for name in ("walk_plies", "conversion_plies", "seed"):
            _integer(name, getattr(self, name), 0)
        for name in ("engine_processes", "torch_threads"):
            if getattr(self, name) is not None:
                _integer(name, getattr(self, name), 1)
        if self.conversion_depth is not None:
            _integer("conversion_depth", self.conversion_depth, self.depth + 1)
        for name in ("walk_temperature", "label_temperature", "lr", "max_grad_norm", "mate_weight"):
            _number(name, getattr(self, name), lambda v: v > 0, "> 0")
        _number("weight_decay", self.weight_decay, lambda v: v >= 0, ">= 0")
        for name in ("walk_random", "conversion"):
            _number(name, getattr(self, name), lambda v: 0 <= v <= 1, "in [0, 1]")
        _number("heldout_frac", self.heldout_frac, lambda v: 0 < v < 1, "in (0, 1)")
        for name, allowed in (("targets", TARGETS), ("lr_schedule", LR_SCHEDULES),
                              ("conversion_keep", CONVERSION_KEEP)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


def _integer(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _number(name: str, value: Any, valid: Callable[[float], bool], text: str) -> None:
    # bool is an int to Python, and a YAML "1e-3" (no dot) arrives as a string: both are named, not compared.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not valid(value):
        raise ValueError(f"{name} must be a number {text}, got {value!r}")


# -- training ----------------------------------------------------------------------------------------


def move_targets(data: LabelledPositions, kind: str, temperature: float) -> np.ndarray:
    """Per move (CSR order): the target probability ``q`` of ``kind`` (see the module docstring); it sums to 1
    over each position's legal moves."""
    if kind not in TARGETS:
        raise ValueError(f"targets must be one of {TARGETS}, got {kind!r}")
    if kind == "best":
        return data.best().astype(np.float32)
    sharp = (data.row_max(data.mates) > 0) | np.repeat(data.deep, data.counts)
    # Forced mate or deep won ending: the best-ranked moves share the mass (logit 0, the rest -inf);
    # otherwise softmax(v / T).
    logits = np.where(sharp, np.where(data.top(), 0.0, -np.inf), data.values / temperature)
    weights = np.exp(logits - data.row_max(logits))
    rows = np.repeat(np.arange(len(data)), data.counts)
    return (weights / np.bincount(rows, weights, minlength=len(data))[rows]).astype(np.float32)


def observations(fens: Sequence[str]) -> np.ndarray:
    """The policy's observation planes of each FEN, ``(n, 21, 8, 8)`` float32 (no history: FENs have none)."""
    return np.stack([observation(chess.Board(fen)) for fen in fens])


class Batch(NamedTuple):
    """One minibatch over each position's legal moves: column ``j`` of row ``i`` is the move ``legal[i, j]``, rows
    padded to the most legal moves of the batch (the policy's softmax needs no other action: an illegal move's
    probability is exactly 0, and the 4672-wide rows cost a fifth of a step)."""

    obs: th.Tensor
    masks: th.Tensor  # (n, L) bool: the real columns (False: padding)
    targets: th.Tensor  # (n, L) q, zero on the padding
    top: th.Tensor  # (n, L) bool: the moves with the best rank
    weights: th.Tensor  # per position: mate_weight where the mover has a forced mate, else 1
    legal: th.Tensor  # (n, L) int64: the action of each column (padding: 0)


class _Batches:
    """Builds :class:`Batch` es of chosen positions from the CSR layout."""

    def __init__(self, data: LabelledPositions, targets: np.ndarray, mate_weight: float, device: th.device) -> None:
        self.obs = observations(data.fens)
        self.offsets, self.counts = data.offsets, data.counts
        self.actions = data.actions.astype(np.int64)
        self.targets, self.top = targets, data.top()
        self.weights = np.where(data.mating(), mate_weight, 1.0)
        self.device = device

    def __call__(self, idx: np.ndarray) -> Batch:
        counts = self.counts[idx]
        # Each chosen row's entries, 0..count-1: their column in the batch and, from the row's offset, in the CSR.
        cols = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        rows, flat = np.repeat(np.arange(len(idx)), counts), np.repeat(self.offsets[idx], counts) + cols
        width = max(int(counts.max(initial=0)), 1)
        columns = []
        for per_move, dtype in ((None, bool), (self.targets, np.float32), (self.top, bool), (self.actions, np.int64)):
            out = np.zeros((len(idx), width), dtype=dtype)
            out[rows, cols] = True if per_move is None else per_move[flat]
            columns.append(out)
        masks, targets, top, legal = columns
        arrays = (self.obs[idx], masks, targets, top, self.weights[idx].astype(np.float32), legal)
        return Batch(*(th.as_tensor(x, device=self.device) for x in arrays))


def pretrain_loss(policy: GRPOPolicy, batch: Batch) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """Per position, the cross-entropy ``-sum_a q(a) log pi(a | s)`` over the legal moves, ``log pi`` and ``pi``
    over the batch's columns.

    ``pi`` is the policy's masked distribution at temperature 1, exactly what GRPO samples from
    (:meth:`~grpo_agent.policies.GRPOPolicy.log_probs`), here over each position's legal moves: its
    log-probabilities are about -1e8 on the padding, where the targets are 0.
    """
    log_pi, pi = policy.log_probs(batch.obs, batch.masks, legal_actions=batch.legal)
    return -(batch.targets * log_pi).sum(dim=1), log_pi, pi


def _top1(batch: Batch, log_pi: th.Tensor) -> th.Tensor:
    """Per position: whether the most likely legal move has the best rank."""
    return batch.top.gather(1, log_pi.argmax(dim=1, keepdim=True)).squeeze(1)


@th.no_grad()
def heldout_metrics(policy: GRPOPolicy, batches: _Batches, idx: np.ndarray, batch_size: int) -> dict[str, float]:
    """Over the positions ``idx``: the mean loss (unweighted), the top-1 rate and entropy / log #legal."""
    policy.set_training_mode(False)
    sums = np.zeros(3)
    for start in range(0, len(idx), batch_size):
        batch = batches(idx[start : start + batch_size])
        loss, log_pi, pi = pretrain_loss(policy, batch)
        entropy = -(pi * log_pi).sum(dim=1)
        sums += [loss.sum().item(), _top1(batch, log_pi).sum().item(),
                 (entropy / batch.masks.sum(dim=1).float().log()).sum().item()]
    loss, top1, entropy_norm = sums / len(idx)
    return {"heldout_loss": loss, "heldout_top1": top1, "heldout_entropy_norm": entropy_norm}


def split_heldout(walks: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, heldout)`` position indices: whole walks, in seeded order, held out until ``frac`` of the
    positions are.

    Raises:
        ValueError: fewer than two walks, so one side would be empty.
    """
    ids, counts = np.unique(walks, return_counts=True)
    if len(ids) < 2:
        raise ValueError(f"the held-out split needs positions from at least 2 walks, got {len(ids)}")
    order = np.random.default_rng([seed, 1]).permutation(len(ids))
    n_held = min(int(np.searchsorted(np.cumsum(counts[order]), frac * len(walks))) + 1, len(ids) - 1)
    held = np.isin(walks, ids[order[:n_held]])
    return np.flatnonzero(~held), np.flatnonzero(held)


class _BestSoFar:
    """Early stopping on the held-out loss: keeps the best metrics and parameters, counts stale measurements."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {"heldout_loss": math.inf}
        self.state: dict[str, th.Tensor] | None = None
        self.stale = 0

    def update(self, metrics: dict[str, float], policy: GRPOPolicy) -> None:
        if metrics["heldout_loss"] < self.metrics["heldout_loss"]:
            self.metrics, self.stale = metrics, 0
            self.state = {k: v.detach().clone() for k, v in policy.state_dict().items()}
        else:
            self.stale += 1


def fit(policy: GRPOPolicy, data: LabelledPositions, config: PretrainConfig, logger: Logger | None = None) -> dict[str, float]:
    """Train ``policy`` on ``data`` (see the module docstring) and leave it with its best held-out parameters.

    :return: the best measurement's metrics (``heldout_loss``, ``heldout_top1``, ``heldout_entropy_norm``,
        ``loss``, ``top1``, ``epoch``, ...), plus ``train_seconds``, ``steps``, ``positions_train`` and
        ``positions_heldout``
    """
    rng = np.random.default_rng([config.seed, 2])
    train_idx, held_idx = split_heldout(data.walks, config.heldout_frac, config.seed)
    batches = _Batches(data, move_targets(data, config.targets, config.label_temperature), config.mate_weight,
                       policy.device)
    steps_per_epoch = math.ceil(len(train_idx) / config.batch_size)
    total = config.epochs * steps_per_epoch
    measure_at = {round(steps_per_epoch * k / config.evals_per_epoch) for k in range(1, config.evals_per_epoch + 1)}
    optimizer = th.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    cosine = config.lr_schedule == "cosine"
    schedule = th.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)) if cosine else 1.0)
    best, step, sums = _BestSoFar(), 0, np.zeros(3)  # sums: loss, top-1 hits, positions since the last row
    started = time.perf_counter()
    progress = Progress(total, "pretraining", "batches")
    threads = th.get_num_threads()
    th.set_num_threads(config.torch_threads or os.cpu_count() or 1)
    try:
        while step < total and best.stale < config.patience:
            order = rng.permutation(train_idx)
            for i in range(steps_per_epoch):
                policy.set_training_mode(True)
                batch = batches(order[i * config.batch_size : (i + 1) * config.batch_size])
                loss, log_pi, _ = pretrain_loss(policy, batch)
                optimizer.zero_grad()
                ((batch.weights * loss).sum() / batch.weights.sum()).backward()
                th.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
                optimizer.step()
                schedule.step()
                step += 1
                sums += [loss.sum().item(), _top1(batch, log_pi).sum().item(), len(loss)]
                progress.update(1, loss=sums[0] / sums[2])
                if i + 1 in measure_at:
                    metrics = heldout_metrics(policy, batches, held_idx, 4 * config.batch_size)
                    metrics.update(loss=sums[0] / sums[2], top1=sums[1] / sums[2], epoch=step / steps_per_epoch,
                                   lr=schedule.get_last_lr()[0], seconds=time.perf_counter() - started)
                    sums[:] = 0
                    _report(metrics, logger, step)
                    best.update(metrics, policy)
                    if best.stale >= config.patience:
                        print(f"pretrain: early stop at epoch {metrics['epoch']:.2f} ({best.stale} held-out "
                              f"measurements without a better loss)")
                        break
    finally:
        th.set_num_threads(threads)  # the caller's setting again (e.g. GRPO's one thread beside its engines)
        progress.close()
    if best.state is not None:
        policy.load_state_dict(best.state)
    return {**best.metrics, "train_seconds": time.perf_counter() - started, "steps": float(step),
            "positions_train": float(len(train_idx)), "positions_heldout": float(len(held_idx))}


def _report(metrics: dict[str, float], logger: Logger | None, step: int) -> None:
    """One log row (``pretrain/<name>``) and one plain line."""
    if logger is not None:
        for name, value in metrics.items():
            logger.record(f"pretrain/{name}", value)
        logger.dump(step=step)
    print(f"pretrain: epoch {metrics['epoch']:.2f} loss {metrics['loss']:.4f} top1 {metrics['top1']:.3f} | held-out "
          f"loss {metrics['heldout_loss']:.4f} top1 {metrics['heldout_top1']:.3f} entropy/log#legal "
          f"{metrics['heldout_entropy_norm']:.3f} ({metrics['seconds']:.0f} s)", flush=True)


# -- API -------------------------------------------------------------------------------------------------


def pretrain(config: PretrainConfig, run_dir: str | os.PathLike, policy: str | type[GRPOPolicy] = "ChessResNetPolicy",
             policy_kwargs: dict[str, Any] | None = None, engine_path: str | os.PathLike | None = None) -> GRPO:
    """Build (or reuse) the labelled dataset in ``run_dir``, train a fresh ``policy`` network on it and save
    ``run_dir/pretrained.zip`` atomically.

    :param config: the settings
    :param run_dir: the run folder (created if needed)
    :param policy: the GRPO policy (alias or class); the same ``policy``/``policy_kwargs`` as the GRPO run that
        :func:`warm_start` will load the result into
    :param policy_kwargs: e.g. ``dict(features_extractor_kwargs=dict(n_blocks=4, channels=64))``
    :param engine_path: Stockfish binary (default: :func:`chess_env.engine.find_stockfish`)
    :return: the trained model, a :class:`~grpo_agent.grpo.GRPO` whose reference policy is the trained one,
        attached to a one-game env without shaping (``GRPO.load`` the zip to get it without)
    """
    run_dir = Path(run_dir)
    dataset = build_dataset(config, None, run_dir, engine_path)
    data = LabelledPositions.load(dataset)
    atomic_write(run_dir / STARTS_FILE, ("\n".join(grpo_starts(data, config.seed)) + "\n").encode())
    from chess_env import ChessVectorEnv

    model = GRPO(policy, ChessVectorEnv(1, shaping=False), group_size=1, policy_kwargs=policy_kwargs,
                 seed=config.seed, device=config.device)
    logger = Logger(str(run_dir), [make_output_format("csv", str(run_dir), LOG_SUFFIX)])
    try:
        stats = fit(model.policy, data, config, logger)
    finally:
        logger.close()
    model.sync_reference()
    tmp = run_dir / f"{MODEL_FILE}.tmp"
    model.save(tmp)
    os.replace(tmp, run_dir / MODEL_FILE)
    with np.load(dataset, allow_pickle=False) as stored:
        labelling = {"settings": json.loads(str(stored["settings"])), "label_seconds": float(stored["label_seconds"])}
    summary = {"config": dataclasses.asdict(config), "dataset": {**labelling, "positions": len(data)}, "train": stats}
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    print(f"pretrain: held-out top1 {stats['heldout_top1']:.3f} loss {stats['heldout_loss']:.4f} after "
          f"{stats['train_seconds']:.0f} s of training -> {run_dir / MODEL_FILE}")
    return model


def warm_start(model: GRPO, pretrained_path: str | os.PathLike) -> None:
    """Load the policy parameters of a pretrained zip into ``model``'s policy and reference policy (the KL
    anchor). The optimizer is left as it is (fresh, for a newly built model).

    Raises:
        ValueError: the file is not a model zip, or its observation space or network does not fit ``model``'s.
    """
    from stable_baselines3.common.save_util import load_from_zip_file

    path = Path(pretrained_path)
    if not path.is_file():
        raise ValueError(f"pretrained model {str(path)!r} does not exist")
    data, params, _ = load_from_zip_file(path, device=model.device, print_system_info=False)
    if data is None or params is None or "policy" not in params:
        raise ValueError(f"{str(path)!r} holds no policy parameters")
    space = data.get("observation_space")
    if space is not None and space.shape != model.observation_space.shape:
        raise ValueError(f"{str(path)!r} was trained on observations {space.shape}, the model takes "
                         f"{model.observation_space.shape} (a different history?)")
    try:
        model.policy.load_state_dict(params["policy"])
    except RuntimeError as exc:
        raise ValueError(f"the network in {str(path)!r} (policy_kwargs {data.get('policy_kwargs')}) does not fit "
                         f"the model's (policy_kwargs {model.policy_kwargs}): {exc}") from exc
    model.sync_reference()


#: keys of a ``pretrain:`` config section besides the :class:`PretrainConfig` fields
RUN_KEYS = ("policy", "policy_kwargs", "engine_path")
#: every key a ``pretrain:`` config section may hold
PRETRAIN_KEYS = (*(f.name for f in dataclasses.fields(PretrainConfig)), *RUN_KEYS)


def parse_section(cfg: dict[str, Any] | None) -> tuple[PretrainConfig, dict[str, Any]]:
    """Check a ``pretrain:`` config section: the :class:`PretrainConfig` fields plus ``policy``,
    ``policy_kwargs`` and ``engine_path``. Returns the config and those three (the ones present) for
    :func:`pretrain`.

    Raises:
        ValueError: an unknown key (named) or a bad value (named).
    """
    cfg = dict(cfg or {})
    allowed = set(PRETRAIN_KEYS)
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ValueError(f"unknown pretrain key(s) {unknown} (allowed: {', '.join(sorted(allowed))})")
    run_kwargs = {key: cfg.pop(key) for key in RUN_KEYS if key in cfg}
    return PretrainConfig(**cfg), run_kwargs


def run_pretrain(cfg: dict[str, Any] | None, run_dir: str | os.PathLike) -> Path:
    """Pretrain from a ``pretrain:`` config section (see :func:`parse_section`) into ``run_dir``; return the
    path of ``pretrained.zip``."""
    config, run_kwargs = parse_section(cfg)
    pretrain(config, run_dir, **run_kwargs)
    return Path(run_dir) / MODEL_FILE
