"""Group-collapse diagnostics against hand computations on small arrays; pads hold loud values that would
change every answer if they leaked into a count, a mean or a spread."""

import math
import warnings

import numpy as np
import pytest
import torch as th

from grpo_agent.diagnostics import (
    PolicyDiversity,
    action_agreement,
    action_agreement_per_ply,
    clip_fractions,
    drift_statistics,
    effective_sample_size,
    frac_zero_std,
    group_spread,
    normalized_entropy,
    policy_diversity_kl,
    rollout_diagnostics,
    within_group_reward_std,
    within_group_step_reward_std,
    zero_std_groups,
)

PAD = 1e6
LN2, LN3 = math.log(2.0), math.log(3.0)


def agreement_case():
    # B=2 boards, G=4 trajectories, T=2 plies. Pads repeat an action of the same cell, so a leak would raise
    # the agreement.
    actions = np.array(
        [
            [[5, 1], [5, 2], [7, 1], [5, 1]],  # board 0
            [[3, 9], [3, 9], [3, 4], [3, 9]],  # board 1
        ]
    )
    valid = np.array(
        [
            [[True, True], [True, True], [True, False], [True, False]],
            [[True, False], [True, False], [True, True], [True, False]],
        ]
    )
    return actions, valid


def test_action_agreement_by_hand():
    actions, valid = agreement_case()
    agreement, counted = action_agreement_per_ply(actions, valid)
    # board 0: ply 0 {5,5,7,5} -> 3/4; ply 1 only {1,2} valid -> 1/2. board 1: ply 0 {3,3,3,3} -> 1;
    # ply 1 has a single valid trajectory -> not counted.
    np.testing.assert_array_equal(counted, [[True, True], [True, False]])
    np.testing.assert_allclose(agreement[counted], [0.75, 0.5, 1.0])
    mean, p90 = action_agreement(actions, valid)
    assert mean == pytest.approx(0.75)
    # linear percentile of (0.5, 0.75, 1.0) at 90%: position 1.8 -> 0.75 + 0.8 * 0.25
    assert p90 == pytest.approx(0.95)


def test_action_agreement_all_distinct_and_action_zero():
    actions = np.array([[[0], [1], [2], [3]]])
    mean, _ = action_agreement(actions, np.ones_like(actions, dtype=bool))
    assert mean == pytest.approx(0.25)
    mean, _ = action_agreement(np.zeros((1, 3, 1), dtype=int), np.ones((1, 3, 1), dtype=bool))
    assert mean == pytest.approx(1.0)  # action 0 is a real action, not the pad sentinel


def test_action_agreement_undefined_and_bad_input():
    actions = np.zeros((1, 2, 3), dtype=int)
    valid = np.array([[[True, True, False], [False, False, False]]])
    assert all(math.isnan(v) for v in action_agreement(actions, valid))
    with pytest.raises(ValueError, match="valid has shape"):
        action_agreement(actions, valid[:, :, :2])
    with pytest.raises(ValueError, match="percentile"):
        action_agreement(actions, valid, q=120)


def test_group_spread_and_reward_std_by_hand():
    traj = np.array([[1.0, 3.0, PAD], [2.0, 2.0, 2.0], [5.0, PAD, PAD]])
    valid = np.array([[True, True, False], [True, True, True], [True, False, False]])
    std, ptp = group_spread(traj, valid)
    np.testing.assert_allclose(std, [1.0, 0.0, 0.0])
    np.testing.assert_allclose(ptp, [2.0, 0.0, 0.0])
    # boards 0 and 1 count (board 2 has one trajectory): mean(1, 0)
    assert within_group_reward_std(traj, valid) == pytest.approx(0.5)


def test_step_reward_std_by_hand():
    rewards = np.array([[[1.0, 2.0], [3.0, 6.0], [5.0, PAD]]])
    valid = np.array([[[True, True], [True, True], [True, False]]])
    expected = (math.sqrt(8.0 / 3.0) + 2.0) / 2.0  # ply 0: std(1,3,5); ply 1: std(2,6)
    assert within_group_step_reward_std(rewards, valid) == pytest.approx(expected)


def test_zero_std_groups_exact():
    traj = np.array([[1.0, 1.0], [1.0, 1.0 + 1e-3], [4.0, PAD]])
    valid = np.array([[True, True], [True, True], [True, False]])
    np.testing.assert_array_equal(zero_std_groups(traj, valid, tol=1e-6), [True, False, True])
    np.testing.assert_array_equal(zero_std_groups(traj, valid, tol=1e-2), [True, True, True])
    np.testing.assert_array_equal(zero_std_groups(traj, valid, tol=0.0), [True, False, True])
    assert frac_zero_std(traj, valid, tol=1e-6) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="tol"):
        zero_std_groups(traj, valid, tol=-1.0)


