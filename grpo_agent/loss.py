"""The GRPO objective: the clipped surrogate over sampled moves, the KL to a reference, the entropy bonus.

:func:`grpo_loss` and :func:`kl_to_reference` are pure functions of tensors, so the update math reads in one
place; :func:`minibatch_loss` runs the forward passes of one minibatch and feeds them
(:meth:`grpo_agent.grpo.GRPO.train` steps the optimizer on its result).
"""

from __future__ import annotations

import torch as th

from grpo_agent.buffers import GroupRolloutBufferSamples
from grpo_agent.diagnostics import drift_statistics, normalized_entropy
from grpo_agent.policies import GRPOPolicy, masked_entropy

__all__ = ["KL_ESTIMATORS", "grpo_loss", "kl_to_reference", "minibatch_loss"]

KL_ESTIMATORS = ("exact", "k3")


def kl_to_reference(
    estimator: str, log_p: th.Tensor, probs: th.Tensor, ref_log_p: th.Tensor, actions: th.Tensor, weights: th.Tensor
) -> th.Tensor:
    """Per-position KL(pi || pi_ref) between the policy and the reference, shape ``(N,)``.

    ``"exact"``: ``sum_a p(a) (log p(a) - log p_ref(a))`` over the legal moves (the masked entries carry
    probability 0). Its gradient is the gradient of KL(pi || pi_ref) itself.

    ``"k3"`` (Schulman's estimator): ``r - log r - 1`` with ``r = p_ref(a) / p(a)`` on each sampled move ``a``,
    averaged over a position's samples with their ``weights``. Its value estimates KL(pi || pi_ref) without bias
    on samples from pi, but its gradient does not: ``E_pi[grad k3] = sum_a (p(a) - p_ref(a)) grad log p(a) =
    grad KL(pi_ref || pi)``, the reverse KL. Both vanish at ``pi = pi_ref``; away from it the reverse KL pulls
    hardest where the reference has mass the policy lacks.

    :param log_p: ``(N, A)`` normalized log-probabilities of the policy (with gradient), over all actions or over
        each position's legal-move columns (``A = L``)
    :param probs: ``(N, A)`` its probabilities, ``log_p.exp()`` (:meth:`GRPOPolicy.log_probs` gives both)
    :param ref_log_p: ``(N, A)`` those of the reference, at the same temperature, over the same columns
    :param actions: ``(N, K)`` the sampled moves' columns; :param weights: ``(N, K)`` their loss weights
    """
    if estimator == "exact":
        return (probs * (log_p - ref_log_p)).sum(dim=1)
    if estimator == "k3":
        log_ratio = ref_log_p.gather(1, actions) - log_p.gather(1, actions)
        k3 = th.exp(log_ratio) - log_ratio - 1.0
        return (weights * k3).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-12)
    raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")


def grpo_loss(
    log_prob: th.Tensor,
    old_log_prob: th.Tensor,
    advantages: th.Tensor,
    weights: th.Tensor,
    entropy: th.Tensor,
    kl: th.Tensor,
    clip_range: float,
    clip_range_high: float,
    ent_coef: float,
    kl_coef: float,
) -> tuple[th.Tensor, dict[str, float]]:
    """The GRPO objective on one minibatch of ``N`` positions with ``K`` sampled moves each.

    ``loss = -sum_ik w_ik min(rho_ik A_ik, clip(rho_ik, 1 - clip_range, 1 + clip_range_high) A_ik)
    + kl_coef * sum_i w_i KL_i - ent_coef * sum_i w_i H_i`` with ``rho = exp(log_prob - old_log_prob)``,
    ``w`` the weights normalized to sum to 1 (token aggregation: uniform; sequence aggregation: 1 / trajectory
    length), ``w_i = sum_k w_ik`` a position's weight, ``H`` its entropy over the legal moves and ``KL`` its
    divergence from the reference (:func:`kl_to_reference`).

    :param log_prob: ``(N, K)`` (or ``(N,)`` for ``K = 1``) log-probabilities of the sampled moves, with gradient
    :param old_log_prob: the same shape: those of the distribution that sampled them
    :param advantages: the same shape; :param weights: the same shape, >= 0
    :param entropy: ``(N,)``; :param kl: ``(N,)``
    :return: ``(loss, stats)`` with float stats ``policy_loss``, ``kl_ref`` and ``entropy``
    """
    if log_prob.ndim == 1:
        log_prob, old_log_prob, advantages, weights = (x[:, None] for x in (log_prob, old_log_prob, advantages, weights))
    w = weights / weights.sum().clamp_min(1e-12)
    ratio = th.exp(log_prob - old_log_prob)
    surrogate = th.min(ratio * advantages, th.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range_high) * advantages)
    policy_loss = -(w * surrogate).sum()
    w_position = w.sum(dim=1)
    kl_mean = (w_position * kl).sum()
    entropy_mean = (w_position * entropy).sum()
    loss = policy_loss + kl_coef * kl_mean - ent_coef * entropy_mean
    stats = {"policy_loss": policy_loss.item(), "kl_ref": kl_mean.item(), "entropy": entropy_mean.item()}
    return loss, stats


