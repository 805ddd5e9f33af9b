"""GRPO's guardrails inside real ``learn()`` runs: tiny networks forced to collapse with a huge learning rate.

Each run is 8 games x 4 plies per rollout (16 trained plies) with Stockfish depth-1 shaping, a 1-block x 16
channel ResNet and no entropy bonus: a learning rate of 0.1 takes the normalized entropy from 1.0 to below 0.6
within a few rollouts, so the guards have something real to fire on.
"""

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure

import grpo_agent.loss as loss_module
from chess_env import ChessVectorEnv
from grpo_agent import GRPO
from grpo_agent.advantages import group_advantages
from grpo_agent.cli import main
from grpo_agent.cli.plotting import guard_events
from grpo_agent.guards import CollapseGuard
from grpo_agent.rollout import dirichlet_mix

TINY = dict(features_extractor_kwargs=dict(n_blocks=1, channels=16))
ROLLOUT = 8 * 4  # timesteps per rollout
FLOOR = 0.6
COLLAPSE = dict(learning_rate=0.1, ent_coef=0.0, max_grad_norm=None, entropy_floor=FLOOR, guard_patience=2)
#: White (in check) has 4 legal moves and one of them, Qxg2, mates: a group of 4 games splits by chance
MATE_FEN = "8/8/6Q1/8/8/8/6p1/5K1k w - - 0 1"



def make_model(tmp_path=None, num_envs=8, shaping=True, start_positions="builtin", **kwargs):
    env = ChessVectorEnv(num_envs, shaping=shaping, reward_depth=1, max_plies=60, start_positions=start_positions)
    kwargs = {"group_size": 4, "horizon": 4, "batch_size": 32, "n_epochs": 1, "seed": 0, **kwargs}
    model = GRPO("ChessResNetPolicy", env, policy_kwargs=TINY, **kwargs)
    if tmp_path is not None:
        model.set_logger(configure(str(tmp_path), ["csv"]))
    return model


def params(model):
    return th.nn.utils.parameters_to_vector(model.policy.parameters()).detach().clone()


class Recorder(BaseCallback):
    """Keeps every rollout's stats and the parameters that sampled it; notes on_training_end."""

    def __init__(self):
        super().__init__()
        self.rollouts: list[dict] = []
        self.sampled_by: list[th.Tensor] = []
        self.rollbacks_at_start: list[int] = []
        self.start_params: list[th.Tensor] = []
        self.ended = False

    def _on_rollout_start(self):
        self.start_params.append(params(self.model))
        self.rollbacks_at_start.append(sum(g.n_rollbacks for g in self.model.guardrails.guards))

    def _on_rollout_end(self):
        self.rollouts.append(dict(self.model.last_rollout_stats))
        self.sampled_by.append(params(self.model))

    def _on_step(self):
        return True

    def _on_training_end(self):
        self.ended = True


def first_firing(values, threshold, patience, below=True):
    """Index of the update at which a guard with this patience first fires (hand computation)."""
    streak = 0
    for i, v in enumerate(values):
        bad = v < threshold if below else v > threshold
        streak = streak + 1 if bad else 0
        if streak == patience:
            return i
    return None


def progress(tmp_path):
    return pd.read_csv(tmp_path / "progress.csv")


# -- options -------------------------------------------------------------------------------------------------


def test_guard_options_are_validated_with_their_values():
    env = ChessVectorEnv(4, shaping=False)
    cases = {
        "on_collapse must be one of .*'explode'": dict(on_collapse="explode"),
        "entropy_floor must be in \\(0, 1\\).*1.5": dict(entropy_floor=1.5),
        "agreement_ceiling.*0": dict(agreement_ceiling=0.0),
        "dirichlet_frac.*2": dict(dirichlet_frac=2.0),
        "ent_coef, which is 0.0": dict(entropy_floor=0.3, on_collapse="boost", ent_coef=0.0),
        "kl_coef=0.0": dict(kl_target=0.01, kl_coef=0.0),
        "target_entropy must be in \\(0, 1\\).*1.2": dict(target_entropy=1.2),
        "max_nonfinite must be an integer >= 1, got 0": dict(max_nonfinite=0),
    }
    for pattern, kwargs in cases.items():
        with pytest.raises(ValueError, match=pattern):
            GRPO("MlpPolicy", env, group_size=2, **kwargs)
    # a temperature boost needs no entropy bonus
    GRPO("MlpPolicy", env, group_size=2, entropy_floor=0.3, on_collapse="boost", ent_coef=0.0, boost_targets=["temperature"])
    env.close()


