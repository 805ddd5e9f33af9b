"""GRPO as an SB3 algorithm: log-prob path, pads, save/load, predict, callbacks, a smoke run."""

import copy

import chess
import numpy as np
import pytest
import torch as th
from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
from sb3_contrib.common.maskable.evaluation import evaluate_policy
from stable_baselines3.common.callbacks import CheckpointCallback
from stable_baselines3.common.vec_env import DummyVecEnv

from chess_env import ChessEnv, ChessVectorEnv
from chess_env.encoding import legal_action_mask
from grpo_agent import GRPO
from grpo_agent.diagnostics import drift_statistics

TINY = dict(features_extractor_kwargs=dict(n_blocks=1, channels=16))



def make_model(num_envs=8, shaping=False, policy_kwargs=TINY, **kwargs):
    env = ChessVectorEnv(num_envs, shaping=shaping, reward_depth=1, max_plies=60, start_positions="builtin")
    kwargs = {"group_size": 4, "horizon": 6, "batch_size": 32, "n_epochs": 1, "seed": 0, **kwargs}
    return GRPO("ChessResNetPolicy", env, policy_kwargs=policy_kwargs, **kwargs)


def collect(model):
    _, callback = model._setup_learn(10**9, None)
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer)
    return model.rollout_buffer


def test_sizes_are_checked_with_their_values():
    env = ChessVectorEnv(6, shaping=False)
    with pytest.raises(ValueError, match=r"group_size=4 does not divide num_envs=6"):
        GRPO("ChessResNetPolicy", env, group_size=4)
    for name in ("group_size", "horizon", "n_epochs", "batch_size"):
        with pytest.raises(ValueError, match=rf"{name} must be a positive integer, got 0"):
            GRPO("ChessResNetPolicy", env, **{"group_size": 3, name: 0})
    with pytest.raises(ValueError, match="'queen'"):
        GRPO("ChessResNetPolicy", env, group_size=3, train_plies="queen")
    env.close()


@pytest.mark.parametrize("temperature", [1.0, 0.6, 1.7])
def test_ratio_is_one_right_after_the_rollout(temperature):
    model = make_model(temperature=temperature)
    buffer = collect(model)
    model.policy.set_training_mode(True)
    data = next(buffer.get(model.batch_size))
    log_prob, entropy = model.policy.evaluate_actions(data.observations, data.actions, data.action_masks, temperature)
    stats = drift_statistics(log_prob - data.old_log_prob, data.advantages, 0.2, 0.28)
    assert stats["ratio_dev"] < 1e-5
    assert stats["clip_fraction_low"] == 0.0 and stats["clip_fraction_high"] == 0.0
    assert stats["ess"] == pytest.approx(1.0, abs=1e-6)
    # the real update path logs the same check
    model.train()
    assert model.last_train_stats["ratio_dev_first_batch"] < 1e-5
    model.env.close()


def test_rollout_layout_and_masks():
    model = make_model(train_plies="mover")
    buffer = collect(model)
    # self-play: plies alternate sides, only the first mover's (even) plies are trained
    assert buffer.valid[:, :, 0].all()
    assert not buffer.trained[:, :, 1::2].any()
    assert buffer.trained[:, :, 0::2][buffer.valid[:, :, 0::2]].all()
    np.testing.assert_array_equal(buffer.signs[:, :, 1::2][buffer.valid[:, :, 1::2]], -1.0)
    # every stored action is legal under its stored mask, and every group starts from one position
    played = buffer.valid
    assert buffer.action_masks[played, buffer.actions[played]].all()
    np.testing.assert_array_equal(buffer.observations[:, :1, 0], np.repeat(buffer.observations[:, :1, 0], 1, axis=1))
    for g in range(buffer.n_groups):
        for j in range(1, buffer.group_size):
            np.testing.assert_array_equal(buffer.observations[g, j, 0], buffer.observations[g, 0, 0])
    model.env.close()


def test_pads_never_move_the_loss():
    model = make_model()
    buffer = collect(model)
    # pretend env 1 of group 0 finished after its first ply, then fill its pads with garbage
    buffer.valid[0, 1, 1:] = False
    buffer.compute_advantages(advantage=model.advantage, scale=model.advantage_scale, eps=model.advantage_eps)
    garbage = copy.deepcopy(buffer)
    rng = np.random.default_rng(0)
    pads = ~garbage.valid
    garbage.observations[pads] = rng.random(garbage.observations[pads].shape)
    garbage.actions[pads] = rng.integers(0, 4672, pads.sum())
    garbage.log_probs[pads] = 5.0
    garbage.action_masks[pads] = True
    garbage.rewards[pads] = 1e6
    garbage.advantages[pads] = 1e6

    results = []
    for buf in (buffer, garbage):
        clone = copy.deepcopy(model)
        clone.rollout_buffer = buf
        np.random.seed(0)
        clone.train()
        results.append(th.nn.utils.parameters_to_vector(clone.policy.parameters()).detach())
    th.testing.assert_close(results[0], results[1], rtol=0, atol=0)
    model.env.close()


