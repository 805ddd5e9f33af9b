"""UpdateThreads: the update runs on its own torch thread count, the rollouts on the process's."""

import pytest
import torch as th
from sb3_contrib import MaskablePPO
from stable_baselines3.common.callbacks import BaseCallback

from chess_env import ChessVectorEnv
from chess_env.sb3 import ChessVecEnv
from grpo_agent import GRPO
from grpo_agent.threads import UpdateThreads

TINY = dict(features_extractor_kwargs=dict(n_blocks=1, channels=8))


class RolloutThreads(BaseCallback):
    """Records the torch thread count at every rollout step."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[int] = set()

    def _on_step(self) -> bool:
        self.seen.add(th.get_num_threads())
        return True


def learn_and_watch(model, update_threads: int) -> tuple[set[int], set[int]]:
    """(threads seen by the rollouts, threads seen by the updates) over three rollouts."""
    in_update: set[int] = set()
    train = model.train

    def watched_train() -> None:
        in_update.add(th.get_num_threads())
        train()

    model.train = watched_train
    rollouts = RolloutThreads()
    per_rollout = model.n_envs * getattr(model, "horizon", getattr(model, "n_steps", 0))
    model.learn(3 * per_rollout, callback=[UpdateThreads(update_threads), rollouts])
    return rollouts.seen, in_update


@pytest.fixture
def one_thread():
    threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(threads)


def test_the_update_gets_its_threads_and_the_rollouts_keep_theirs(one_thread):
    model = GRPO("ChessResNetPolicy", ChessVectorEnv(4, shaping=False, max_plies=20), group_size=2, horizon=4,
                 batch_size=8, n_epochs=1, policy_kwargs=TINY, seed=0)
    rollout, update = learn_and_watch(model, 3)
    assert rollout == {1} and update == {3}
    assert th.get_num_threads() == 1  # restored when learn() ends
    model.env.close()


def test_maskable_ppo_gets_the_same(one_thread):
    env = ChessVecEnv(ChessVectorEnv(4, shaping=False, max_plies=20))
    model = MaskablePPO("MlpPolicy", env, n_steps=4, batch_size=8, n_epochs=1, policy_kwargs=dict(net_arch=[16]),
                        seed=0)
    rollout, update = learn_and_watch(model, 2)
    assert rollout == {1} and update == {2}
    assert th.get_num_threads() == 1
    env.close()


def test_one_per_core_by_default(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert UpdateThreads().update_threads == 6


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ValueError, match=rf"update_threads={bad!r} must be a positive int or None"):
        UpdateThreads(bad)
