"""Group-shaped rollout buffer for GRPO."""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Literal, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer

from grpo_agent.advantages import AdvantageConfig, AdvantageMode, AdvantageScale, group_advantages, reward_to_go
from grpo_agent.diagnostics import PolicyDiversity, action_agreement, rollout_diagnostics, zero_std_groups


class GroupRolloutBufferSamples(NamedTuple):
    """A minibatch of trained plies.

    The first seven fields are those of sb3-contrib's ``MaskableRolloutBufferSamples`` (in that order), so
    code written for MaskablePPO minibatches reads these unchanged. GRPO has no critic: ``old_values`` is
    zeros and ``returns`` is the reward-to-go.
    """

    observations: th.Tensor
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    action_masks: th.Tensor
    #: per-ply loss weight: 1 for token aggregation, 1 / (trained plies of the trajectory) for sequence
    weights: th.Tensor
    #: True for plies sampled from a noised distribution (first-ply Dirichlet noise): their ``old_log_prob`` is
    #: that of the mixture actually sampled, so their importance ratio is not 1 even before any update
    noisy: th.Tensor
    #: ``(n, L)`` the KL reference's log-probabilities of the positions over their ``legal_actions`` columns,
    #: when the buffer holds them (:meth:`ReferenceLogProbs.compute_reference`); None: the loss runs the reference
    ref_log_prob: th.Tensor | None = None
    #: ``(n, L)`` int64: each position's legal moves, ascending, padded (:func:`legal_columns`); the loss works
    #: on these columns only
    legal_actions: th.Tensor | None = None
    #: ``(n, L)`` bool: False on the padding of ``legal_actions``
    legal_mask: th.Tensor | None = None
    #: ``actions``' shape, int64: the column of ``legal_actions`` holding each action (0 for padded candidates)
    action_slots: th.Tensor | None = None


