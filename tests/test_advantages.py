"""Group-relative advantages against hand-computed arrays, pads included."""

import numpy as np
import pytest

from grpo_agent.advantages import group_advantages, masked_group_center, reward_to_go

PAD = 100.0  # a loud value in padded slots: if a pad leaked into any mean it would show


def step_case():
    # one group, 3 trajectories, 2 plies; trajectory 2 finished after its first ply
    rewards = np.array([[[1.0, 2.0], [3.0, 4.0], [5.0, PAD]]])
    valid = np.array([[[True, True], [True, True], [True, False]]])
    return rewards, valid


def test_step_center_by_hand():
    rewards, valid = step_case()
    adv = group_advantages(rewards, valid, advantage="step", scale="none")
    # ply 0: mean(1,3,5)=3; ply 1: mean(2,4)=3 (the pad does not count), pad -> 0
    np.testing.assert_allclose(adv, [[[-2.0, -1.0], [0.0, 1.0], [2.0, 0.0]]], atol=1e-6)


def test_step_std_by_hand():
    rewards, valid = step_case()
    eps = 1e-2
    adv = group_advantages(rewards, valid, advantage="step", scale="std", eps=eps)
    std0 = np.sqrt(8.0 / 3.0)  # population std of (1, 3, 5)
    std1 = 1.0  # population std of (2, 4)
    expected = [[[-2 / (std0 + eps), -1 / (std1 + eps)], [0.0, 1 / (std1 + eps)], [2 / (std0 + eps), 0.0]]]
    np.testing.assert_allclose(adv, expected, rtol=1e-5)


def test_rms_is_one_global_scale():
    rewards, valid = step_case()
    eps = 1e-2
    adv = group_advantages(rewards, valid, advantage="step", scale="rms", eps=eps)
    centered = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])  # the five valid plies
    rms = np.sqrt(np.mean(centered**2))
    np.testing.assert_allclose(adv, [[[-2.0, -1.0], [0.0, 1.0], [2.0, 0.0]]] / np.float64(rms + eps), rtol=1e-5)


def test_rms_over_trained_plies_only():
    rewards, valid = step_case()
    trained = np.array([[[True, False], [True, False], [True, False]]])
    adv = group_advantages(rewards, valid, scale="rms", eps=1e-2, weights_mask=trained)
    rms = np.sqrt(np.mean(np.array([-2.0, 0.0, 2.0]) ** 2))
    np.testing.assert_allclose(adv[0, :, 0], np.array([-2.0, 0.0, 2.0]) / (rms + 1e-2), rtol=1e-5)


def selfplay_case():
    # 2 trajectories x 3 plies of alternating sides; trajectory 1 ended after 2 plies
    rewards = np.array([[[0.1, 0.2, 0.3], [0.0, -0.1, PAD]]])
    valid = np.array([[[True, True, True], [True, True, False]]])
    signs = np.array([[[1.0, -1.0, 1.0], [1.0, -1.0, 1.0]]])
    return rewards, valid, signs


def test_reward_to_go_zero_sum_by_hand():
    rewards, valid, signs = selfplay_case()
    rtg = reward_to_go(rewards, valid, signs)
    # R_t = s_t * sum_{k>=t} s_k r_k: traj0 0.1-0.2+0.3=0.2, -( -0.2+0.3)=-0.1, 0.3; traj1 0.1, -0.1, pad 0
    np.testing.assert_allclose(rtg, [[[0.2, -0.1, 0.3], [0.1, -0.1, 0.0]]], atol=1e-6)


def test_reward_to_go_discount_same_agent():
    rewards = np.array([[[1.0, 1.0, 1.0]]])
    valid = np.ones_like(rewards, dtype=bool)
    np.testing.assert_allclose(reward_to_go(rewards, valid, gamma=0.5), [[[1.75, 1.5, 1.0]]])


def test_return_center_by_hand():
    rewards, valid, signs = selfplay_case()
    adv = group_advantages(rewards, valid, advantage="return", signs=signs)
    # ply 0: (0.2, 0.1) -> +-0.05; ply 1: (-0.1, -0.1) -> 0; ply 2: only traj0 valid -> 0
    np.testing.assert_allclose(adv, [[[0.05, 0.0, 0.0], [-0.05, 0.0, 0.0]]], atol=1e-6)


def test_outcome_by_hand():
    rewards, valid, signs = selfplay_case()
    adv = group_advantages(rewards, valid, advantage="outcome", signs=signs)
    # totals for the first mover: 0.2 and 0.1 -> +-0.05, negated on the opponent's plies, pads 0
    np.testing.assert_allclose(adv, [[[0.05, -0.05, 0.05], [-0.05, 0.05, 0.0]]], atol=1e-6)


def test_outcome_std_by_hand():
    rewards, valid, signs = selfplay_case()
    adv = group_advantages(rewards, valid, advantage="outcome", scale="std", eps=0.01, signs=signs)
    a = 0.05 / (0.05 + 0.01)
    np.testing.assert_allclose(adv, [[[a, -a, a], [-a, a, 0.0]]], rtol=1e-5)


def test_near_zero_spread_does_not_explode():
    rewards = np.array([[[0.5], [0.5 + 1e-6]]])
    valid = np.ones_like(rewards, dtype=bool)
    adv = group_advantages(rewards, valid, scale="std", eps=1e-2)
    assert np.abs(adv).max() < 1e-3
    adv = group_advantages(rewards, valid, scale="rms", eps=1e-2)
    assert np.abs(adv).max() < 1e-3


def test_lone_valid_entry_gets_zero():
    centered, std = masked_group_center(np.array([[[3.0], [PAD]]]), np.array([[[True], [False]]]))
    np.testing.assert_array_equal(centered, [[[0.0], [0.0]]])
    np.testing.assert_array_equal(std, [[[0.0]]])


def test_pads_do_not_change_valid_advantages():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(3, 4, 5))
    valid = rng.random((3, 4, 5)) > 0.3
    for mode in ("step", "return", "outcome"):
        for scale in ("none", "std", "rms"):
            a = group_advantages(rewards, valid, advantage=mode, scale=scale)
            b = group_advantages(np.where(valid, rewards, 1e6), valid, advantage=mode, scale=scale)
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
            assert np.all(a[~valid] == 0.0)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(advantage="bogus"), "bogus"),
        (dict(scale="zscore"), "zscore"),
        (dict(eps=0.0), "eps"),
        (dict(gamma=1.5), "1.5"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, word):
    rewards, valid = step_case()
    with pytest.raises(ValueError, match=word):
        group_advantages(rewards, valid, **kwargs)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        group_advantages(np.zeros((2, 3)), np.zeros((2, 3), dtype=bool))
