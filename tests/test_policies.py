"""Masked policies: temperature in one place, masked entropy, head layout, legal predictions."""

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from torch import nn

from grpo_agent.buffers import legal_columns
from grpo_agent.policies import ChessResNet, ChessResNetPolicy, ConvPolicyHead, GRPOPolicy, MlpPolicy, masked_entropy

OBS = spaces.Box(0.0, 1.0, (21, 8, 8), np.float32)
ACT = spaces.Discrete(4672)


def make(policy_class=ChessResNetPolicy, **kwargs):
    th.manual_seed(0)
    if policy_class is ChessResNetPolicy:
        kwargs.setdefault("features_extractor_kwargs", dict(n_blocks=1, channels=16))
    return policy_class(OBS, ACT, lambda _: 1e-3, **kwargs)


def random_masks(rng, n, k=20):
    masks = np.zeros((n, 4672), dtype=bool)
    for row in masks:
        row[rng.choice(4672, size=k, replace=False)] = True
    return masks


def test_temperature_then_mask_is_the_distribution():
    policy = make()
    rng = np.random.default_rng(0)
    obs = th.as_tensor(rng.random((3, 21, 8, 8), dtype=np.float32))
    masks = random_masks(rng, 3)
    with th.no_grad():
        # make the logits non-trivial so temperature matters
        policy.action_net.net[-1].bias.data.normal_(std=2.0)
        logits = policy.logits(obs)
        for temperature in (1.0, 0.5, 1.7):
            dist = policy.get_distribution(obs, masks, temperature)
            expected = th.log_softmax((logits / temperature).masked_fill(~th.as_tensor(masks), -th.inf), dim=1)
            actions = th.as_tensor([np.flatnonzero(m)[0] for m in masks])
            np.testing.assert_allclose(
                dist.log_prob(actions).numpy(), expected.gather(1, actions[:, None]).squeeze(1).numpy(), rtol=1e-5
            )
            sampled, log_prob = policy(obs, masks, temperature)
            np.testing.assert_allclose(
                log_prob.numpy(), expected.gather(1, sampled[:, None]).squeeze(1).numpy(), rtol=1e-5
            )
            lp, _ = policy.evaluate_actions(obs, sampled, th.as_tensor(masks), temperature)
            np.testing.assert_array_equal(lp.numpy(), log_prob.numpy())


def test_masked_entropy_ignores_illegal_moves():
    policy = make()
    rng = np.random.default_rng(1)
    obs = th.as_tensor(rng.random((2, 21, 8, 8), dtype=np.float32))
    masks = random_masks(rng, 2, k=7)
    with th.no_grad():
        policy.action_net.net[-1].bias.data.normal_(std=1.0)
        _, entropy = policy.evaluate_actions(obs, th.zeros(2), masks)
        logits = policy.logits(obs)
        legal = [logits[i][th.as_tensor(masks[i])] for i in range(2)]
        expected = [th.distributions.Categorical(logits=l).entropy().item() for l in legal]
        np.testing.assert_allclose(entropy.numpy(), expected, rtol=1e-5)
        assert (entropy <= np.log(7) + 1e-5).all()
        # moving the illegal logits changes nothing
        shifted = logits.clone()
        shifted[:, ~th.as_tensor(masks).any(0)] += 50.0
        dist = policy.action_dist.proba_distribution(shifted)
        dist.apply_masking(masks)
        np.testing.assert_allclose(dist.entropy().numpy(), expected, rtol=1e-5)