def legal_columns(
    masks: np.ndarray, actions: np.ndarray, real: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each position's legal moves as a short padded row, and where its ``actions`` sit in that row.

    A position has 20-40 legal moves of the 4672 actions; the learner's softmax, entropy and KL need only those
    (an illegal move's probability is exactly 0), so the update reads the policy's logits at these columns
    (:meth:`~grpo_agent.policies.GRPOPolicy.masked_logits`). A position's row depends on the position alone (its
    legal moves in ascending order), not on the other positions of the batch, which only set the padding ``L``.

    :param masks: ``(n, A)`` bool legal-move masks
    :param actions: ``(n,)`` or ``(n, K)`` chosen actions, each legal in its row
    :param real: ``actions``' shape, bool: the entries that are actions (False: padding, slot 0); default all
    :return: ``legal`` ``(n, L)`` int64 (padding: 0), ``legal_mask`` ``(n, L)`` bool and ``slots`` (``actions``'
        shape, int64) with ``legal[i, slots[i, k]] == actions[i, k]``; ``L`` is the most legal moves of a row
        (at least 1)
    :raises ValueError: a real action that its row's mask does not allow
    """
    n, width = masks.shape
    rows, cols = np.nonzero(masks)  # row-major: ascending rows, ascending columns within a row
    counts = np.bincount(rows, minlength=n)
    starts = np.cumsum(counts) - counts
    legal_mask = np.arange(max(int(counts.max(initial=0)), 1)) < counts[:, None]
    legal = np.zeros(legal_mask.shape, dtype=np.int64)
    legal[legal_mask] = cols
    acts = np.asarray(actions, dtype=np.int64).reshape(n, -1)
    real_ = np.ones(acts.shape, dtype=bool) if real is None else np.asarray(real, dtype=bool).reshape(acts.shape)
    # The flat keys row * A + column are sorted, so one search finds every action's column.
    keys, wanted = rows.astype(np.int64) * width + cols, np.arange(n)[:, None] * width + acts
    found = np.searchsorted(keys, wanted)
    slots = np.where(real_, found - starts[:, None], 0)
    ok = keys[np.minimum(found, len(keys) - 1)] == wanted if len(keys) else np.zeros(acts.shape, dtype=bool)
    if not ok[real_].all():
        i, k = np.argwhere(real_ & ~ok)[0]
        raise ValueError(f"action {acts[i, k]} of row {i} is not legal in its mask")
    return legal, legal_mask, slots.reshape(np.shape(actions))


class ReferenceLogProbs:
    """The reference policy's log-probabilities of a rollout's trained positions, computed once per update.

    The reference does not change during an update, so with ``n_epochs > 1`` every epoch after the first would
    repeat the same forward pass; TRL's trainers likewise compute the reference's log-probabilities once per batch
    of generations, before their optimisation epochs. The rows are float32 ``(positions, L)`` over each position's
    legal moves (:func:`legal_columns`; ``L`` the most legal moves of a trained position, so about 0.2 MB for 1024
    positions rather than the 19 MB of all 4672 actions), dropped at the next ``reset()``.
    """

    ref_log_probs: np.ndarray | None = None

    def compute_reference(self, ref_policy: th.nn.Module, temperature: float, batch_size: int) -> None:
        """Store ``ref_policy.log_probs`` (at the rollout ``temperature``) of every trained position over its legal
        moves, in forward passes of ``batch_size``; later samples carry them as ``ref_log_prob``."""
        indices = self.trained_indices()  # type: ignore[attr-defined]
        masks = self.action_masks.reshape(-1, self.action_masks.shape[-1])  # type: ignore[attr-defined]
        # A position's columns are its own (padding only widens a row): the widest trained row bounds all.
        rows = np.zeros((len(masks), max(int(masks[indices].sum(axis=1).max(initial=0)), 1)), dtype=np.float32)
        self.ref_log_probs = None
        for start in range(0, len(indices), batch_size):
            batch = indices[start : start + batch_size]
            data = self._get_samples(batch)  # type: ignore[attr-defined]
            with th.no_grad():
                log_p, _ = ref_policy.log_probs(  # type: ignore[operator]
                    data.observations, data.legal_mask, temperature, legal_actions=data.legal_actions)
            rows[batch, : log_p.shape[1]] = log_p.cpu().numpy()
        self.ref_log_probs = rows

    def _reference_of(self, batch_inds: np.ndarray, width: int) -> th.Tensor | None:
        if self.ref_log_probs is None:
            return None
        return th.as_tensor(self.ref_log_probs[batch_inds, :width], device=self.device)  # type: ignore[attr-defined]

    def _with_legal_columns(self, samples: GroupRolloutBufferSamples, masks: np.ndarray, actions: np.ndarray,
                            real: np.ndarray | None, batch_inds: np.ndarray) -> GroupRolloutBufferSamples:
        """``samples`` with the legal-move columns of :func:`legal_columns` and the reference's rows over them."""
        legal, legal_mask, slots = legal_columns(masks, actions, real)
        device = self.device  # type: ignore[attr-defined]
        return samples._replace(
            ref_log_prob=self._reference_of(batch_inds, legal.shape[1]),
            legal_actions=th.as_tensor(legal, device=device),
            legal_mask=th.as_tensor(legal_mask, device=device),
            action_slots=th.as_tensor(slots, device=device),
        )


class GroupRolloutBuffer(ReferenceLogProbs, BaseBuffer):
    """Rollout buffer shaped ``(n_groups, group_size, horizon)``.

    Env ``i`` of the vector env is trajectory ``i % group_size`` of group ``i // group_size`` (the layout of a
    ``reset(options={"groups": B, "group_size": G})``). ``add`` writes one ply for all envs, like SB3's
    ``RolloutBuffer.add``; ``get(batch_size)`` yields shuffled minibatches of the *trained* plies only
    (played, and of the trained side), so pads can never reach the loss. Masks are stored as ``bool``.

    :param horizon: plies per trajectory (the SB3 ``buffer_size``)
    :param observation_space: observation space
    :param action_space: ``Discrete`` action space
    :param n_groups: start positions per rollout
    :param group_size: trajectories per start position
    :param device: torch device for the samples
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    log_probs: np.ndarray
    action_masks: np.ndarray
    valid: np.ndarray
    trained: np.ndarray
    noisy: np.ndarray
    signs: np.ndarray
    advantages: np.ndarray
    returns: np.ndarray
    weights: np.ndarray

    def __init__(
        self,
        horizon: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        n_groups: int,
        group_size: int,
        device: th.device | str = "auto",
    ):
        for name, value in (("horizon", horizon), ("n_groups", n_groups), ("group_size", group_size)):
            if int(value) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"GroupRolloutBuffer needs a Discrete action space, got {action_space}")
        super().__init__(horizon, observation_space, action_space, device, n_envs=n_groups * group_size)
        self.n_groups = n_groups
        self.group_size = group_size
        self.mask_dims = int(action_space.n)
        self.reset()

    @property
    def horizon(self) -> int:
        return self.buffer_size

    def _shape(self, *tail: int) -> tuple[int, ...]:
        return (self.n_groups, self.group_size, self.buffer_size, *tail)

    def reset(self) -> None:
        self.observations = np.zeros(self._shape(*self.obs_shape), dtype=self.observation_space.dtype)
        self.actions = np.zeros(self._shape(), dtype=np.int64)
        self.rewards = np.zeros(self._shape(), dtype=np.float32)
        self.log_probs = np.zeros(self._shape(), dtype=np.float32)
        self.action_masks = np.zeros(self._shape(self.mask_dims), dtype=bool)
        self.valid = np.zeros(self._shape(), dtype=bool)
        self.trained = np.zeros(self._shape(), dtype=bool)
        self.noisy = np.zeros(self._shape(), dtype=bool)
        self.signs = np.ones(self._shape(), dtype=np.float32)
        self.advantages = np.zeros(self._shape(), dtype=np.float32)
        self.returns = np.zeros(self._shape(), dtype=np.float32)
        self.weights = np.zeros(self._shape(), dtype=np.float32)
        self.ref_log_probs = None
        super().reset()

    def _grouped(self, x: np.ndarray) -> np.ndarray:
        """(n_envs, ...) -> (n_groups, group_size, ...)"""
        x = np.asarray(x)
        if x.shape[0] != self.n_envs:
            raise ValueError(f"expected a leading dimension of n_envs={self.n_envs}, got shape {x.shape}")
        return x.reshape(self.n_groups, self.group_size, *x.shape[1:])

    def add(  # type: ignore[override]
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        valid: np.ndarray,
        log_prob: np.ndarray | th.Tensor,
        action_masks: np.ndarray,
        trained: np.ndarray | None = None,
        sign: np.ndarray | None = None,
        noisy: np.ndarray | None = None,
    ) -> None:
        """Store ply ``pos`` of every env.

        :param obs: ``(n_envs, *obs_shape)`` observations the actions were chosen from
        :param action: ``(n_envs,)`` actions
        :param reward: ``(n_envs,)`` reward of the ply, from its mover's point of view
        :param valid: ``(n_envs,)`` bool, False for envs whose game had already finished (pads)
        :param log_prob: ``(n_envs,)`` log-probability of ``action`` under the sampling distribution
        :param action_masks: ``(n_envs, n_actions)`` bool legal-move masks
        :param trained: ``(n_envs,)`` bool, whether the ply is of a trained side (default: all valid plies)
        :param sign: ``(n_envs,)`` +-1, the mover of this ply relative to the first mover (default: +1)
        :param noisy: ``(n_envs,)`` bool, plies sampled from a noised distribution (default: none)
        """
        if self.full:
            raise ValueError(f"GroupRolloutBuffer is full (horizon={self.buffer_size}); call reset() first")
        if isinstance(log_prob, th.Tensor):
            log_prob = log_prob.detach().cpu().numpy()
        t = self.pos
        v = self._grouped(np.asarray(valid, dtype=bool))
        self.valid[:, :, t] = v
        self.observations[:, :, t] = self._grouped(obs)
        self.actions[:, :, t] = self._grouped(np.asarray(action).reshape(-1))
        # Pads are zeroed here, once, so nothing downstream can pick up whatever the env returned for them.
        self.rewards[:, :, t] = np.where(v, self._grouped(np.asarray(reward, dtype=np.float32).reshape(-1)), 0.0)
        self.log_probs[:, :, t] = np.where(v, self._grouped(np.asarray(log_prob).reshape(-1)), 0.0)
        self.action_masks[:, :, t] = self._grouped(np.asarray(action_masks, dtype=bool))
        tr = v if trained is None else (v & self._grouped(np.asarray(trained, dtype=bool)))
        self.trained[:, :, t] = tr
        if sign is not None:
            self.signs[:, :, t] = self._grouped(np.asarray(sign, dtype=np.float32))
        self.noisy[:, :, t] = False if noisy is None else (v & self._grouped(np.asarray(noisy, dtype=bool)))
        self.pos += 1
        if self.pos == self.buffer_size:
            self.full = True

    #: what a rollout writes (the rest :meth:`finish` computes): the fields a rollout worker sends back
    PLAYED = ("observations", "actions", "rewards", "log_probs", "action_masks", "valid", "trained", "noisy", "signs")

    def played(self) -> dict[str, np.ndarray | int]:
        """The played, unfinished rollout: :attr:`PLAYED` and ``pos``, the masks bit-packed (8x smaller to send)."""
        return _pack({name: getattr(self, name) for name in self.PLAYED}, self.pos)

    def load_played(self, parts: list[dict[str, np.ndarray | int]]) -> None:
        """Fill the buffer with workers' :meth:`played` shares, each share's groups after the previous one's (their
        group counts must add up to ``n_groups``); then :meth:`finish` it as a rollout played here."""
        self.reset()
        for name in self.PLAYED:
            setattr(self, name, _fit(name, np.concatenate([_unpack(part, name, self.mask_dims) for part in parts]),
                                     getattr(self, name).shape))
        # A share whose games all ended early stopped before the others; its later plies are pads already.
        self.pos = max(int(part["pos"]) for part in parts)
        self.full = self.pos == self.buffer_size

    def compute_advantages(
        self,
        advantage: AdvantageMode = "step",
        scale: AdvantageScale = "none",
        eps: float = 1e-2,
        gamma: float = 1.0,
        loss_aggregation: Literal["token", "sequence"] = "token",
    ) -> None:
        """Fill ``advantages``, ``returns`` and ``weights`` from the stored plies (see ``advantages.py``).

        Plies after ``pos`` (a rollout that stopped early because every game finished) are pads. The ``"rms"``
        scale and the weights use the trained mask, so groups dropped by :meth:`finish` take no part.
        """
        if loss_aggregation not in ("token", "sequence"):
            raise ValueError(f"loss_aggregation must be 'token' or 'sequence', got {loss_aggregation!r}")
        self._close_rollout()
        self.returns = reward_to_go(self.rewards, self.valid, self.signs, gamma)
        self._fill_advantages(advantage, scale, eps, gamma, loss_aggregation)

    def _fill_advantages(
        self, advantage: AdvantageMode, scale: AdvantageScale, eps: float, gamma: float, loss_aggregation: str
    ) -> None:
        """``advantages`` and ``weights`` from the closed rollout and its ``returns``."""
        self.advantages = group_advantages(
            self.rewards,
            self.valid,
            advantage=advantage,
            scale=scale,
            eps=eps,
            signs=self.signs,
            gamma=gamma,
            weights_mask=self.trained,
            returns=self.returns,
        )
        if loss_aggregation == "token":
            self.weights = self.trained.astype(np.float32)
        else:
            n = self.trained.sum(axis=2, keepdims=True)
            self.weights = np.where(self.trained, 1.0 / np.maximum(n, 1), 0.0).astype(np.float32)

    def _close_rollout(self) -> None:
        # Plies after ``pos`` (the rollout stopped early because every game finished) are pads.
        self.valid[:, :, self.pos :] = False
        self.trained &= self.valid

    def finish(self, config: AdvantageConfig, diversity: PolicyDiversity | None = None) -> dict[str, float]:
        """Finish the rollout in one pass: its health statistics, dynamic sampling, then the advantages.

        In that order because each step needs the one before: the statistics describe every trained ply the
        policy played (dropped groups included, so a collapse stays visible), dynamic sampling removes the
        groups whose centered values have no spread, and the advantages (with the ``"rms"`` scale and the loss
        weights) are computed over what is left.

        :param config: the advantage mode, scale, aggregation and dynamic sampling
        :param diversity: the rollout's :class:`~grpo_agent.diagnostics.PolicyDiversity`, if one was fed
        :return: ``step_reward_mean``, ``step_reward_std``, the group-collapse metrics of
            :func:`~grpo_agent.diagnostics.rollout_diagnostics` and, with dynamic sampling, ``dropped_groups``
        """
        self._close_rollout()
        self.returns = reward_to_go(self.rewards, self.valid, self.signs, config.gamma)
        trained = self.trained
        # The values the advantage mode centers, and the mask of those that reach the loss. A group's plies at
        # one ply index are all of one side, so at a trained ply the trained mask is the valid mask the
        # centering uses.
        if config.advantage == "outcome":
            centered, centered_mask = self.returns[:, :, 0].astype(np.float64), trained.any(axis=2)
        else:
            centered = self.rewards if config.advantage == "step" else self.returns
            centered, centered_mask = centered.astype(np.float64), trained.copy()
        rewards = self.rewards[trained]
        stats = {
            "step_reward_mean": float(rewards.mean()) if rewards.size else math.nan,
            "step_reward_std": float(rewards.std()) if rewards.size else math.nan,
        }
        stats.update(
            rollout_diagnostics(
                self.actions,
                self.rewards,
                self.valid,
                self.returns[:, :, 0],
                trained=trained,
                zero_std_values=centered,
                zero_std_mask=centered_mask,
                zero_std_tol=config.zero_std_tol,
                diversity=diversity,
                prefix="",
            )
        )
        if config.drop_zero_std_groups:
            dropped = zero_std_groups(centered, centered_mask, config.zero_std_tol)
            # Their plies stay valid (data for the statistics above) but leave the trained mask, so they neither
            # reach a minibatch nor shrink the "rms" scale with their zero advantages.
            self.trained[dropped] = False
            stats["dropped_groups"] = float(dropped.sum())
        self._fill_advantages(config.advantage, config.scale, config.eps, config.gamma, config.loss_aggregation)
        return {key: value for key, value in stats.items() if not math.isnan(value)}

    def trained_indices(self) -> np.ndarray:
        """Flat indices (into the ``(B * G * T)`` layout) of the plies that are trained on."""
        return np.flatnonzero(self.trained.reshape(-1))

    def get(self, batch_size: int | None = None) -> Generator[GroupRolloutBufferSamples, None, None]:  # type: ignore[override]
        """Yield shuffled minibatches of trained plies; ``batch_size=None`` gives them all at once."""
        indices = np.random.permutation(self.trained_indices())
        if batch_size is None:
            batch_size = max(len(indices), 1)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        start = 0
        while start < len(indices):
            yield self._get_samples(indices[start : start + batch_size])
            start += batch_size

    def _get_samples(self, batch_inds: np.ndarray, env=None) -> GroupRolloutBufferSamples:  # type: ignore[override]
        flat = lambda x: x.reshape(-1, *x.shape[3:])[batch_inds]  # noqa: E731
        n = len(batch_inds)
        masks, actions = flat(self.action_masks), flat(self.actions)
        samples = GroupRolloutBufferSamples(
            observations=self.to_torch(flat(self.observations)),
            actions=self.to_torch(actions),
            old_values=th.zeros(n, device=self.device),
            old_log_prob=self.to_torch(flat(self.log_probs)),
            advantages=self.to_torch(flat(self.advantages)),
            returns=self.to_torch(flat(self.returns)),
            action_masks=th.as_tensor(masks, device=self.device),
            weights=self.to_torch(flat(self.weights)),
            noisy=th.as_tensor(flat(self.noisy), device=self.device),
        )
        # Pads (finished games) hold whatever the env returned; only played plies must be legal in their masks.
        return self._with_legal_columns(samples, masks, actions, flat(self.valid), batch_inds)


class MoveGroupBuffer(ReferenceLogProbs, BaseBuffer):
    """Rollout buffer of move groups: ``horizon`` steps x ``n_envs`` positions, ``K`` candidate moves each.

    Each position is stored once (observation, legal-move mask) with its candidates' actions, old
    log-probabilities and values (the mover's view); the loss evaluates all ``K`` from one forward pass.
    ``get(batch_size)`` yields shuffled minibatches of ``batch_size`` *positions* whose action-shaped fields are
    ``(n, K)`` (``GroupRolloutBufferSamples`` with ``K`` columns).

    :param horizon: steps per rollout
    :param observation_space: observation space
    :param action_space: ``Discrete`` action space
    :param n_envs: positions per step (the games)
    :param n_candidates: ``K``, candidates per position (for every legal move: the most legal moves a position has)
    :param device: torch device for the samples
    """

    def __init__(
        self,
        horizon: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        n_envs: int,
        n_candidates: int,
        device: th.device | str = "auto",
    ):
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"MoveGroupBuffer needs a Discrete action space, got {action_space}")
        super().__init__(horizon, observation_space, action_space, device, n_envs=n_envs)
        self.n_candidates = int(n_candidates)
        self.reset()

    def reset(self) -> None:
        n, k = self.buffer_size * self.n_envs, self.n_candidates
        self.observations = np.zeros((n, *self.obs_shape), dtype=self.observation_space.dtype)
        self.action_masks = np.zeros((n, int(self.action_space.n)), dtype=bool)
        self.actions = np.zeros((n, k), dtype=np.int64)
        self.log_probs = np.zeros((n, k), dtype=np.float32)
        self.values = np.zeros((n, k), dtype=np.float32)
        self.candidates = np.zeros((n, k), dtype=bool)  # the real candidates (False: padding of "all" groups)
        self.noisy = np.zeros(n, dtype=bool)
        self.trained = np.zeros(n, dtype=bool)
        self.advantages = np.zeros((n, k), dtype=np.float32)
        self.weights = np.zeros((n, k), dtype=np.float32)
        self.ref_log_probs = None
        super().reset()

    def add(  # type: ignore[override]
        self,
        obs: np.ndarray,
        action_masks: np.ndarray,
        actions: np.ndarray,
        log_probs: np.ndarray,
        values: np.ndarray,
        candidates: np.ndarray,
        noisy: bool = False,
    ) -> None:
        """Store one step: every game's position and its candidates (each array has ``n_envs`` rows)."""
        if self.full:
            raise ValueError(f"MoveGroupBuffer is full (horizon={self.buffer_size}); call reset() first")
        rows = slice(self.pos * self.n_envs, (self.pos + 1) * self.n_envs)
        self.observations[rows] = obs
        self.action_masks[rows] = action_masks
        candidates = np.asarray(candidates, dtype=bool)
        self.candidates[rows] = candidates
        self.actions[rows] = np.where(candidates, actions, 0)
        self.log_probs[rows] = np.where(candidates, log_probs, 0.0)
        self.values[rows] = np.where(candidates, values, 0.0)
        self.noisy[rows] = noisy
        self.pos += 1
        self.full = self.pos == self.buffer_size

    PLAYED = ("observations", "action_masks", "actions", "log_probs", "values", "candidates", "noisy")

    def played(self) -> dict[str, np.ndarray | int]:
        """The played rollout's rows (see :meth:`GroupRolloutBuffer.played`)."""
        n = self.pos * self.n_envs
        return _pack({name: getattr(self, name)[:n] for name in self.PLAYED}, self.pos)

    def load_played(self, parts: list[dict[str, np.ndarray | int]]) -> None:
        """Fill the buffer with workers' :meth:`played` shares of the same number of steps: at each step, the
        positions of the first share, then those of the next (their games add up to ``n_envs``)."""
        self.reset()
        steps = {int(part["pos"]) for part in parts}
        if len(steps) != 1:
            raise ValueError(f"move-group shares must have played the same number of steps, got {sorted(steps)}")
        self.pos = steps.pop()
        n = self.pos * self.n_envs
        for name in self.PLAYED:
            # Rows are step-major: put the shares side by side within each step.
            rows = [_unpack(part, name, int(self.action_space.n)) for part in parts]
            by_step = np.concatenate([r.reshape(self.pos, -1, *r.shape[1:]) for r in rows], axis=1)
            getattr(self, name)[:n] = _fit(name, by_step.reshape(-1, *by_step.shape[2:]), getattr(self, name)[:n].shape)
        self.full = self.pos == self.buffer_size

    def finish(self, config: AdvantageConfig, weighting: str = "uniform", sampled: bool = True) -> dict[str, float]:
        """Finish the rollout in one pass: statistics, dynamic sampling, advantages and loss weights.

        :param config: the advantage scale and dynamic sampling (``advantage``, ``gamma`` and ``loss_aggregation``
            have no meaning for one-ply groups)
        :param weighting: ``"uniform"`` (sampled candidates: each counts once, duplicates included) or
            ``"policy"`` (every legal move, weighted by its old probability: the baseline is then the policy's
            expected value and the surrogate's gradient the exact expected policy gradient at the position)
        :param sampled: the candidates were sampled from the policy (then their agreement is reported)
        :return: ``step_reward_mean`` / ``_std`` (candidate values), ``group_reward_std``,
            ``group_step_reward_std``, ``frac_reward_zero_std``, ``action_agreement_mean`` / ``_p90`` (sampled
            groups only) and, with dynamic sampling, ``dropped_groups``
        """
        n = self.pos * self.n_envs
        valid = self.candidates[:n]
        values = self.values[:n].astype(np.float64)
        if weighting == "policy":
            w = np.where(valid, np.exp(self.log_probs[:n].astype(np.float64)), 0.0)
        else:
            w = valid.astype(np.float64)
        w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
        centered = np.where(valid, values - (w * values).sum(axis=1, keepdims=True), 0.0)
        spread = np.sqrt((w * centered**2).sum(axis=1))
        zero = zero_std_groups(values[:, :, None], valid[:, :, None], config.zero_std_tol)
        self.trained[:n] = ~zero if config.drop_zero_std_groups else True
        stats = {
            "step_reward_mean": float(values[valid].mean()),
            "step_reward_std": float(values[valid].std()),
            "group_reward_std": float(spread.mean()),
            "group_step_reward_std": float(spread.mean()),
            "frac_reward_zero_std": float(zero.mean()),
        }
        if sampled and self.n_candidates > 1:
            mean, p90 = action_agreement(self.actions[:n, :, None], valid[:, :, None])
            stats.update(action_agreement_mean=mean, action_agreement_p90=p90)
        if config.drop_zero_std_groups:
            stats["dropped_groups"] = float(zero.sum())
        trained = self.trained[:n]
        if config.scale == "std":
            centered = centered / (spread[:, None] + config.eps)
        elif config.scale == "rms":
            rms = math.sqrt((w[trained] * centered[trained] ** 2).sum() / max(trained.sum(), 1))
            centered = centered / (rms + config.eps)
        self.advantages[:n] = np.where(valid, centered, 0.0)
        self.weights[:n] = np.where(trained[:, None], w, 0.0)
        return {key: value for key, value in stats.items() if not math.isnan(value)}

    def get(self, batch_size: int | None = None) -> Generator[GroupRolloutBufferSamples, None, None]:  # type: ignore[override]
        """Yield shuffled minibatches of ``batch_size`` trained positions (``None``: all at once)."""
        indices = np.random.permutation(self.trained_indices())
        batch_size = max(len(indices), 1) if batch_size is None else batch_size
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        for start in range(0, len(indices), batch_size):
            yield self._get_samples(indices[start : start + batch_size])

    def trained_indices(self) -> np.ndarray:
        """Indices of the positions of this rollout that are trained on."""
        return np.flatnonzero(self.trained[: self.pos * self.n_envs])

    def _get_samples(self, batch_inds: np.ndarray, env=None) -> GroupRolloutBufferSamples:  # type: ignore[override]
        # Only the candidate columns some position of the batch uses (groups of every legal move are padded).
        # Candidates fill the columns from the left, so the widest position of the batch bounds them.
        k = max(int(self.candidates[batch_inds].sum(axis=1).max()), 1) if len(batch_inds) else 1
        cols = (batch_inds, slice(0, k))
        n = len(batch_inds)
        masks, actions = self.action_masks[batch_inds], self.actions[cols]
        samples = GroupRolloutBufferSamples(
            observations=self.to_torch(self.observations[batch_inds]),
            actions=self.to_torch(actions),
            old_values=th.zeros(n, device=self.device),
            old_log_prob=self.to_torch(self.log_probs[cols]),
            advantages=self.to_torch(self.advantages[cols]),
            returns=self.to_torch(self.values[cols]),
            action_masks=th.as_tensor(masks, device=self.device),
            weights=self.to_torch(self.weights[cols]),
            noisy=th.as_tensor(self.noisy[batch_inds], device=self.device),
        )
        return self._with_legal_columns(samples, masks, actions, self.candidates[cols], batch_inds)


def _pack(fields: dict[str, np.ndarray], pos: int) -> dict[str, np.ndarray | int]:
    """A buffer's played fields for sending: bool masks bit-packed on their last axis."""
    out: dict[str, np.ndarray | int] = dict(fields)
    out["action_masks"] = np.packbits(fields["action_masks"], axis=-1)
    out["pos"] = pos
    return out


def _unpack(part: dict[str, np.ndarray | int], name: str, n_actions: int) -> np.ndarray:
    value = np.asarray(part[name])
    return np.unpackbits(value, axis=-1, count=n_actions).astype(bool) if name == "action_masks" else value


def _fit(name: str, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` if it has this buffer's ``shape``; the shares of a rollout that do not add up to it are refused."""
    if value.shape != shape:
        raise ValueError(f"the shares' {name} add up to shape {value.shape}, this buffer holds {shape}")
    return value
