"""GroupRolloutBuffer: layout, bool masks, pads never sampled, sample fields."""

import numpy as np
import pytest
from gymnasium import spaces
from sb3_contrib.common.maskable.buffers import MaskableRolloutBufferSamples

from grpo_agent.buffers import GroupRolloutBuffer, GroupRolloutBufferSamples, legal_columns

OBS = spaces.Box(0.0, 1.0, (2, 8, 8), np.float32)
ACT = spaces.Discrete(10)


def filled_buffer(aggregation="token"):
    """2 groups x 2 trajectories x 3 plies; env 3 finishes after ply 0, plies of the 2nd mover untrained."""
    buf = GroupRolloutBuffer(3, OBS, ACT, n_groups=2, group_size=2, device="cpu")
    for t in range(3):
        valid = np.array([True, True, True, t == 0])
        obs = np.full((4, 2, 8, 8), t, dtype=np.float32)
        actions = np.arange(4) + 3 * t
        masks = np.zeros((4, 10), dtype=bool)
        masks[:, t] = masks[np.arange(4), actions] = True
        buf.add(
            obs,
            actions,
            np.array([1.0, 2.0, 3.0, 4.0]) * (t + 1),
            valid,
            np.full(4, -0.5),
            masks,
            trained=np.full(4, t % 2 == 0),
            sign=np.full(4, 1.0 if t % 2 == 0 else -1.0),
        )
    buf.compute_advantages(advantage="step", loss_aggregation=aggregation)
    return buf


def test_layout_is_groups_by_trajectories_by_plies():
    buf = filled_buffer()
    assert buf.rewards.shape == (2, 2, 3)
    assert buf.action_masks.shape == (2, 2, 3, 10) and buf.action_masks.dtype == bool
    # env i is trajectory i % G of group i // G
    assert buf.actions[1, 0, 2] == 2 + 6
    assert buf.valid[1, 1].tolist() == [True, False, False]
    assert buf.rewards[1, 1, 1] == 0.0  # a pad's reward is zeroed on add


def test_only_trained_plies_are_sampled():
    buf = filled_buffer()
    samples = list(buf.get(batch_size=2))
    actions = np.sort(np.concatenate([s.actions.numpy() for s in samples]))
    # trained: plies 0 and 2 of every env, except env 3 that was a pad at ply 2
    assert actions.tolist() == sorted([0, 1, 2, 3, 6, 7, 8])
    assert [len(s.actions) for s in samples] == [2, 2, 2, 1]


def test_samples_superset_of_maskable_samples():
    fields = GroupRolloutBufferSamples._fields
    assert fields[: len(MaskableRolloutBufferSamples._fields)] == MaskableRolloutBufferSamples._fields
    s = next(filled_buffer().get(None))
    assert s.action_masks.dtype.is_floating_point is False
    assert s.observations.shape[1:] == (2, 8, 8)
    assert s.old_values.abs().sum() == 0


def test_advantages_by_hand():
    buf = filled_buffer()
    # group 1, ply 0: rewards (3, 4) -> (-0.5, 0.5); ply 1: env 3 is a pad, env 2 alone -> 0
    np.testing.assert_allclose(buf.advantages[1, :, 0], [-0.5, 0.5])
    np.testing.assert_allclose(buf.advantages[1, :, 1], [0.0, 0.0])


def test_sequence_weights():
    buf = filled_buffer("sequence")
    # env 0 trains plies 0 and 2 -> 1/2 each; env 3 trains only ply 0 -> 1
    np.testing.assert_allclose(buf.weights[0, 0], [0.5, 0.0, 0.5])
    np.testing.assert_allclose(buf.weights[1, 1], [1.0, 0.0, 0.0])
    tok = filled_buffer("token")
    np.testing.assert_allclose(tok.weights[0, 0], [1.0, 0.0, 1.0])