def test_log_probs_equal_sb3_contribs_masked_distribution():
    """The fused path (one log_softmax and one softmax of the masked logits) against MaskableCategorical,
    which GRPO read before: the same log-probabilities, probabilities, entropy and gradients."""
    policy = make()
    rng = np.random.default_rng(4)
    obs = th.as_tensor(rng.random((5, 21, 8, 8), dtype=np.float32))
    masks = th.as_tensor(random_masks(rng, 5, k=25))
    with th.no_grad():
        policy.action_net.net[-1].bias.data.normal_(std=3.0)
    for temperature in (1.0, 0.4, 2.5):
        log_p, probs = policy.log_probs(obs, masks, temperature)
        reference = policy.action_dist.proba_distribution(policy.logits(obs) / temperature)
        reference.apply_masking(masks)
        th.testing.assert_close(log_p[masks], reference.distribution.logits[masks], rtol=1e-5, atol=1e-6)
        th.testing.assert_close(probs, reference.distribution.probs, rtol=1e-5, atol=1e-7)
        assert (probs[~masks] == 0).all() and (log_p[~masks] < -1e7).all()
        entropy = masked_entropy(log_p, probs, masks)
        th.testing.assert_close(entropy, reference.entropy(), rtol=1e-5, atol=1e-6)
        actions = th.as_tensor([np.flatnonzero(m)[1] for m in masks.numpy()])
        ours = th.autograd.grad((log_p.gather(1, actions[:, None]).sum() + entropy.sum()),
                                policy.action_net.net[-1].bias)[0]
        theirs = th.autograd.grad((reference.log_prob(actions).sum() + reference.entropy().sum()),
                                  policy.action_net.net[-1].bias)[0]
        th.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_log_probs_over_legal_columns_equal_the_full_softmax():
    """The update's path (the logits at each position's legal moves only, :func:`legal_columns`) against the
    softmax over all actions: the same log-probabilities, entropy and gradients, the padding at probability 0."""
    policy = make()
    rng = np.random.default_rng(5)
    obs = th.as_tensor(rng.random((6, 21, 8, 8), dtype=np.float32))
    masks = random_masks(rng, 6, k=25)
    masks[2] = False
    masks[2, [0, 4671]] = True  # a row much shorter than the others: padded
    actions = np.stack([np.flatnonzero(m)[[0, -1]] for m in masks])
    legal, legal_mask, slots = legal_columns(masks, actions)
    legal, legal_mask, slots = (th.as_tensor(x) for x in (legal, legal_mask, slots))
    with th.no_grad():
        policy.action_net.net[-1].bias.data.normal_(std=3.0)
    for temperature in (1.0, 0.4):
        full_log_p, full_probs = policy.log_probs(obs, th.as_tensor(masks), temperature)
        log_p, probs = policy.log_probs(obs, legal_mask, temperature, legal_actions=legal)
        th.testing.assert_close(log_p[legal_mask], full_log_p.gather(1, legal)[legal_mask], rtol=1e-5, atol=1e-6)
        assert (probs[~legal_mask] == 0).all() and th.allclose(probs.sum(dim=1), th.ones(6))
        entropy = masked_entropy(log_p, probs, legal_mask)
        full_entropy = masked_entropy(full_log_p, full_probs, th.as_tensor(masks))
        th.testing.assert_close(entropy, full_entropy, rtol=1e-5, atol=1e-6)
        bias = policy.action_net.net[-1].bias
        ours = th.autograd.grad(log_p.gather(1, slots).sum() + entropy.sum(), bias)[0]
        theirs = th.autograd.grad(full_log_p.gather(1, th.as_tensor(actions)).sum() + full_entropy.sum(), bias)[0]
        th.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_conv_head_index_is_square_times_73_plus_plane():
    head = ConvPolicyHead(73)
    head.net = nn.Identity()
    squares = th.arange(64).view(8, 8).float()  # [rank, file] -> rank * 8 + file
    planes = th.arange(73).float().view(73, 1, 1)
    features = (1000 * squares + planes).unsqueeze(0)  # (1, 73, 8, 8)
    out = head(features.flatten(1))[0]
    idx = th.arange(4672)
    np.testing.assert_array_equal(out.numpy(), (1000 * (idx // 73) + idx % 73).float().numpy())


def test_train_and_eval_mode_agree():
    policy = make()
    obs = th.rand(4, 21, 8, 8)
    policy.set_training_mode(True)
    a = policy.logits(obs)
    policy.set_training_mode(False)
    b = policy.logits(obs)
    th.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("policy_class", [ChessResNetPolicy, MlpPolicy])
def test_predict_never_returns_an_illegal_move(policy_class):
    policy = make(policy_class)
    rng = np.random.default_rng(2)
    obs = rng.random((64, 21, 8, 8), dtype=np.float32)
    masks = random_masks(rng, 64, k=3)
    for deterministic in (True, False):
        actions, state = policy.predict(obs, action_masks=masks, deterministic=deterministic)
        assert state is None and actions.shape == (64,)
        assert masks[np.arange(64), actions].all()
    action, _ = policy.predict(obs[0], action_masks=masks[0], deterministic=True)
    assert action.shape == () and masks[0, action]


def test_predict_without_masks_warns():
    policy = make(MlpPolicy)
    with pytest.warns(UserWarning, match="action_masks"):
        policy.predict(np.zeros((21, 8, 8), np.float32))


def test_initial_policy_is_near_uniform():
    policy = make()
    masks = random_masks(np.random.default_rng(3), 2, k=30)
    with th.no_grad():
        _, entropy = policy.evaluate_actions(th.rand(2, 21, 8, 8), th.zeros(2), masks)
    assert (entropy > 0.99 * np.log(30)).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        make().get_distribution(th.zeros(1, 21, 8, 8), None, 0.0)
    with pytest.raises(ValueError, match="channels must be > 0, got 0"):
        ChessResNet(OBS, channels=0)
    with pytest.raises(ValueError, match="'deep'"):
        GRPOPolicy(OBS, ACT, lambda _: 1e-3, policy_head="deep")
    with pytest.raises(ValueError, match="FlattenExtractor"):
        GRPOPolicy(OBS, ACT, lambda _: 1e-3, policy_head="conv")
    with pytest.raises(ValueError, match=r"\(C, 8, 8\)"):
        ChessResNet(spaces.Box(0.0, 1.0, (5,), np.float32))
