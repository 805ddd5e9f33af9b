"""Controllers and guards driven with synthetic statistics."""

import math
import pickle

import numpy as np
import pytest
import torch as th

from grpo_agent.control import AdaptiveKLController, TargetEntropyController
from grpo_agent.diagnostics import zero_std_groups
from grpo_agent.guards import CollapseGuard, GuardEvent, NonFiniteAction, NonFiniteGuard
from grpo_agent.rollout import dirichlet_mix

# -- adaptive KL --------------------------------------------------------------------------------------------


def test_kl_controller_follows_ziegler_formula():
    c = AdaptiveKLController(init_kl_coef=0.1, kl_target=0.02, horizon=1000)
    # kl/target - 1 = 0.5 -> clipped to 0.2: 0.1 * (1 + 0.2 * 100 / 1000)
    assert c.update(0.03, n_steps=100) == pytest.approx(0.1 * 1.02)
    # kl/target - 1 = -0.1 (inside the clip): * (1 - 0.1 * 0.5)
    assert c.update(0.018, n_steps=500) == pytest.approx(0.1 * 1.02 * 0.95)
    assert c(0.3) == c.kl_coef  # usable as an SB3 schedule


def test_kl_controller_moves_toward_target_and_is_bounded():
    c = AdaptiveKLController(init_kl_coef=0.1, kl_target=0.02, horizon=100, min_coef=0.01, max_coef=0.5)
    coefs = [c.update(0.2, n_steps=50) for _ in range(40)]  # KL 10x too high
    assert all(b >= a for a, b in zip(coefs, coefs[1:]))
    assert coefs[-1] == 0.5
    coefs = [c.update(0.0, n_steps=50) for _ in range(80)]  # KL far too low
    assert all(b <= a for a, b in zip(coefs, coefs[1:]))
    assert coefs[-1] == 0.01
    before = c.kl_coef
    assert c.update(0.02, n_steps=50) == before  # on target: unchanged
    assert c.update(float("nan"), n_steps=50) == before


def test_kl_controller_state_round_trip_and_validation():
    c = AdaptiveKLController(init_kl_coef=0.1, kl_target=0.02, horizon=100)
    c.update(0.05, 30)
    d = AdaptiveKLController()
    d.load_state_dict(c.state_dict())
    assert d.state_dict() == c.state_dict()
    assert pickle.loads(pickle.dumps(c)).kl_coef == c.kl_coef
    with pytest.raises(ValueError, match="init_kl_coef"):
        AdaptiveKLController(init_kl_coef=0.0)
    with pytest.raises(ValueError, match="init_kl_coef=5"):
        AdaptiveKLController(init_kl_coef=5.0, max_coef=1.0)
    with pytest.raises(ValueError, match="missing"):
        d.load_state_dict({"kl_coef": 1.0})


# -- target entropy -----------------------------------------------------------------------------------------


def test_target_entropy_controller_direction_and_bounds():
    c = TargetEntropyController(target_fraction=0.5, init_coef=0.01, lr=1.0, min_coef=1e-3, max_coef=0.1)
    # entropy below target -> ent_coef up by exp(lr * 0.3)
    assert c.update(0.2) == pytest.approx(0.01 * math.exp(0.3))
    for _ in range(50):
        c.update(0.0)
    assert c.ent_coef == 0.1
    # entropy above target -> down, to the floor
    previous = c.ent_coef
    assert c.update(0.9) < previous
    for _ in range(100):
        c.update(1.0)
    assert c.ent_coef == 1e-3
    assert c.update(0.5) == pytest.approx(1e-3) and c.update(math.nan) == c.ent_coef  # on target / undefined
    d = TargetEntropyController()
    d.load_state_dict(c.state_dict())
    assert d.state_dict() == pytest.approx(c.state_dict(), nan_ok=True)
    with pytest.raises(ValueError, match="target_fraction"):
        TargetEntropyController(target_fraction=1.5)


# -- collapse guard -----------------------------------------------------------------------------------------


def test_guard_patience_counts_consecutive_updates_only():
    g = CollapseGuard("entropy_norm", threshold=0.3, patience=3, on_collapse="warn")
    # two bad, one healthy, two bad: never three in a row
    events = [g.update(v).event for v in (0.1, 0.1, 0.5, 0.1, 0.1)]
    assert events == [GuardEvent.NONE] * 5
    assert g.consecutive == 2
    # a nan (metric undefined) neither counts nor breaks the streak
    assert g.update(math.nan).event is GuardEvent.NONE and g.consecutive == 2
    action = g.update(0.1)
    assert action.event is GuardEvent.WARN
    assert "entropy_norm=0.1 < 0.3 for 3 consecutive updates" in action.message
    assert action.ent_coef_multiplier == 1.0 and action.lr_multiplier == 1.0
    # the streak restarts: the next warning needs another 3 bad updates
    assert [g.update(0.1).event for _ in range(3)] == [GuardEvent.NONE, GuardEvent.NONE, GuardEvent.WARN]
    assert g.update(0.4).event is GuardEvent.RECOVERED
    assert g.update(0.4).event is GuardEvent.NONE