# -- the four collapse actions in real runs ------------------------------------------------------------------


def test_warn_fires_and_training_continues(tmp_path, capsys):
    model = make_model(tmp_path, **COLLAPSE, on_collapse="warn")
    rec = Recorder()
    model.learn(10 * ROLLOUT, callback=rec)
    entropy = [r["entropy_norm"] for r in rec.rollouts]
    fired = first_firing(entropy, FLOOR, 2)
    assert fired is not None, entropy  # the huge learning rate did collapse the policy
    assert model.num_timesteps == 10 * ROLLOUT  # a warning does not stop anything
    assert "[guard entropy] collapse warning: entropy_norm=" in capsys.readouterr().out
    frame = progress(tmp_path)
    actions = frame["guard/entropy_action"].tolist()
    assert actions[fired] == 1 and set(actions[:fired]) == {0}
    np.testing.assert_allclose(frame["rollout/entropy_norm"], entropy)
    model.env.close()


def test_boost_raises_the_entropy_coefficient_it_trains_with(tmp_path, capsys):
    base = 1e-3
    model = make_model(tmp_path, **{**COLLAPSE, "ent_coef": base}, on_collapse="boost", boost_factor=4.0)
    rec = Recorder()
    model.learn(10 * ROLLOUT, callback=rec)
    fired = first_firing([r["entropy_norm"] for r in rec.rollouts], FLOOR, 2)
    assert fired is not None
    frame = progress(tmp_path)
    assert "entropy pressure boosted to x4" in capsys.readouterr().out
    # the update of the firing rollout already trains with the boosted coefficient, and every update trains
    # with the base coefficient times the guard's current boost
    assert frame["train/ent_coef"].iloc[:fired].tolist() == [base] * fired
    assert frame["train/ent_coef"].iloc[fired] == pytest.approx(4 * base)
    np.testing.assert_allclose(frame["train/ent_coef"], base * frame["guard/entropy_boost"])
    assert (frame["guard/entropy_boost"].iloc[fired:] > 1).all()
    model.env.close()


def test_temperature_boost_keeps_the_ratio_exact(tmp_path):
    model = make_model(tmp_path, **COLLAPSE, on_collapse="boost", boost_targets=("temperature",))
    model.learn(10 * ROLLOUT)
    frame = progress(tmp_path)
    fired = frame.index[frame["guard/entropy_action"] == 2]
    assert len(fired) > 0
    # the boost applies from the next rollout on, capped at max_temperature_boost
    after = frame["rollout/temperature"].iloc[fired[0] + 1]
    assert after == pytest.approx(min(2.0, 1.5)) and frame["rollout/temperature"].iloc[0] == 1.0
    np.testing.assert_allclose(frame["train/temperature"], frame["rollout/temperature"])
    # old log-probs, new log-probs and reference log-probs all use the boosted temperature
    assert (frame["train/ratio_dev_first_batch"] < 1e-5).all()
    model.env.close()


def test_stop_saves_a_checkpoint_and_ends_learn_cleanly(tmp_path, capsys):
    model = make_model(tmp_path, **COLLAPSE, on_collapse="stop")
    rec = Recorder()
    model.learn(30 * ROLLOUT, callback=rec)
    fired = first_firing([r["entropy_norm"] for r in rec.rollouts], FLOOR, 2)
    assert fired is not None and len(rec.rollouts) == fired + 1  # stopped right at the firing rollout
    assert model.num_timesteps == (fired + 1) * ROLLOUT < 30 * ROLLOUT
    assert rec.ended  # callbacks still get on_training_end
    path = tmp_path / f"guard_stop_{model.num_timesteps}.zip"
    assert model.stop_checkpoint == str(path) and path.is_file()
    out = capsys.readouterr().out
    assert "stopping training (on_collapse='stop')" in out and str(path) in out
    assert "on_collapse='stop'" in model.stop_reason
    loaded = GRPO.load(path)
    assert loaded.num_timesteps == model.num_timesteps
    th.testing.assert_close(params(loaded), params(model))
    frame = progress(tmp_path)
    assert len(frame) == fired + 1 and frame["guard/entropy_action"].iloc[-1] == 3
    model.env.close()


