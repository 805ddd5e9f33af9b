"""First-ply exploration noise for rollouts (AlphaZero's root Dirichlet noise)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th


def dirichlet_mix(
    probs: Any,
    legal_mask: Any,
    alpha: float = 0.3,
    frac: float = 0.25,
    rng: np.random.Generator | int | None = None,
) -> Any:
    """AlphaZero-style root noise: ``(1 - frac) * p + frac * Dir(alpha)`` over each row's legal moves.

    The noise is drawn only on legal moves (``Dir(alpha)`` of dimension ``#legal`` for each row); illegal
    entries of the result are exactly 0 and every row sums to 1.

    The algorithm must sample the action from the *mixed* distribution and store ``log(mixed[action])`` as the
    old log-probability: those are the log-probs of the distribution actually sampled. The update's importance
    ratio ``pi(a) / mixed(a)`` then corrects for the noise; storing the policy's own log-prob instead would
    silently make the ratio wrong on every noisy ply.

    :param probs: ``(N, A)`` probabilities (numpy array or torch tensor; the result has the same type, dtype
        and device).
    :param legal_mask: ``(N, A)`` bool; every row needs at least one legal move.
    :param alpha: Dirichlet concentration (> 0; AlphaZero used 0.3 for chess).
    :param frac: weight of the noise in ``[0, 1]`` (AlphaZero: 0.25).
    :param rng: numpy Generator or seed for the noise.
    """
    if not alpha > 0 or not np.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha}")
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"frac must be in [0, 1], got {frac}")
    is_tensor = isinstance(probs, th.Tensor)
    p = probs.detach().cpu().double().numpy() if is_tensor else np.asarray(probs, dtype=np.float64)
    legal = legal_mask.detach().cpu().numpy() if isinstance(legal_mask, th.Tensor) else np.asarray(legal_mask)
    legal = legal.astype(bool)
    if p.ndim != 2 or legal.shape != p.shape:
        raise ValueError(f"probs and legal_mask must both be (N, A), got {p.shape} and {legal.shape}")
    n_legal = legal.sum(axis=1)
    if (n_legal == 0).any():
        raise ValueError(f"rows {np.flatnonzero(n_legal == 0).tolist()} have no legal move")
    rng = np.random.default_rng(rng)
    # Dir(alpha) on each row's legal entries = independent Gamma(alpha) draws normalized per row.
    gammas = np.zeros_like(p)
    gammas[legal] = rng.gamma(alpha, size=int(n_legal.sum()))
    sums = gammas.sum(axis=1, keepdims=True)
    # Gamma draws with a small alpha can underflow to 0 for a whole row; fall back to uniform noise there.
    noise = np.where(sums > 0, gammas / np.where(sums > 0, sums, 1.0), legal / n_legal[:, None])
    base = np.where(legal, p, 0.0)
    mass = base.sum(axis=1, keepdims=True)
    # A row whose legal moves got no probability at all (underflow) is treated as uniform over them.
    base = np.where(mass > 0, base / np.where(mass > 0, mass, 1.0), legal / n_legal[:, None])
    mixed = (1.0 - frac) * base + frac * noise
    mixed /= mixed.sum(axis=1, keepdims=True)
    if is_tensor:
        return th.as_tensor(mixed, dtype=probs.dtype, device=probs.device)
    return mixed.astype(np.asarray(probs).dtype if np.asarray(probs).dtype.kind == "f" else np.float64)