def test_zero_std_groups_per_ply():
    # equal totals but different plies: zero spread as trajectories, not as per-ply values
    rewards = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.25], [0.5, PAD]]])
    valid = np.array([[[True, True], [True, True]], [[True, True], [True, False]]])
    np.testing.assert_array_equal(zero_std_groups(rewards, valid), [False, True])
    totals = np.where(valid, rewards, 0).sum(axis=2)[:1]
    np.testing.assert_array_equal(zero_std_groups(totals, np.ones((1, 2), bool)), [True])


def _log(p):
    p = np.asarray(p, dtype=np.float64)
    return np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), -1e8)  # SB3 masks illegal logits to -1e8


def diversity_case():
    # B=2 boards, G=3 trajectories, T=2 plies, A=3 actions; NaN marks pads: garbage that would poison any sum
    lp = np.full((2, 3, 2, 3), np.nan)
    # board 0 ply 0: supports overlap on action 0; m = (0.5, 0.25, 0.25); each KL = 0.5 ln 2
    lp[0, 0, 0], lp[0, 1, 0] = _log([0.5, 0.5, 0.0]), _log([0.5, 0.0, 0.5])
    lp[0, 0, 1] = _log([0.2, 0.3, 0.5])  # board 0 ply 1: a single valid trajectory, not counted
    # board 1: identical policies at ply 0 (KL 0); disjoint one-hots at ply 1 (KL = ln 2, the bound)
    lp[1, :, 0] = _log([0.1, 0.6, 0.3])
    lp[1, 0, 1], lp[1, 1, 1] = _log([1.0, 0.0, 0.0]), _log([0.0, 1.0, 0.0])
    valid = ~np.isnan(lp[..., 0])
    expected = (0.5 * LN2 + 0.0 + LN2) / 3
    return lp, valid, expected


def test_policy_diversity_kl_by_hand():
    lp, valid, expected = diversity_case()
    assert policy_diversity_kl(lp, valid) == pytest.approx(expected, rel=1e-5)
    assert policy_diversity_kl(th.as_tensor(lp), valid) == pytest.approx(expected, rel=1e-5)
    probs = np.where(np.isnan(lp), np.nan, np.exp(lp))
    assert policy_diversity_kl(probs, valid, probs=True) == pytest.approx(expected, rel=1e-5)


def test_policy_diversity_masks_and_streaming():
    lp, valid, expected = diversity_case()
    # A mask that removes action 2 of board 0 ply 0 changes only that cell: p0=(.5,.5,0), p1=(.5,0,0), both
    # taken as given (not renormalized), m=(.5,.25,0): KL0 = .5 ln2, KL1 = 0 -> cell .25 ln2.
    masks = np.ones(lp.shape, dtype=bool)
    masks[0, :, 0, 2] = False
    assert policy_diversity_kl(lp, valid, masks) == pytest.approx((0.25 * LN2 + LN2) / 3, rel=1e-5)
    acc = PolicyDiversity()
    for t in range(2):
        acc.add(th.as_tensor(lp[:, :, t]).reshape(6, 3), valid[:, :, t])  # flat (B*G, A) rows
    assert acc.count == 3
    assert acc.value() == pytest.approx(expected, rel=1e-5)
    acc.reset()
    assert math.isnan(acc.value())
    with pytest.raises(ValueError, match="log_probs has shape"):
        acc.add(th.zeros(5, 3), valid[:, :, 0])


def test_policy_diversity_full_action_space_is_finite():
    rng = np.random.default_rng(0)
    logits = th.as_tensor(rng.normal(size=(3, 4, 4672)), dtype=th.float32)
    legal = th.as_tensor(rng.random((3, 4, 4672)) < 0.01)
    logits = logits.masked_fill(~legal, -1e8)
    acc = PolicyDiversity()
    acc.add(th.log_softmax(logits, dim=-1), np.ones((3, 4), bool), legal)
    assert 0.0 < acc.value() <= math.log(4) + 1e-6


def test_normalized_entropy_by_hand():
    entropy = np.array([LN2, 0.0, 0.5 * LN3, 1.0])
    n_legal = np.array([2, 1, 3, 4])
    valid = np.array([True, True, True, False])
    # the single-legal-move ply and the invalid ply are excluded: mean(1, 0.5)
    assert normalized_entropy(entropy, n_legal, valid) == pytest.approx(0.75)
    assert math.isnan(normalized_entropy([0.0], [1]))