def test_rollback_restores_the_last_healthy_policy_and_lowers_the_lr(tmp_path, capsys):
    lr = COLLAPSE["learning_rate"]
    model = make_model(tmp_path, **COLLAPSE, on_collapse="rollback", rollback_lr_factor=0.5, max_rollbacks=1)
    rec = Recorder()
    model.learn(16 * ROLLOUT, callback=rec)
    entropy = [r["entropy_norm"] for r in rec.rollouts]
    fired = first_firing(entropy, FLOOR, 2)
    assert fired is not None
    assert "rolling back to the last healthy snapshot (rollback 1/1), learning rate x0.5" in capsys.readouterr().out
    # the rollout after the rollback starts from the parameters that sampled the last rollout healthy by
    # the rollback margin (GRPO's default 0.15 above the floor)
    margin = model.guardrails.guards[0].snapshot_margin
    assert margin == 0.15
    healthy = max(i for i in range(fired) if entropy[i] >= FLOOR + margin)
    th.testing.assert_close(rec.start_params[fired + 1], rec.sampled_by[healthy], rtol=0, atol=0)
    assert rec.rollbacks_at_start[fired + 1] == 1 and rec.rollbacks_at_start[fired] == 0
    frame = progress(tmp_path)
    # the collapsed rollout is not trained on; every later update uses half the learning rate
    assert math.isnan(frame["train/learning_rate"].iloc[fired])
    assert (frame["train/learning_rate"].iloc[:fired] == lr).all()
    later = frame["train/learning_rate"].iloc[fired + 1 :].dropna()
    assert len(later) > 0
    np.testing.assert_allclose(later, lr / 2)
    # a second collapse exceeds max_rollbacks=1: the guard stops instead of rolling back again
    if model.stop_reason is not None:
        assert "max_rollbacks=1" in model.stop_reason
    model.env.close()


# -- controllers in real runs --------------------------------------------------------------------------------


@pytest.mark.parametrize("kl_target", [1e-3, 10.0])
def test_kl_controller_moves_kl_coef_toward_the_target(tmp_path, kl_target):
    model = make_model(tmp_path, learning_rate=0.05, ent_coef=0.0, kl_coef=0.05, kl_target=kl_target, kl_horizon=16)
    model.learn(8 * ROLLOUT)
    frame = progress(tmp_path)
    coef, kl = frame["train/kl_coef"].to_numpy(), frame["train/kl_ref"].to_numpy()
    step = np.diff(coef)
    # after each update the coefficient moves in the direction that brings the measured KL to the target
    np.testing.assert_array_equal(np.sign(step), np.sign(kl[:-1] - kl_target))
    if kl_target == 10.0:
        assert coef[-1] < 0.05 * 0.9  # the policy never gets that far: the penalty keeps shrinking
    else:
        assert coef[-1] > coef.min()  # the KL exceeded 1e-3 and the penalty grew again
    assert frame["train/kl_target"].iloc[0] == kl_target
    model.env.close()


def test_target_entropy_controller_raises_ent_coef_when_entropy_falls(tmp_path):
    target = 0.9
    model = make_model(tmp_path, learning_rate=0.1, ent_coef=0.01, target_entropy=target, target_entropy_lr=2.0)
    model.learn(8 * ROLLOUT)
    frame = progress(tmp_path)
    coef = frame["train/ent_coef"].to_numpy()
    entropy = frame["rollout/entropy_norm"].to_numpy()
    # the controller takes each rollout's entropy before that rollout's update
    expected = 0.01 * np.exp(np.cumsum(2.0 * (target - entropy)))
    np.testing.assert_allclose(coef, np.clip(expected, 1e-4, 1.0), rtol=1e-6)
    assert entropy[-1] < target and coef[-1] > 0.01
    model.env.close()


