"""Rollouts past one machine: rollout workers as Ray actors (``pip install 'grpo-chess[dist]'``).

Rollouts are CPU-bound on Stockfish and python-chess, the update is one network's forward and backward passes,
so the learner stays on the driver (on its GPU when it has one) and the games move to Ray actors, one
:class:`RolloutWorker` per ``cpus_per_worker`` CPUs of the cluster. Each worker owns its ``ChessVectorEnv`` and Stockfish
pool (built inside the actor from the driver env's arguments, with its own seeds) and a CPU copy of the policy.

One rollout (:meth:`RayRollouts.collect`):

1. the policy's weights go into Ray's object store once (``ray.put``); every worker gets the same reference and
   loads it once per rollout, however many shares it plays;
2. the rollout's groups are cut into shares of ``groups_per_worker`` groups; idle workers take the next share,
   play it with the run's own collector (:meth:`~grpo_agent.rollout.GameGroupCollector.play`) and send back the
   played buffer and its :class:`~grpo_agent.rollout.PlayRecord`, gathered in completion order (``ray.wait``);
3. the driver puts the shares into its buffer in share order and finishes the rollout there, as a local one
   (statistics, dynamic sampling, advantages: the ``"rms"`` scale is one over the whole rollout, not per share).

With one worker and the same seed the rollout is the local path's, bit for bit: worker 0 plays every game of the
driver's env with its seeds and continues the driver's torch generator.

Faults: a worker process that dies is restarted by Ray (``max_restarts``; Ray's own task retries are off) and its
share is resubmitted, to it once it is back or to another worker; a share that runs past ``timeout_s`` has its
worker killed and restarted the same way, so a lost or hung worker never hangs the run; a worker past its restarts
is dropped, and a run with none left raises. Engine crashes stay the pool's business (it restarts the process and
retries the search); an error raised inside a worker (a pool that gave up, a bad position) is raised on the
driver as it would be locally. Restarts and resubmitted groups are counted in ``rollout/worker_restarts`` and
``rollout/resubmitted_groups`` (totals over the run) and printed.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch as th

from grpo_agent.policies import GRPOPolicy
from grpo_agent.rollout import CollectorSpec, PlayRecord, merge_records

if TYPE_CHECKING:
    from grpo_agent.grpo import GRPO

#: the rollout backends of :class:`~grpo_agent.GRPO`
ROLLOUT_BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class RayRolloutConfig:
    """The settings of the Ray rollout backend (``GRPO(..., rollout_backend="ray", rollout_options={...})``).

    :param num_workers: rollout workers (Ray actors); ``GRPO``'s ``num_rollout_workers``
    :param cpus_per_worker: CPUs Ray reserves for each worker (default 1): how many workers a machine holds
    :param engines_per_worker: Stockfish processes in each worker's pool (default ``None``: one per reserved CPU,
        at least one)
    :param groups_per_worker: groups per share, the unit a worker plays and a fault resubmits (default ``None``:
        the rollout's groups split evenly over the workers, one share each); must divide the rollout's groups.
        Smaller shares balance uneven workers and lose less to a fault, at one round trip per share
    :param timeout_s: seconds a share may run before its worker counts as hung and is restarted (default 600)
    :param start_timeout_s: seconds a worker may take to start or restart (its env, engines and policy) before the
        first rollout fails, or the restarted worker is dropped (default 600)
    :param max_restarts: restarts of each worker, by Ray, before it is dropped (default 3)
    :param torch_threads: torch threads of each worker's policy (default 1: the engines get the other CPUs)
    """

    num_workers: int = 2
    cpus_per_worker: float = 1.0
    engines_per_worker: int | None = None
    groups_per_worker: int | None = None
    timeout_s: float = 600.0
    start_timeout_s: float = 600.0
    max_restarts: int = 3
    torch_threads: int = 1

    def __post_init__(self) -> None:
        for name in ("num_workers", "engines_per_worker", "groups_per_worker", "torch_threads"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.cpus_per_worker > 0:
            raise ValueError(f"cpus_per_worker must be > 0, got {self.cpus_per_worker!r}")
        for name in ("timeout_s", "start_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if isinstance(self.max_restarts, bool) or not isinstance(self.max_restarts, int) or self.max_restarts < 0:
            raise ValueError(f"max_restarts must be an integer >= 0, got {self.max_restarts!r}")

    @classmethod
    def from_options(cls, num_workers: int, options: dict[str, Any] | None) -> RayRolloutConfig:
        """The config of ``GRPO``'s ``num_rollout_workers`` and ``rollout_options``, naming an unknown option."""
        options = dict(options or {})
        known = {f.name for f in fields(cls)} - {"num_workers"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown rollout_options {unknown} (allowed: {', '.join(sorted(known))})")
        return cls(num_workers=num_workers, **options)

    @property
    def engines(self) -> int:
        """Stockfish processes per worker."""
        return self.engines_per_worker or max(1, int(self.cpus_per_worker))


def require_ray() -> Any:
    """The ``ray`` module, or an ImportError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError("rollout_backend='ray' needs Ray: pip install 'grpo-chess[dist]'") from exc
    return ray


def init_ray(address: str | None = None, **init_kwargs: Any) -> None:
    """Connect to Ray unless already connected: ``address`` ``None`` or ``"local"`` starts a local Ray whose
    workers import this checkout's code, ``"auto"`` or ``HOST:PORT`` joins a running cluster (started with
    ``ray start``; its machines must have ``grpo-chess`` installed). ``init_kwargs`` go to ``ray.init``."""
    ray = require_ray()
    if ray.is_initialized():
        return
    if address in (None, "local"):
        # Workers of a local Ray are started from this machine: give them the code the driver runs (an editable
        # install or a PYTHONPATH checkout), not whatever else the interpreter might find first.
        root = str(Path(__file__).resolve().parent.parent)
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        runtime_env = init_kwargs.pop("runtime_env", None) or {}
        runtime_env.setdefault("env_vars", {}).setdefault("PYTHONPATH", path)
        ray.init(address="local", runtime_env=runtime_env, **init_kwargs)
    else:
        ray.init(address=address, **init_kwargs)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a :class:`RolloutWorker` builds itself from (picklable)."""

    index: int
    num_envs: int
    game_kwargs: dict[str, Any]
    engines: int
    threads: int
    collector: CollectorSpec
    policy_class: type[GRPOPolicy]
    policy_kwargs: dict[str, Any]
    observation_space: Any
    action_space: Any
    seed: int | None
    #: worker 0 continues the driver's torch generator (what sampling draws from), so one worker replays the
    #: local path; the others seed theirs from ``seed``
    torch_state: th.Tensor | None


class RolloutWorker:
    """A Ray actor's class: one worker's games, engines, policy copy and collector (see the module docstring)."""

    def __init__(self, spec: WorkerSpec) -> None:
        from chess_env import ChessVectorEnv
        from chess_env.sb3 import ChessVecEnv

        th.set_num_threads(spec.threads)
        self.env = ChessVecEnv(ChessVectorEnv(spec.num_envs, engine_processes=spec.engines, **spec.game_kwargs))
        self.env.seed(spec.seed)  # used by the first reset, as SB3 seeds the driver's env
        self.policy = spec.policy_class(spec.observation_space, spec.action_space, lambda _: 0.0, **spec.policy_kwargs)
        self.policy.set_training_mode(False)
        self.policy.requires_grad_(False)
        self.collector = spec.collector.build(self.env, np.random.default_rng(spec.seed), "cpu")
        self._weights_of = -1
        # Last: building the policy drew its (overwritten) initial weights from the generator.
        if spec.torch_state is not None:
            th.set_rng_state(spec.torch_state)
        elif spec.seed is not None:
            th.manual_seed(spec.seed)

    def play(self, rollout: int, weights: list[Any], temperature: float, base_temperature: float
             ) -> tuple[dict[str, Any], PlayRecord]:
        """Play one share with rollout ``rollout``'s weights (``weights``: the object-store reference, in a list so
        that Ray passes it unresolved and the weights are read once per rollout)."""
        if rollout != self._weights_of:
            import ray

            state = ray.get(weights[0])
            self.policy.load_state_dict({name: th.tensor(value) for name, value in state.items()})
            self._weights_of = rollout
        record = self.collector.play(self.policy, temperature, base_temperature, lambda n, step: True)
        assert record is not None  # the hook never stops a worker's share
        return self.collector.buffer.played(), record

    def pid(self) -> int:
        """The actor's process id (what the fault tests kill)."""
        return os.getpid()


def _worker_seed(seed: int | None, index: int) -> int | None:
    """Worker 0 keeps the run's seed (its games are the local path's); the others get independent streams."""
    if index == 0:
        return seed
    entropy = [seed, index] if seed is not None else None
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)