def test_guard_boost_is_bounded_and_decays_when_healthy():
    g = CollapseGuard("entropy_norm", threshold=0.3, patience=2, on_collapse="boost", boost_factor=2.0,
                      max_boost=5.0, decay=0.5, boost_targets=("ent_coef", "temperature"), max_temperature_boost=1.5)
    boosts = []
    for _ in range(10):
        a = g.update(0.1)
        if a.event is GuardEvent.BOOST:
            boosts.append((a.ent_coef_multiplier, a.temperature_multiplier))
    assert boosts == [(2.0, 1.5), (4.0, 1.5), (5.0, 1.5), (5.0, 1.5), (5.0, 1.5)]
    a = g.update(0.5)
    assert a.event is GuardEvent.RECOVERED
    assert a.ent_coef_multiplier == pytest.approx(1 + 4.0 * 0.5)
    multipliers = [g.update(0.5).ent_coef_multiplier for _ in range(20)]
    assert all(b <= a for a, b in zip(multipliers, multipliers[1:]))
    assert multipliers[-1] == 1.0
    log = g.as_log_dict()
    assert log["guard/entropy_norm_boost"] == 1.0 and log["guard/entropy_norm_fired"] == 5.0


def test_guard_on_agreement_above_threshold_stops():
    g = CollapseGuard("action_agreement_mean", threshold=0.95, patience=2, on_collapse="stop")
    assert g.mode == "above"
    assert g.update(0.97).event is GuardEvent.NONE
    action = g.update(0.99)
    assert action.event is GuardEvent.STOP and action.should_stop
    assert "action_agreement_mean=0.99 > 0.95" in action.message
    log = g.as_log_dict()
    assert log["guard/action_agreement_mean_action"] == float(GuardEvent.STOP)
    assert log["guard/action_agreement_mean_state"] == 2.0


class Box:
    """A minimal object with a state_dict, standing in for a policy or optimizer."""

    def __init__(self, value):
        self.tensor = th.tensor([float(value)])

    def state_dict(self):
        return {"w": self.tensor}

    def load_state_dict(self, state):
        self.tensor = state["w"].clone()


def test_guard_rollback_restores_last_healthy_snapshot_and_lowers_lr():
    g = CollapseGuard("entropy_norm", threshold=0.3, patience=2, on_collapse="rollback",
                      rollback_lr_factor=0.5, max_rollbacks=2)
    model = Box(0.0)
    # update k: snapshot the parameters about to be measured, then feed their metric
    for step, value in enumerate([0.6, 0.5, 0.1, 0.1]):
        model.tensor[0] = float(step)  # parameters of update `step`
        g.snapshot({"model": model})
        model.tensor += 100.0  # the optimizer step changes the live tensor: the snapshot must be a copy
        action = g.update(value)
    assert action.event is GuardEvent.ROLLBACK and action.lr_multiplier == 0.5
    g.restore({"model": model})
    assert model.tensor.item() == 1.0  # parameters of update 1, the last with a healthy metric
    # a second collapse rolls back again to the same point with the LR halved again, a third stops
    for _ in range(2):
        g.snapshot({"model": model})
        action = g.update(0.1)
    assert action.event is GuardEvent.ROLLBACK and action.lr_multiplier == 0.25
    for _ in range(2):
        action = g.update(0.1)
    assert action.event is GuardEvent.STOP and "max_rollbacks=2" in action.message
    with pytest.raises(ValueError, match="snapshot keys"):
        g.restore({"other": model})


def test_guard_rollback_without_snapshot_stops():
    g = CollapseGuard("entropy", threshold=1.0, patience=1, on_collapse="rollback")
    action = g.update(0.5)
    assert action.event is GuardEvent.STOP and "no healthy snapshot" in action.message
    with pytest.raises(ValueError, match="no healthy snapshot"):
        g.restore({})