# -- dynamic sampling, diagnostics, Dirichlet noise ------------------------------------------------------------


def collect(model):
    _, callback = model._setup_learn(10**9, None)
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer)
    return model.rollout_buffer


def test_dynamic_sampling_drops_exactly_the_zero_spread_groups():
    model = make_model(num_envs=32, shaping=False, start_positions=[MATE_FEN], horizon=2, drop_zero_std_groups=True)
    buffer = collect(model)
    # hand computation: a group has no spread when its trained plies (ply 0 here) all got the same reward
    ply0 = buffer.rewards[:, :, 0]
    zero = np.array([len(set(ply0[b].tolist())) == 1 for b in range(buffer.n_groups)])
    assert zero.any() and not zero.all(), ply0  # the seed gives both kinds
    assert model.last_rollout_stats["dropped_groups"] == zero.sum()
    assert model.last_rollout_stats["frac_reward_zero_std"] == zero.mean()
    assert not buffer.trained[zero].any()
    np.testing.assert_array_equal(buffer.trained[~zero], buffer.valid[~zero] & (buffer.signs[~zero] > 0))
    # the rms scale is computed over the kept groups only
    expected = group_advantages(
        buffer.rewards, buffer.valid, "step", "rms", model.advantage_eps, buffer.signs, weights_mask=buffer.trained
    )
    np.testing.assert_allclose(buffer.advantages, expected)
    assert (buffer.advantages[zero] == 0).all()
    model.env.close()


def test_everything_dropped_skips_the_update(tmp_path, capsys):
    # from the initial position without shaping nothing happens in 2 plies: no group has any spread
    model = make_model(tmp_path, shaping=False, start_positions="standard", horizon=2, drop_zero_std_groups=True)
    before = params(model)
    model.learn(2 * 16)
    assert "the update made no optimizer step (dynamic sampling left no trained ply)" in capsys.readouterr().out
    th.testing.assert_close(params(model), before, rtol=0, atol=0)
    frame = progress(tmp_path)
    assert (frame["rollout/dropped_groups"] == 2).all() and frame["train/skipped_updates"].tolist() == [1.0, 2.0]
    model.env.close()


def test_rollout_diagnostics_match_a_hand_computation():
    model = make_model(num_envs=12, group_size=4, horizon=4, temperature=0.7)
    buffer = collect(model)
    stats = model.last_rollout_stats
    B, G, T = buffer.actions.shape
    agreements, kls, norms, entropies = [], [], [], []
    with th.no_grad():
        for b in range(B):
            for t in range(T):
                gs = [g for g in range(G) if buffer.trained[b, g, t]]
                probs = []
                for g in gs:
                    obs = th.as_tensor(buffer.observations[b, g, t][None])
                    dist = model.policy.get_distribution(obs, buffer.action_masks[b, g, t][None], 0.7)
                    p = dist.distribution.probs[0].double().numpy()
                    probs.append(p)
                    n = buffer.action_masks[b, g, t].sum()
                    h = -sum(x * math.log(x) for x in p if x > 0)
                    entropies.append(h)
                    if n > 1:
                        norms.append(h / math.log(n))
                if len(gs) >= 2:
                    acts = [int(buffer.actions[b, g, t]) for g in gs]
                    agreements.append(max(acts.count(a) for a in acts) / len(gs))
                    m = np.mean(probs, axis=0)
                    kls.append(np.mean([sum(x * math.log(x / y) for x, y in zip(p, m) if x > 0) for p in probs]))
    returns = buffer.returns[:, :, 0]
    assert stats["action_agreement_mean"] == pytest.approx(np.mean(agreements))
    assert stats["action_agreement_p90"] == pytest.approx(np.percentile(agreements, 90))
    assert stats["policy_diversity_kl"] == pytest.approx(np.mean(kls), abs=1e-6)
    assert stats["entropy"] == pytest.approx(np.mean(entropies), rel=1e-5)
    assert stats["entropy_norm"] == pytest.approx(np.mean(norms), rel=1e-5)
    assert stats["group_reward_std"] == pytest.approx(np.mean([np.std(returns[b]) for b in range(B)]), rel=1e-5)
    model.env.close()


