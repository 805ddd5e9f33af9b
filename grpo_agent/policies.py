"""Masked categorical policies for GRPO (no value head).

Temperature lives in exactly one place, :meth:`GRPOPolicy.masked_logits`: ``logits / temperature``, then
the legal-move mask. Rollout sampling, the stored ``old_log_prob``, the loss's new log-probabilities, the
reference log-probabilities and the entropy all come from it (through :meth:`GRPOPolicy.log_probs`, or
:meth:`GRPOPolicy.get_distribution` for SB3 callers), so they can only disagree if they are called with
different temperatures (GRPO passes its single ``temperature`` to all of them).

The hot paths read :meth:`GRPOPolicy.log_probs`, one ``log_softmax`` and one ``softmax`` of the masked logits,
rather than a ``MaskableCategorical``: that distribution renormalizes its logits three times with
``logsumexp``, and torch's CPU ``exp``/``logsumexp`` take a slow path on the ``-1e8`` of every illegal move
(about 25x slower than ``softmax``, measured on ``(256, 4672)``), which made the distribution cost a sixth of
an update. The numbers are the same to float rounding (``tests/test_policies.py`` pins them to sb3-contrib's).
The update and the pretraining go further: they read the logits at each position's legal moves only
(``legal_actions``), so their softmax, entropy, KL and gradients run over ~30-60 entries instead of 4672.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.distributions import MaskableCategoricalDistribution
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from chess_env.encoding import PIECE_PLANES
from grpo_agent.attacks import N_ATTACK_PLANES, N_CHECK_PLANES, AttackPlanes, CheckPlanes

#: AlphaZero move planes per from-square: 56 queen-like + 8 knight + 9 underpromotion.
N_MOVE_PLANES = 73
#: The logit of an illegal move: sb3-contrib's ``MaskableCategorical`` value, finite so ``p * log p`` stays 0.
ILLEGAL_LOGIT = -1e8


def masked_entropy(log_p: th.Tensor, probs: th.Tensor, action_masks: th.Tensor | None = None) -> th.Tensor:
    """Entropy over the legal moves per row, ``-sum_a p log p``, from :meth:`GRPOPolicy.log_probs` (the formula
    of sb3-contrib's ``MaskableCategorical.entropy``: illegal entries contribute exactly 0)."""
    p_log_p = probs * log_p
    if action_masks is not None:
        p_log_p = th.where(action_masks, p_log_p, 0.0)
    return -p_log_p.sum(dim=-1)


class ResidualBlock(nn.Module):
    """conv3x3 - GroupNorm - ReLU - conv3x3 - GroupNorm, plus the skip connection, then ReLU.

    GroupNorm rather than BatchNorm: its output does not depend on train/eval mode or on the other samples
    of the batch, so the log-probabilities computed in the update equal those of the rollout bit for bit
    (a BatchNorm network silently changes the policy between sampling and training).
    """

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(groups, channels)
        # Start each block as the identity so a deep trunk trains as stably as a shallow one.
        nn.init.zeros_(self.norm2.weight)

    def forward(self, x: th.Tensor) -> th.Tensor:
        y = th.relu(self.norm1(self.conv1(x)))
        return th.relu(x + self.norm2(self.conv2(y)))


class ChessResNet(BaseFeaturesExtractor):
    """Residual tower over the ``(C, 8, 8)`` board planes.

    The output is the flattened ``(channels, 8, 8)`` feature map (``features_dim = channels * 64``), so a
    convolutional policy head can restore the board geometry.

    :param observation_space: ``Box`` of shape ``(C, 8, 8)``
    :param n_blocks: residual blocks (>= 0)
    :param channels: feature maps per layer (> 0)
    :param attack_planes: add the 12 attack maps of :class:`~grpo_agent.attacks.AttackPlanes` (computed from
        the piece planes by fixed convolutions) to the input planes. Off by default (the networks of before)
    :param check_planes: add the 8 planes of :class:`~grpo_agent.attacks.CheckPlanes` (the squares from which
        each king would be in check, by each way of giving check). Off by default
    """

    def __init__(self, observation_space: spaces.Box, n_blocks: int = 4, channels: int = 64,
                 attack_planes: bool = False, check_planes: bool = False):
        shape = observation_space.shape
        if shape is None or len(shape) != 3 or tuple(shape[1:]) != (8, 8):
            raise ValueError(f"ChessResNet needs observations shaped (C, 8, 8), got {shape}")
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        if channels <= 0:
            raise ValueError(f"channels must be > 0, got {channels}")
        super().__init__(observation_space, features_dim=channels * 64)
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        for name, wanted in (("attack_planes", attack_planes), ("check_planes", check_planes)):
            if wanted and shape[0] < PIECE_PLANES:
                raise ValueError(f"{name} needs the 12 piece planes first in the observation, got {shape}")
        self.channels = channels
        self.attacks = AttackPlanes() if attack_planes else None
        self.checks = CheckPlanes() if check_planes else None
        in_planes = shape[0] + (N_ATTACK_PLANES if attack_planes else 0) + (N_CHECK_PLANES if check_planes else 0)
        self.stem = nn.Sequential(
            nn.Conv2d(in_planes, channels, 3, padding=1, bias=False), nn.GroupNorm(groups, channels), nn.ReLU()
        )
        self.blocks = nn.Sequential(*[ResidualBlock(channels, groups) for _ in range(n_blocks)])

    def forward(self, observations: th.Tensor) -> th.Tensor:
        derived = [plane(observations) for plane in (self.attacks, self.checks) if plane is not None]
        if derived:
            observations = th.cat([observations, *derived], dim=1)
        return self.blocks(self.stem(observations)).flatten(1)


class ConvPolicyHead(nn.Module):
    """AlphaZero-style policy head: ``(channels, 8, 8)`` features -> 73 move planes per from-square.

    ``chess_env.encoding`` numbers actions ``from_square * 73 + plane`` with python-chess squares
    (``rank * 8 + file``, mover's frame) and its observation planes are indexed ``[plane, rank, file]`` in the
    same frame, so the conv output ``[plane, rank, file]`` is permuted to ``[rank, file, plane]`` and
    flattened: index ``(rank * 8 + file) * 73 + plane`` is exactly the action index.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.net = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, N_MOVE_PLANES, 1)
        )
        # Near-uniform initial policy over the legal moves: maximal entropy at the start of training.
        nn.init.normal_(self.net[-1].weight, std=1e-3)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, features: th.Tensor) -> th.Tensor:
        x = features.view(-1, self.channels, 8, 8)
        return self.net(x).permute(0, 2, 3, 1).reshape(x.shape[0], 64 * N_MOVE_PLANES)


class GRPOPolicy(BasePolicy):
    """Masked categorical policy without a value head.

    :param observation_space: observation space
    :param action_space: ``Discrete`` action space
    :param lr_schedule: learning-rate schedule (sets the optimizer's initial learning rate)
    :param net_arch: hidden layer sizes of the MLP between the features and the logits (linear head only)
    :param activation_fn: activation of that MLP
    :param policy_head: ``"linear"`` (MLP to ``n`` logits) or ``"conv"`` (AlphaZero 73-plane head, needs a
        features extractor with a ``channels`` attribute and an ``(channels, 8, 8)`` feature map, e.g.
        :class:`ChessResNet`, and ``n == 4672``)
    :param features_extractor_class: features extractor class
    :param features_extractor_kwargs: its keyword arguments
    :param normalize_images: SB3 image normalization (off: the planes are already in [0, 1])
    :param optimizer_class: optimizer class
    :param optimizer_kwargs: optimizer keyword arguments (besides the learning rate)
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        policy_head: str = "linear",
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = False,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ):
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"GRPOPolicy needs a Discrete action space, got {action_space}")
        if policy_head not in ("linear", "conv"):
            raise ValueError(f"policy_head must be 'linear' or 'conv', got {policy_head!r}")
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )
        self.net_arch = [256] if net_arch is None else list(net_arch)
        self.activation_fn = activation_fn
        self.policy_head = policy_head
        self.n_actions = int(action_space.n)
        self.features_extractor = self.make_features_extractor()
        self.action_dist = MaskableCategoricalDistribution(self.n_actions)

        if policy_head == "conv":
            channels = getattr(self.features_extractor, "channels", None)
            if channels is None or self.n_actions != 64 * N_MOVE_PLANES:
                raise ValueError(
                    f"policy_head='conv' needs a features extractor with a `channels` attribute and 4672 "
                    f"actions, got {type(self.features_extractor).__name__} and {self.n_actions} actions"
                )
            self.action_net: nn.Module = ConvPolicyHead(channels)
        else:
            layers: list[nn.Module] = []
            last = self.features_extractor.features_dim
            for width in self.net_arch:
                layers += [nn.Linear(last, width), activation_fn()]
                last = width
            out = nn.Linear(last, self.n_actions)
            nn.init.normal_(out.weight, std=1e-3)
            nn.init.zeros_(out.bias)
            self.action_net = nn.Sequential(*layers, out)

        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                activation_fn=self.activation_fn,
                policy_head=self.policy_head,
                features_extractor_class=self.features_extractor_class,
                features_extractor_kwargs=self.features_extractor_kwargs,
                optimizer_class=self.optimizer_class,
                optimizer_kwargs=self.optimizer_kwargs,
                lr_schedule=self._dummy_schedule,
            )
        )
        return data

    def logits(self, obs: PyTorchObs) -> th.Tensor:
        """Raw (untempered, unmasked) logits, shape ``(batch, n_actions)``."""
        return self.action_net(self.extract_features(obs, self.features_extractor))

    def masked_logits(
        self,
        obs: PyTorchObs,
        action_masks: th.Tensor | np.ndarray | None = None,
        temperature: float = 1.0,
        legal_actions: th.Tensor | None = None,
    ) -> th.Tensor:
        """``logits / temperature`` with every illegal move at :data:`ILLEGAL_LOGIT`, shape ``(batch, n_actions)``.

        With ``legal_actions`` (``(batch, L)`` action indices, each row a position's legal moves padded to ``L``,
        :func:`~grpo_agent.buffers.legal_columns`) only those columns are kept, shape ``(batch, L)``, and
        ``action_masks`` is ``(batch, L)``: False on the padding. A softmax over them is the softmax over the
        4672 masked logits (an illegal move's ``exp`` is exactly 0), minus most of its cost: the learner's
        per-position work on the action axis shrinks from 4672 entries to the ~30-60 legal moves.

        This is the only place where temperature and masking are applied.
        """
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        logits = self.logits(obs)
        if legal_actions is not None:
            logits = logits.gather(1, legal_actions)
        logits = logits / temperature
        if action_masks is None:
            return logits
        masks = th.as_tensor(action_masks, dtype=th.bool, device=logits.device).reshape(logits.shape)
        return th.where(masks, logits, ILLEGAL_LOGIT)

    def log_probs(
        self,
        obs: PyTorchObs,
        action_masks: th.Tensor | np.ndarray | None = None,
        temperature: float = 1.0,
        legal_actions: th.Tensor | None = None,
    ) -> tuple[th.Tensor, th.Tensor]:
        """``(log_p, probs)``: the normalized log-probabilities (illegal entries about -1e8) and the probabilities
        (illegal entries 0) of ``softmax(logits / temperature)`` restricted to the legal moves; over the columns
        ``legal_actions`` when given (see :meth:`masked_logits`).

        Read the probabilities from here rather than ``log_p.exp()``: torch's CPU ``exp`` is slow on -1e8.
        """
        logits = self.masked_logits(obs, action_masks, temperature, legal_actions)
        return th.log_softmax(logits, dim=1), th.softmax(logits, dim=1)

    def get_distribution(  # type: ignore[override]
        self,
        obs: PyTorchObs,
        action_masks: th.Tensor | np.ndarray | None = None,
        temperature: float = 1.0,
    ) -> MaskableCategoricalDistribution:
        """The action distribution of :meth:`log_probs` as SB3's ``MaskableCategoricalDistribution`` (for SB3
        callers; GRPO's own code reads :meth:`log_probs`, which is faster)."""
        dist = self.action_dist.proba_distribution(self.masked_logits(obs, action_masks, temperature))
        if action_masks is not None:
            # The logits are masked already; this only hands the distribution its masks (for its entropy).
            dist.apply_masking(action_masks)
        return dist

    def forward(  # type: ignore[override]
        self,
        obs: th.Tensor,
        action_masks: th.Tensor | np.ndarray | None = None,
        temperature: float = 1.0,
        deterministic: bool = False,
    ) -> tuple[th.Tensor, th.Tensor]:
        """Sample (or take the mode of) the distribution; return ``(actions, log_prob)`` of that distribution."""
        log_p, probs = self.log_probs(obs, action_masks, temperature)
        actions = self._choose(log_p, probs, deterministic)
        return actions, log_p.gather(1, actions[:, None]).squeeze(1)

    @staticmethod
    def _choose(log_p: th.Tensor, probs: th.Tensor, deterministic: bool) -> th.Tensor:
        """One action per row: the most likely, or a draw from ``probs``."""
        return log_p.argmax(dim=1) if deterministic else th.multinomial(probs, 1).squeeze(1)

    def evaluate_actions(
        self,
        obs: th.Tensor,
        actions: th.Tensor,
        action_masks: th.Tensor | np.ndarray | None = None,
        temperature: float = 1.0,
    ) -> tuple[th.Tensor, th.Tensor]:
        """``(log_prob, entropy)`` of ``actions``; the entropy sums over legal moves only."""
        log_p, probs = self.log_probs(obs, action_masks, temperature)
        masks = None if action_masks is None else th.as_tensor(action_masks, dtype=th.bool, device=log_p.device)
        log_prob = log_p.gather(1, actions.long().reshape(-1, 1)).squeeze(1)
        return log_prob, masked_entropy(log_p, probs, None if masks is None else masks.reshape(log_p.shape))

    def _predict(  # type: ignore[override]
        self,
        observation: PyTorchObs,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> th.Tensor:
        return self._choose(*self.log_probs(observation, action_masks), deterministic)

    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Actions for ``observation`` (temperature 1; ``deterministic`` takes the most likely legal move).

        With ``action_masks`` the action is always legal; without them the policy is unmasked and a warning
        says so.

        Raises:
            ValueError: a row of ``action_masks`` allows no move (a finished game: the masked distribution
                would be uniform over every action, legal or not); the message names the rows.
        """
        if action_masks is None:
            warnings.warn("GRPOPolicy.predict called without action_masks: the action may be illegal", stacklevel=2)
        self.set_training_mode(False)
        obs_tensor, vectorized = self.obs_to_tensor(observation)
        if action_masks is not None:
            action_masks = np.asarray(action_masks, dtype=bool).reshape(-1, self.n_actions)
            empty = np.flatnonzero(~action_masks.any(axis=1))
            if len(empty):
                raise ValueError(f"action_masks rows {empty.tolist()} allow no move (all False): a finished game has "
                                 "no legal move to predict; reset it first")
        with th.no_grad():
            actions = self._predict(obs_tensor, deterministic=deterministic, action_masks=action_masks)
        out = actions.cpu().numpy().reshape(-1)
        if not vectorized:
            out = out.squeeze(axis=0)
        return out, state


class ChessResNetPolicy(GRPOPolicy):
    """:class:`GRPOPolicy` with a :class:`ChessResNet` trunk (``n_blocks``/``channels`` through
    ``features_extractor_kwargs``, default 4 x 64) and the AlphaZero convolutional policy head."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        features_extractor_class: type[BaseFeaturesExtractor] = ChessResNet,
        policy_head: str = "conv",
        **kwargs: Any,
    ):
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            features_extractor_class=features_extractor_class,
            policy_head=policy_head,
            **kwargs,
        )


#: Flattened observation, an MLP (``net_arch``, default ``[256]``), then a linear layer to the logits.
MlpPolicy = GRPOPolicy