def test_save_load_round_trip(tmp_path):
    model = make_model(kl_coef=0.1, ref_update_interval=0)
    model.learn(2 * 8 * 6)
    path = tmp_path / "grpo.zip"
    model.save(path)
    loaded = GRPO.load(path, env=model.env)
    obs = np.stack([model.rollout_buffer.observations[0, 0, t] for t in range(3)])
    masks = np.stack([model.rollout_buffer.action_masks[0, 0, t] for t in range(3)])
    for a, b in ((model.policy, loaded.policy), (model.ref_policy, loaded.ref_policy)):
        for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
            th.testing.assert_close(p, q, msg=name)
    # the reference was never refreshed, so it differs from the trained policy and must survive the trip
    assert not th.equal(
        th.nn.utils.parameters_to_vector(model.policy.parameters()),
        th.nn.utils.parameters_to_vector(model.ref_policy.parameters()),
    )
    opt_a, opt_b = model.policy.optimizer.state_dict(), loaded.policy.optimizer.state_dict()
    for k in opt_a["state"]:
        th.testing.assert_close(opt_a["state"][k]["exp_avg"], opt_b["state"][k]["exp_avg"])
    np.testing.assert_array_equal(
        model.predict(obs, action_masks=masks, deterministic=True)[0],
        loaded.predict(obs, action_masks=masks, deterministic=True)[0],
    )
    assert loaded.num_timesteps == model.num_timesteps and loaded.n_rollouts == model.n_rollouts
    assert loaded.kl_coef(1.0) == 0.1 and loaded.group_size == 4
    model.env.close()


def test_reference_refresh():
    model = make_model(ref_update_interval=1)
    initial = th.nn.utils.parameters_to_vector(model.ref_policy.parameters()).clone()
    model.learn(8 * 6)
    ref = th.nn.utils.parameters_to_vector(model.ref_policy.parameters())
    th.testing.assert_close(ref, th.nn.utils.parameters_to_vector(model.policy.parameters()))
    assert not th.equal(ref, initial)
    model.env.close()