def test_dirichlet_noise_stores_the_log_prob_of_the_mixture(tmp_path):
    model = make_model(tmp_path, dirichlet_frac=0.5, dirichlet_alpha=0.3)
    rng = copy.deepcopy(model._noise_rng)
    buffer = collect(model)
    assert buffer.noisy[:, :, 0].all() and not buffer.noisy[:, :, 1:].any()
    obs = th.as_tensor(buffer.observations[:, :, 0].reshape(8, *buffer.obs_shape))
    masks = th.as_tensor(buffer.action_masks[:, :, 0].reshape(8, -1))
    with th.no_grad():
        probs = model.policy.get_distribution(obs, masks, 1.0).distribution.probs
    mixed = dirichlet_mix(probs, masks, 0.3, 0.5, rng)
    actions = th.as_tensor(buffer.actions[:, :, 0].reshape(-1))
    expected = th.log(mixed[th.arange(8), actions]).numpy()
    np.testing.assert_allclose(buffer.log_probs[:, :, 0].reshape(-1), expected, rtol=1e-6)
    policy_lp = th.log(probs[th.arange(8), actions]).numpy()
    assert np.abs(expected - policy_lp).max() > 1e-3  # the noise really changed the sampling distribution
    # plies without noise still have ratio exactly 1 after the rollout
    model.train()
    assert model.last_train_stats["ratio_dev_first_batch"] < 1e-5
    model.env.close()


# -- non-finite guard ----------------------------------------------------------------------------------------


def test_nonfinite_losses_are_skipped_then_stop_the_run(tmp_path, capsys, monkeypatch):
    real_loss = loss_module.grpo_loss

    def poisoned(*args, **kwargs):
        loss, stats = real_loss(*args, **kwargs)
        return loss * float("nan"), stats

    monkeypatch.setattr(loss_module, "grpo_loss", poisoned)
    model = make_model(tmp_path, max_nonfinite=2)
    before = params(model)
    rec = Recorder()
    model.learn(10 * ROLLOUT, callback=rec)
    # one minibatch per update: update 1 is skipped, update 2 is the second in a row and stops the run
    assert model.num_timesteps == 2 * ROLLOUT and rec.ended
    th.testing.assert_close(params(model), before, rtol=0, atol=0)
    out = capsys.readouterr().out
    assert "2 consecutive non-finite updates" in out and "loss=nan" in out
    assert (tmp_path / f"guard_stop_{2 * ROLLOUT}.zip").is_file()
    frame = progress(tmp_path)
    assert frame["guard/nonfinite_skipped"].tolist() == [1.0, 2.0]
    model.env.close()


# -- persistence and plotting --------------------------------------------------------------------------------


def test_save_load_round_trips_controllers_and_guards_without_snapshots(tmp_path):
    model = make_model(
        **{**COLLAPSE, "ent_coef": 0.01}, on_collapse="rollback", agreement_ceiling=0.9, kl_coef=0.05,
        kl_target=0.01, kl_horizon=16, target_entropy=0.8, dirichlet_frac=0.25,
    )
    model.learn(6 * ROLLOUT)
    assert any(g.has_healthy_snapshot for g in model.guardrails.guards)
    model.save(tmp_path / "m.zip")
    loaded = GRPO.load(tmp_path / "m.zip", env=model.env)
    assert loaded.guardrails.kl_controller.state_dict() == model.guardrails.kl_controller.state_dict()
    assert loaded.guardrails.ent_coef_controller.state_dict() == model.guardrails.ent_coef_controller.state_dict()
    assert [g.state_dict() for g in loaded.guardrails.guards] == [g.state_dict() for g in model.guardrails.guards]
    assert loaded.guardrails.nonfinite.state_dict() == model.guardrails.nonfinite.state_dict()
    assert not any(g.has_healthy_snapshot for g in loaded.guardrails.guards)  # snapshots live in memory only
    for name in ("kl_coef", "ent_coef"):
        coef = lambda m: getattr(m.guardrails, name)(getattr(m, name), 1.0)  # noqa: E731
        assert coef(loaded) == coef(model)
    assert loaded.dirichlet_frac == 0.25 and loaded.guardrails.guards[1].metric == "action_agreement_mean"
    model.env.close()