class RayRollouts:
    """The driver's side of the Ray backend: the workers of ``model``'s run, and its rollouts through them.

    :param model: the GRPO run; its env (a ``ChessVecEnv``) gives the workers' game arguments, its collector the
        buffer the shares are merged into, its ``num_rollout_workers`` and ``rollout_options`` the settings
    """

    def __init__(self, model: GRPO) -> None:
        ray = require_ray()
        config = RayRolloutConfig.from_options(model.num_rollout_workers, model.rollout_options)
        init_ray()
        vector_env = getattr(model.env, "vector_env", None)
        if vector_env is None or not hasattr(vector_env, "game_kwargs"):
            raise ValueError("rollout_backend='ray' rebuilds the env on each worker from a chess_env.ChessVectorEnv's "
                             f"arguments; {type(model.env).__name__} is not one")
        self.collector, self.config = model.collector, config
        group_size = 1 if model.group_mode == "moves" else int(model.group_size)  # type: ignore[arg-type]
        n_groups = model.n_groups
        per_share = config.groups_per_worker or n_groups // config.num_workers
        if per_share < 1 or n_groups % per_share:
            raise ValueError(f"groups_per_worker={per_share} must divide the rollout's {n_groups} groups "
                             f"(num_envs={model.n_envs}, num_rollout_workers={config.num_workers})")
        self.n_shares, self.share_groups = n_groups // per_share, per_share
        collector_spec = model.collector_spec()
        specs = [
            WorkerSpec(
                index=i, num_envs=per_share * group_size, game_kwargs=dict(vector_env.game_kwargs),
                engines=config.engines, threads=config.torch_threads, collector=collector_spec,
                policy_class=type(model.policy), policy_kwargs=dict(model.policy_kwargs),
                observation_space=model.observation_space, action_space=model.action_space,
                seed=_worker_seed(model.seed, i), torch_state=th.get_rng_state() if i == 0 else None,
            )
            for i in range(config.num_workers)
        ]
        actor = ray.remote(num_cpus=config.cpus_per_worker, max_restarts=config.max_restarts,
                           max_task_retries=0)(RolloutWorker)
        self.workers = [actor.remote(spec) for spec in specs]
        try:
            # Started before the first share, so that a share's timeout measures its play, not the start-up.
            #: the workers' process ids
            self.pids: list[int] = ray.get([worker.pid.remote() for worker in self.workers],
                                           timeout=config.start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            self.shutdown()
            raise RuntimeError(
                f"{config.num_workers} rollout workers of {config.cpus_per_worker} CPUs each did not start within "
                f"start_timeout_s={config.start_timeout_s}; the cluster has {ray.cluster_resources().get('CPU', 0)} CPUs"
            ) from None
        self.restarts = [0] * len(self.workers)
        self._dropped: set[int] = set()
        # Workers lost and not yet back, kept over rollouts: worker -> (lost at, next probe at); probes in flight:
        # reference -> (worker, deadline).
        self._recovering: dict[int, tuple[float, float]] = {}
        self._probes: dict[Any, tuple[int, float]] = {}
        #: totals over the run: worker restarts (deaths and hangs) and the groups played again because of them
        self.worker_restarts = 0
        self.resubmitted_groups = 0
        self._rollout = 0
        #: bytes of the latest rollout's weights in the object store (what each worker reads once), and of the
        #: played shares that came back
        self.weights_bytes = 0
        self.shares_bytes = 0

    def collect(self, policy: GRPOPolicy, temperature: float, base_temperature: float,
                on_step: Any) -> dict[str, float] | None:
        """Play one rollout on the workers, merge it into the collector's buffer and finish it there.

        ``on_step(n_plies, {})`` is called as each share comes back (False stops the rollout: None is returned).
        :return: the rollout's statistics, with ``worker_restarts`` and ``resubmitted_groups``
        """
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        start = time.perf_counter()
        self._rollout += 1
        state = {name: value.detach().cpu().numpy() for name, value in policy.state_dict().items()}
        self.weights_bytes = sum(value.nbytes for value in state.values())
        weights = ray.put(state)
        todo = deque(range(self.n_shares))
        idle = deque(w for w in range(len(self.workers)) if w not in self._dropped and w not in self._recovering)
        running: dict[Any, tuple[int, int, float]] = {}  # reference -> (worker, share, deadline)
        done: dict[int, tuple[dict[str, Any], PlayRecord]] = {}
        while len(done) < self.n_shares:
            now = time.monotonic()
            self._probe(now)
            while todo and idle:
                w, share = idle.popleft(), todo.popleft()
                ref = self.workers[w].play.remote(self._rollout, [weights], temperature, base_temperature)
                running[ref] = (w, share, now + self.config.timeout_s)
            if not running and not self._recovering:
                raise RuntimeError(f"every rollout worker is lost (each restarted up to {self.config.max_restarts} "
                                   f"times); {self.n_shares - len(done)} of {self.n_shares} shares unplayed")
            # Wake up for the first answer (a share, or a probe of a worker coming back), the first deadline, or
            # the next probe.
            refs = [*running, *self._probes]
            wake = min([d for _, _, d in running.values()] + [d for _, d in self._probes.values()]
                       + [p for _, p in self._recovering.values()] + [now + 1.0])
            ready = ray.wait(refs, num_returns=1, timeout=max(wake - now, 0.0))[0] if refs else []
            if not refs:
                time.sleep(max(wake - now, 0.0))
            for ref in ready:
                if ref in self._probes:
                    idle.extend(self._answered(ref))
                    continue
                w, share, _ = running.pop(ref)
                try:
                    value = ray.get(ref)
                except RayActorError as exc:
                    self._lost(w, share, todo, type(exc).__name__)
                    continue
                except RayTaskError as exc:
                    raise exc.as_instanceof_cause() from None  # the worker's own error, as a local run raises it
                done[share] = value
                idle.append(w)
                if not on_step(value[1].timesteps, {}):
                    ray.wait(list(running), num_returns=len(running), timeout=self.config.timeout_s)
                    return None
            now = time.monotonic()
            for ref, (w, share, deadline) in list(running.items()):
                if now > deadline:
                    # Killed with its restart allowed (its reference fails; it is not waited for again).
                    running.pop(ref)
                    ray.kill(self.workers[w], no_restart=False)
                    self._lost(w, share, todo, f"ran past timeout_s={self.config.timeout_s}, killed")
        order = range(self.n_shares)
        self.shares_bytes = sum(np.asarray(v).nbytes for played, _ in done.values() for v in played.values())
        self.collector.buffer.load_played([done[share][0] for share in order])
        record = merge_records([done[share][1] for share in order])
        stats = self.collector.finish(record, temperature, max(time.perf_counter() - start, 1e-9))
        stats.update(worker_restarts=float(self.worker_restarts), resubmitted_groups=float(self.resubmitted_groups))
        return stats

    def _lost(self, w: int, share: int, todo: deque, why: str) -> None:
        """Worker ``w`` lost its share: resubmit the share first, and wait for Ray to bring the worker back (it
        takes no share until it answers a probe), or drop it once its restarts are spent."""
        todo.appendleft(share)
        self.resubmitted_groups += self.share_groups
        self.restarts[w] += 1
        self.worker_restarts += 1
        spent = self.restarts[w] > self.config.max_restarts
        print(f"[ray rollouts] worker {w} lost share {share} ({why}): its {self.share_groups} groups resubmitted; "
              f"{'out of restarts' if spent else 'Ray restarts it'} ({self.worker_restarts} restarts so far)")
        if spent:
            self._drop(w, f"failed after {self.config.max_restarts} restarts")
        else:
            now = time.monotonic()
            self._recovering[w] = (now, now + 0.5)

    def _probe(self, now: float) -> None:
        """Ask the recovering workers that are due whether they are back; drop those gone past ``start_timeout_s``."""
        limit = self.config.start_timeout_s
        for w, (lost_at, probe_at) in list(self._recovering.items()):
            if now > lost_at + limit:
                del self._recovering[w]
                self._drop(w, f"did not come back within start_timeout_s={limit}")
            elif probe_at <= now:
                self._probes[self.workers[w].pid.remote()] = (w, lost_at + limit)
                self._recovering[w] = (lost_at, float("inf"))  # one probe at a time

    def _answered(self, ref: Any) -> list[int]:
        """A probe's answer: ``[w]`` if its worker is back (then it takes shares again), ``[]`` if not yet."""
        import ray
        from ray.exceptions import RayActorError

        w, _ = self._probes.pop(ref)
        if w in self._dropped:
            return []
        try:
            pid = ray.get(ref)
        except RayActorError:
            if w in self._recovering:
                self._recovering[w] = (self._recovering[w][0], time.monotonic() + 0.5)  # still restarting
            return []
        self._recovering.pop(w, None)
        print(f"[ray rollouts] worker {w} is back (process {pid}, was {self.pids[w]})")
        self.pids[w] = pid
        return [w]

    def _drop(self, w: int, why: str) -> None:
        import ray

        self._dropped.add(w)
        ray.kill(self.workers[w], no_restart=True)
        print(f"[ray rollouts] worker {w} {why}: dropped ({len(self.workers) - len(self._dropped)} left)")

    def shutdown(self) -> None:
        """Stop the workers (their engines close with their processes)."""
        import ray

        for worker in self.workers:
            ray.kill(worker, no_restart=True)
        self.workers = []