def minibatch_loss(
    policy: GRPOPolicy,
    ref_policy: GRPOPolicy | None,
    data: GroupRolloutBufferSamples,
    temperature: float,
    coefs: dict[str, float],
    kl_estimator: str = "exact",
    kl_in_loss: bool = True,
) -> tuple[th.Tensor, dict[str, float]]:
    """The loss of one minibatch from one forward pass of the policy (and one of the reference, when given), and
    its statistics.

    The samples' action-shaped fields may be ``(n,)`` (one ply per sample) or ``(n, K)`` (``K`` candidates of one
    position); every candidate's log-probability comes from the position's one masked softmax, taken over the
    position's legal moves only (``data.legal_actions``: the same numbers as over all 4672 actions, to float
    rounding, at a fraction of the cost). The drift
    statistics (``approx_kl``, clip fractions, ESS, ``ratio_dev``) judge only the samples whose stored
    log-probability is the policy's own, not those drawn from the Dirichlet mixture.

    :param ref_policy: the KL reference, or None when nothing reads it (no ``kl_ref`` in the stats); its
        log-probabilities are read from ``data.ref_log_prob`` when the buffer computed them for the update
    :param temperature: the rollout's temperature (the stored log-probabilities were taken at it)
    :param coefs: ``clip_range``, ``clip_range_high``, ``ent_coef`` and ``kl_coef``
    :param kl_in_loss: False: the reference is only watched (``train/kl_ref`` as a collapse signal while the loss
        has no KL term): ``kl_ref`` is the plain mean over positions of :func:`kl_to_reference` with every sample
        weighted 1, without gradient
    """
    # Every action-axis tensor below is over each position's legal moves only (``data.legal_actions``).
    actions = data.action_slots.reshape(len(data.actions), -1)
    legal = data.legal_actions
    log_p, probs = policy.log_probs(data.observations, data.legal_mask, temperature, legal_actions=legal)
    log_prob = log_p.gather(1, actions)
    old_log_prob, advantages, weights = (x.reshape(actions.shape) for x in (data.old_log_prob, data.advantages, data.weights))
    entropy = masked_entropy(log_p, probs, data.legal_mask)
    kl = th.zeros_like(entropy)
    watched: float | None = None
    if ref_policy is not None:
        ref_log_p = data.ref_log_prob
        if ref_log_p is None:
            with th.no_grad():
                ref_log_p, _ = ref_policy.log_probs(data.observations, data.legal_mask, temperature, legal_actions=legal)
        if kl_in_loss:
            kl = kl_to_reference(kl_estimator, log_p, probs, ref_log_p, actions, weights)
        else:
            with th.no_grad():
                ones = th.ones_like(weights)
                watched = float(kl_to_reference(kl_estimator, log_p, probs, ref_log_p, actions, ones).mean())
    loss, stats = grpo_loss(
        log_prob, old_log_prob, advantages, weights, entropy, kl,
        coefs["clip_range"], coefs["clip_range_high"], coefs["ent_coef"], coefs["kl_coef"],
    )
    if ref_policy is None:
        del stats["kl_ref"]
    elif watched is not None:
        stats["kl_ref"] = watched
    judged = (weights > 0) & ~data.noisy.reshape(len(actions), -1).expand_as(weights)
    stats.update(drift_statistics(log_prob - old_log_prob, advantages, coefs["clip_range"], coefs["clip_range_high"], judged))
    stats["entropy_norm"] = normalized_entropy(entropy, data.legal_mask.sum(dim=1))
    return loss, stats