def test_plot_writes_the_collapse_dashboard_with_guard_markers(tmp_path):
    frame = pd.DataFrame(
        {
            "time/total_timesteps": [32, 64, 96, 128],
            "rollout/entropy_norm": [0.9, 0.5, 0.4, 0.7],
            "rollout/action_agreement_mean": [0.3, 0.8, 0.9, 0.5],
            "train/kl_ref": [0.0, 0.01, 0.02, 0.01],
            "train/clip_fraction_high": [0.0, 0.1, 0.2, 0.1],
            "guard/entropy_action": [0, 0, 2, 5],
            "guard/nonfinite_skipped_update": [0, 1, 0, 0],
        }
    )
    frame.to_csv(tmp_path / "progress.csv", index=False)
    assert guard_events(frame) == [
        (96.0, "entropy boost", "tab:green"),
        (128.0, "entropy recovered", "tab:cyan"),
        (64.0, "non-finite skip", "black"),
    ]
    assert main(["plot", str(tmp_path)]) == 0
    assert (tmp_path / "collapse_dashboard.png").stat().st_size > 5000
    assert (tmp_path / "learning_curves.png").is_file()


def test_guard_snapshot_is_only_committed_when_healthy():
    # the staged snapshot taken before a bad update is dropped, so a rollback never lands on a collapsed policy
    guard = CollapseGuard("entropy_norm", 0.5, patience=1, on_collapse="rollback")
    net = th.nn.Linear(2, 2)
    guard.snapshot({"net": net})
    guard.update(0.9)
    healthy = copy.deepcopy(net.state_dict())
    with th.no_grad():
        net.weight.add_(1.0)
    guard.snapshot({"net": net})
    assert guard.update(0.1).event.name == "ROLLBACK"
    guard.restore({"net": net})
    th.testing.assert_close(net.state_dict()["weight"], healthy["weight"])


def test_rollback_snapshot_needs_a_margin_above_the_floor():
    # a policy barely above the floor is about to collapse: with a margin, rollback lands on an earlier one
    guard = CollapseGuard("entropy_norm", 0.5, patience=1, on_collapse="rollback", snapshot_margin=0.1)
    net = th.nn.Linear(2, 2)
    guard.snapshot({"net": net})
    guard.update(0.8)  # healthy by 0.3: kept
    kept = copy.deepcopy(net.state_dict())
    with th.no_grad():
        net.weight.add_(1.0)
    guard.snapshot({"net": net})
    guard.update(0.55)  # healthy, but only by 0.05: not kept
    with th.no_grad():
        net.weight.add_(1.0)
    guard.snapshot({"net": net})
    assert guard.update(0.2).event.name == "ROLLBACK"
    guard.restore({"net": net})
    th.testing.assert_close(net.state_dict()["weight"], kept["weight"])
    with pytest.raises(ValueError, match="snapshot_margin"):
        CollapseGuard("entropy_norm", 0.5, snapshot_margin=-1)


def test_dirichlet_noise_does_not_trip_target_kl_before_the_first_step(capsys):
    # Regression: approx_kl used to include the noisy first plies, whose stored log-prob is the mixture's, so
    # with a peaked policy (entropy_norm ~0.47 here) the first minibatch read "max kl 0.32" and the update
    # stopped before any optimizer step: the parameters never moved.
    model = make_model(num_envs=16, horizon=4, batch_size=64, dirichlet_frac=0.25, target_kl=0.05, verbose=1)
    with th.no_grad():
        model.policy.action_net.net[-1].weight.mul_(3000.0)
    collect(model)
    assert model.last_rollout_stats["entropy_norm"] < 0.6
    before = params(model)
    model.train()
    assert not th.equal(params(model), before)
    assert model.last_train_stats["approx_kl"] == pytest.approx(0.0, abs=1e-6)  # one minibatch, judged pre-step
    assert model.skipped_updates == 0 and "Early stopping" not in capsys.readouterr().out
    model.env.close()