def test_early_stop_marks_the_rest_as_pads():
    buf = GroupRolloutBuffer(4, OBS, ACT, n_groups=1, group_size=2, device="cpu")
    buf.add(np.zeros((2, 2, 8, 8)), [0, 1], [1.0, 0.0], [True, True], [0.0, 0.0], np.ones((2, 10), bool))
    buf.compute_advantages()
    assert buf.valid[0, :, 1:].sum() == 0
    assert len(buf.trained_indices()) == 2


def test_errors_name_values():
    with pytest.raises(ValueError, match="group_size must be a positive integer, got 0"):
        GroupRolloutBuffer(3, OBS, ACT, n_groups=1, group_size=0)
    buf = GroupRolloutBuffer(1, OBS, ACT, n_groups=1, group_size=2, device="cpu")
    with pytest.raises(ValueError, match="n_envs=2"):
        buf.add(np.zeros((3, 2, 8, 8)), [0] * 3, [0.0] * 3, [True] * 3, [0.0] * 3, np.ones((3, 10), bool))
    buf.add(np.zeros((2, 2, 8, 8)), [0] * 2, [0.0] * 2, [True] * 2, [0.0] * 2, np.ones((2, 10), bool))
    with pytest.raises(ValueError, match="full"):
        buf.add(np.zeros((2, 2, 8, 8)), [0] * 2, [0.0] * 2, [True] * 2, [0.0] * 2, np.ones((2, 10), bool))
    with pytest.raises(ValueError, match="sum"):
        buf.compute_advantages(loss_aggregation="sum")


def test_legal_columns_against_the_masks():
    """Each row's legal moves ascending, padded; every action found at its column; an illegal action refused."""
    rng = np.random.default_rng(0)
    masks = rng.random((50, 300)) < 0.1
    masks[7] = False
    masks[7, 299] = True  # a row with one legal move, the last column
    actions = np.stack([rng.choice(np.flatnonzero(row), 4) for row in masks])
    real = rng.random(actions.shape) < 0.8
    legal, legal_mask, slots = legal_columns(masks, actions, real)
    assert legal.shape == legal_mask.shape == (50, masks.sum(axis=1).max())
    for row, cols, keep in zip(masks, legal, legal_mask):
        assert cols[keep].tolist() == np.flatnonzero(row).tolist() and (cols[~keep] == 0).all()
    np.testing.assert_array_equal(np.take_along_axis(legal, slots, axis=1)[real], actions[real])
    assert (slots[~real] == 0).all()
    # (n,) actions keep their shape; pads (real False) may be anything
    one, _, one_slots = legal_columns(masks, actions[:, 0])
    assert one_slots.shape == (50,) and (one[np.arange(50), one_slots] == actions[:, 0]).all()
    bad = actions.copy()
    bad[3, 1] = np.flatnonzero(~masks[3])[0]
    with pytest.raises(ValueError, match=f"action {bad[3, 1]} of row 3 is not legal"):
        legal_columns(masks, bad)
    legal_columns(masks, bad, real=np.broadcast_to(np.arange(4) != 1, bad.shape))  # not a real action there: accepted
    # no legal move anywhere (pads only): one padded column, every slot 0
    legal, legal_mask, slots = legal_columns(np.zeros((3, 300), dtype=bool), np.ones(3, np.int64), np.zeros(3, bool))
    assert legal.shape == (3, 1) and not legal_mask.any() and (slots == 0).all()
    with pytest.raises(ValueError, match="action 1 of row 0 is not legal"):
        legal_columns(np.zeros((3, 300), dtype=bool), np.ones(3, np.int64))


def test_samples_carry_legal_columns():
    """The loss's columns: the sampled action sits at its slot of its position's legal moves."""
    for s in filled_buffer().get(batch_size=3):
        legal = s.legal_actions.numpy()
        assert (legal[np.arange(len(legal)), s.action_slots.numpy()] == s.actions.numpy()).all()
        np.testing.assert_array_equal(s.legal_mask.numpy().sum(axis=1), s.action_masks.numpy().sum(axis=1))