@pytest.mark.parametrize("kl_coef", [0.0, 0.1])
def test_reference_forward_passes_per_update(kl_coef):
    """With a KL term the reference runs once per position per update (its log-probabilities are kept for the
    second epoch); without, once per update, on the first minibatch, for train/kl_ref (the policy's own forward
    of that minibatch serves it): the plain mean of the exact KL."""
    model = make_model(kl_coef=kl_coef, n_epochs=2, batch_size=8)
    buffer = collect(model)
    th.manual_seed(1)
    with th.no_grad():  # a reference different from the policy, so the KL is not 0
        for param in model.ref_policy.parameters():
            param.add_(0.05 * th.randn_like(param))
    calls = {"policy": 0, "ref": 0}
    for name, net in (("policy", model.policy), ("ref", model.ref_policy)):
        net.action_net.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    state = np.random.get_state()
    first = next(buffer.get(model.batch_size))
    with th.no_grad():
        log_p, probs = model.policy.log_probs(first.observations, first.action_masks)
        ref_log_p, _ = model.ref_policy.log_probs(first.observations, first.action_masks)
    expected = float((probs * (log_p - ref_log_p)).sum(dim=1).mean())
    np.random.set_state(state)  # train() draws the same first minibatch
    calls.update(policy=0, ref=0)
    model.train()
    minibatches = 2 * -(-int(buffer.trained.sum()) // 8)
    assert calls == {"policy": minibatches, "ref": minibatches // 2 if kl_coef > 0 else 1}
    if kl_coef == 0:
        # The update's KL is over each position's legal-move columns, this oracle's over all 4672 actions: the
        # same sum to float32 rounding (a KL of 4e-3 is a small difference of large log-probabilities).
        assert model.last_train_stats["kl_ref"] == pytest.approx(expected, rel=1e-4)
    model.env.close()


@pytest.mark.parametrize("group_mode", ["games", "moves"])
def test_reference_kept_for_the_update_changes_nothing_but_its_cost(group_mode):
    """The update with the reference's log-probabilities computed once equals the one that runs the reference on
    every minibatch of every epoch."""
    models = [make_model(kl_coef=0.5, n_epochs=3, batch_size=8, shaping=True, group_mode=group_mode, temperature=0.7)
              for _ in range(2)]
    collect(models[0])
    models[1]._setup_learn(10**9, None)
    models[1].rollout_buffer = copy.deepcopy(models[0].rollout_buffer)  # the same rollout
    for model in models:
        th.manual_seed(1)
        with th.no_grad():
            for param in model.ref_policy.parameters():
                param.add_(0.05 * th.randn_like(param))
    models[1].rollout_buffer.compute_reference = lambda *args: None  # the loss runs the reference itself
    for model in models:
        np.random.seed(3)  # the same minibatches
        model.train()
    assert models[0].rollout_buffer.ref_log_probs is not None and models[1].rollout_buffer.ref_log_probs is None
    th.testing.assert_close(th.nn.utils.parameters_to_vector(models[0].policy.parameters()),
                            th.nn.utils.parameters_to_vector(models[1].policy.parameters()))
    assert models[0].last_train_stats["kl_ref"] == pytest.approx(models[1].last_train_stats["kl_ref"], rel=1e-5)
    assert models[0].last_train_stats["kl_ref"] > 0
    for model in models:
        model.env.close()


def test_target_kl_stops_the_epochs():
    model = make_model(n_epochs=5, batch_size=8, learning_rate=1e-2, target_kl=1e-9)
    collect(model)
    model.train()
    # the first minibatch is on-policy (approx_kl 0) and steps; the next one exceeds 1.5 * target_kl
    assert model._n_updates == 1
    model.env.close()


def test_predict_never_returns_an_illegal_move():
    model = make_model()
    rng = np.random.default_rng(0)
    for _ in range(30):
        board = chess.Board()
        for _ in range(int(rng.integers(0, 60))):
            moves = list(board.legal_moves)
            if not moves:
                break
            board.push(moves[rng.integers(len(moves))])
        if board.is_game_over():
            continue
        from chess_env.encoding import observation

        mask = legal_action_mask(board)
        for deterministic in (True, False):
            action, _ = model.predict(observation(board), action_masks=mask, deterministic=deterministic)
            assert mask[int(action)]
    model.env.close()


def test_sb3_callbacks_and_evaluate_policy(tmp_path):
    model = make_model()
    eval_env = DummyVecEnv([lambda: ChessEnv(shaping=False, max_plies=8)])
    checkpoints = CheckpointCallback(save_freq=model.horizon, save_path=str(tmp_path / "ckpt"), name_prefix="grpo")
    evaluation = MaskableEvalCallback(
        eval_env, eval_freq=model.horizon, n_eval_episodes=2, log_path=str(tmp_path / "eval"), warn=False
    )
    model.learn(2 * 8 * 6, callback=[checkpoints, evaluation])
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["grpo_48_steps.zip", "grpo_96_steps.zip"]
    assert (tmp_path / "eval" / "evaluations.npz").is_file()
    assert GRPO.load(tmp_path / "ckpt" / "grpo_96_steps.zip").num_timesteps == 96
    mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=2, warn=False)
    assert np.isfinite(mean)
    model.env.close()


def test_env_id_string():
    model = GRPO("MlpPolicy", "GRPOChess-v0", n_envs=4, group_size=2, horizon=2, env_kwargs=dict(shaping=False))
    assert model.n_envs == 4 and model.n_groups == 2
    model.learn(8)
    model.env.close()


@pytest.mark.slow
def test_smoke_training_with_engine_shaping(tmp_path):
    from stable_baselines3.common.logger import configure

    model = make_model(shaping=True, kl_coef=0.05, ent_coef=0.01, loss_aggregation="sequence", n_epochs=2)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(3 * 8 * 6)
    import pandas as pd

    frame = pd.read_csv(tmp_path / "progress.csv")
    for key in (
        "train/entropy", "train/entropy_norm", "train/kl_ref", "train/approx_kl", "train/clip_fraction_low",
        "train/clip_fraction_high", "train/ess", "train/advantage_std", "train/grad_norm", "train/loss",
        "train/policy_loss", "train/ent_coef", "train/kl_coef", "train/learning_rate",
        "rollout/step_reward_mean", "rollout/step_reward_std", "rollout/plies_per_s",
    ):
        assert key in frame and frame[key].notna().all(), key
    assert len(frame) == 3
    assert frame["rollout/step_reward_std"].iloc[-1] > 0  # the engine shapes every ply
    assert (frame["train/ratio_dev_first_batch"] < 1e-5).all()
    model.env.close()