def test_guard_state_round_trip_and_pickle_drops_snapshots():
    g = CollapseGuard("entropy_norm", threshold=0.3, patience=3, on_collapse="boost")
    g.snapshot({"m": Box(1.0)})
    for v in (0.5, 0.1, 0.1, 0.1, 0.1):
        g.update(v)
    h = CollapseGuard("entropy_norm", threshold=0.3, patience=3, on_collapse="boost")
    h.load_state_dict(g.state_dict())
    assert h.state_dict() == g.state_dict()
    assert h.as_log_dict() == g.as_log_dict()
    assert g.has_healthy_snapshot
    copy = pickle.loads(pickle.dumps(g))
    assert not copy.has_healthy_snapshot and copy.boost == g.boost


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(metric="loss"), "no default mode"),
        (dict(on_collapse="explode"), "on_collapse"),
        (dict(patience=0), "patience"),
        (dict(boost_factor=1.0), "boost_factor"),
        (dict(decay=1.0), "decay"),
        (dict(boost_targets=("lr",)), "boost_targets"),
        (dict(rollback_lr_factor=0.0), "rollback_lr_factor"),
    ],
)
def test_guard_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CollapseGuard(**kwargs)


# -- non-finite guard ---------------------------------------------------------------------------------------


def test_nonfinite_guard_skips_then_stops():
    g = NonFiniteGuard(max_consecutive=3)
    assert g.check(1.0, 0.5) is NonFiniteAction.OK
    assert g.check(float("nan"), stats={"entropy": 2.0}) is NonFiniteAction.SKIP
    assert g.check(1.0, float("inf")) is NonFiniteAction.SKIP
    assert g.check(1.0, 0.5) is NonFiniteAction.OK  # a healthy step breaks the streak
    assert g.consecutive == 0
    assert g.check(th.tensor(float("inf"))) is NonFiniteAction.SKIP
    assert g.check(1.0) is NonFiniteAction.OK and g.consecutive == 1  # a finite loss alone does not reset
    assert g.check(1.0, float("nan"), {"approx_kl": 7.0}) is NonFiniteAction.SKIP
    assert g.check(float("nan"), stats={"approx_kl": 9.0}) is NonFiniteAction.STOP
    assert g.n_skipped == 5
    msg = g.message()
    assert "3 consecutive" in msg and "approx_kl=9" in msg and "loss=nan" in msg
    h = NonFiniteGuard()
    h.load_state_dict(g.state_dict())
    assert h.as_log_dict() == {"guard/nonfinite_consecutive": 3.0, "guard/nonfinite_skipped": 5.0}
    with pytest.raises(ValueError, match="max_consecutive"):
        NonFiniteGuard(max_consecutive=0)


# -- dynamic sampling and Dirichlet noise -------------------------------------------------------------------


def test_zero_std_groups_is_reexported():
    rewards = np.array([[0.5, 0.5, 0.5], [0.5, 0.0, 0.5], [1.0, 1.0, 9.0]])
    valid = np.array([[True, True, True], [True, True, True], [True, True, False]])
    np.testing.assert_array_equal(zero_std_groups(rewards, valid), [True, False, True])


def test_dirichlet_mix_is_a_distribution_on_legal_moves():
    rng = np.random.default_rng(0)
    legal = rng.random((64, 4672)) < 0.01
    legal[:, 0] = True
    legal[1] = False
    legal[1, 7] = True  # a single legal move keeps all the mass
    logits = th.as_tensor(rng.normal(size=(64, 4672)), dtype=th.float32).masked_fill(~th.as_tensor(legal), -1e8)
    probs = th.softmax(logits, dim=-1)
    mixed = dirichlet_mix(probs, th.as_tensor(legal), alpha=0.3, frac=0.25, rng=1)
    assert isinstance(mixed, th.Tensor) and mixed.dtype == th.float32
    assert th.all(mixed[~th.as_tensor(legal)] == 0)
    assert th.allclose(mixed.sum(dim=1), th.ones(64), atol=1e-5)
    assert mixed[1, 7].item() == pytest.approx(1.0)
    # the mixture keeps (1 - frac) of the policy on each move and noise is not the policy
    assert th.all(mixed >= 0.75 * probs - 1e-7)
    assert not th.allclose(mixed, probs, atol=1e-3)
    # log-probs of the sampled distribution are finite on every legal move
    assert th.isfinite(th.log(mixed[th.as_tensor(legal)])).all()
    # seeded: same rng, same noise; frac 0 is the policy itself
    assert th.equal(mixed, dirichlet_mix(probs, legal, 0.3, 0.25, rng=1))
    assert th.allclose(dirichlet_mix(probs, legal, 0.3, 0.0, rng=1), probs, atol=1e-6)


def test_dirichlet_mix_numpy_and_validation():
    probs = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    legal = np.array([[True, True, False], [True, False, True]])
    mixed = dirichlet_mix(probs, legal, alpha=1.0, frac=1.0, rng=np.random.default_rng(3))
    assert mixed[0, 2] == 0 and mixed[1, 1] == 0
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match=r"rows \[0\] have no legal move"):
        dirichlet_mix(probs, np.array([[False] * 3, [True] * 3]))
    with pytest.raises(ValueError, match="frac"):
        dirichlet_mix(probs, legal, frac=1.5)
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_mix(probs, legal, alpha=0.0)