def test_effective_sample_size_by_hand():
    assert effective_sample_size([0.0, LN2]) == pytest.approx(9 / 10)  # w = (1, 2): 3^2 / (2 * 5)
    assert effective_sample_size([0.3, 0.3, 0.3]) == pytest.approx(1.0)
    assert effective_sample_size([1000.0, 1000.0]) == pytest.approx(1.0)  # no overflow
    assert effective_sample_size([0.0, LN2, 50.0], valid=[True, True, False]) == pytest.approx(0.9)
    assert effective_sample_size([0.0, -1000.0]) == pytest.approx(0.5)  # one sample carries the weight


def test_drift_statistics_of_a_collapsed_policy_are_inf_without_a_warning():
    # A rare move whose log-probability rose by 800 nats (all-move groups of a collapsing policy).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = drift_statistics(np.array([0.0, 800.0]), np.array([1.0, 1.0]), 0.2, 0.28)
    assert stats["ratio_dev"] == math.inf and stats["approx_kl"] == math.inf
    assert stats["clip_fraction_high"] == pytest.approx(0.5)
    assert stats["ess"] == pytest.approx(0.5)


def test_clip_fractions_by_hand():
    ratio = np.array([0.7, 0.7, 1.3, 1.3, 1.0, 5.0])
    adv = np.array([-1.0, 1.0, 1.0, -1.0, 1.0, 1.0])
    valid = np.array([True, True, True, True, True, False])
    # low: only (0.7, A<0); high: only (1.3, A>0) with the 0.28 upper epsilon; the pad (5.0, A>0) is excluded
    assert clip_fractions(ratio, adv, 0.2, 0.28, valid) == pytest.approx((0.2, 0.2))
    assert clip_fractions(ratio, adv, 0.2, 0.35, valid) == pytest.approx((0.2, 0.0))
    with pytest.raises(ValueError, match="clip_low"):
        clip_fractions(ratio, adv, 0.0)


def test_rollout_diagnostics_keys_and_values():
    actions, valid = agreement_case()
    rewards = np.where(valid, np.arange(16, dtype=float).reshape(2, 4, 2), PAD)
    traj = np.array([[1.0, 3.0, 1.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    acc = PolicyDiversity()
    lp, dvalid, expected_kl = diversity_case()
    for t in range(2):
        acc.add(th.as_tensor(lp[:, :, t]), dvalid[:, :, t])
    out = rollout_diagnostics(actions, rewards, valid, traj, diversity=acc)
    assert set(out) == {
        "rollout/group_reward_std",
        "rollout/group_step_reward_std",
        "rollout/frac_reward_zero_std",
        "rollout/action_agreement_mean",
        "rollout/action_agreement_p90",
        "rollout/policy_diversity_kl",
    }
    assert out["rollout/group_reward_std"] == pytest.approx(0.5)  # mean(std(1,3,1,3)=1, 0)
    assert out["rollout/frac_reward_zero_std"] == pytest.approx(0.5)
    assert out["rollout/action_agreement_mean"] == pytest.approx(0.75)
    assert out["rollout/policy_diversity_kl"] == pytest.approx(expected_kl, rel=1e-5)
    # board 0: ply 0 rewards (0,2,4,6) std sqrt(5), ply 1 (1,3) std 1; board 1 ply 0 (8,10,12,14) std sqrt(5)
    assert out["rollout/group_step_reward_std"] == pytest.approx((2 * math.sqrt(5) + 1) / 3)
    # trained mask: only board 0's plies count for agreement
    trained = valid.copy()
    trained[1] = False
    out = rollout_diagnostics(actions, rewards, valid, traj, trained=trained)
    assert out["rollout/action_agreement_mean"] == pytest.approx(0.625)
    assert "rollout/policy_diversity_kl" not in out
    # per-ply zero-std values: board 1's rewards differ at ply 0, board 0's too -> no zero-spread group
    out = rollout_diagnostics(actions, rewards, valid, traj, zero_std_values=rewards)
    assert out["rollout/frac_reward_zero_std"] == 0.0


def test_rollout_diagnostics_group_of_one_leaves_keys_out():
    actions = np.zeros((2, 1, 3), dtype=int)
    valid = np.ones((2, 1, 3), dtype=bool)
    out = rollout_diagnostics(actions, np.zeros((2, 1, 3)), valid, np.zeros((2, 1)))
    # one trajectory per group: no spread or agreement is defined; every group has zero spread
    assert out == {"rollout/frac_reward_zero_std": 1.0}


def test_mean_of_numbers_skips_nan_and_is_nan_when_nothing_is_left():
    import math
    import warnings

    from grpo_agent.diagnostics import mean_of_numbers

    assert mean_of_numbers([1.0, math.nan, 3.0]) == 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # np.nanmean would warn here
        assert math.isnan(mean_of_numbers([math.nan, math.nan])) and math.isnan(mean_of_numbers([]))
