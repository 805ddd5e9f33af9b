"""Fault suite: a real ``grpo-chess train`` run survives engine crashes and hangs and being killed, loses nothing,
and ends with the model an uninterrupted run ends with.

Run: ``python -m benchmarks.faults [--preset ci|laptop] [--out benchmarks/results/faults_laptop.json]``
(``tests/test_faults.py`` runs the ``ci`` preset). It trains one config twice, each session in its own process:

* **clean**: one uninterrupted session, no faults;
* **faulty**: the same run in sessions that are killed and resumed (``grpo-chess train --resume``) until one
  finishes. In every session a :class:`FaultInjector` inside the trainer SIGKILLs one of its Stockfish
  processes every ``kill_every`` engine searches, and SIGSTOPs another once, for good (the pool's watchdog,
  ``watchdog`` seconds, must notice the hang, kill the process and retry its searches on a fresh one). The
  sessions end by, in order: a SIGKILL from this driver between two checkpoint writes (a log row past the
  last checkpoint is on disk), a SIGKILL inside the trainer half-way through writing a checkpoint, then
  while a resumed session rewrites ``config.yaml`` and while it rewrites ``progress.csv`` (during resume),
  another SIGKILL between checkpoints, and a last session that runs to the end.

Reported: faults injected and survived (a session that exits other than by the planned kill or at the end did
not survive its faults), trajectories lost (rollouts the clean run trained that the faulty run's log lacks,
times ``num_envs``; rollouts merely repeated after a kill are counted apart), whether the final parameters
equal the clean run's bit for bit, duplicated and missing log rows, Stockfish processes left behind, the
wall-clock of both runs, and the trainer's and its engines' resident memory sampled every
``SAMPLE_INTERVAL`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
#: seconds between two memory samples of a session
SAMPLE_INTERVAL = 0.1
TINY = {"features_extractor_kwargs": {"n_blocks": 1, "channels": 16}}

PRESETS: dict[str, dict[str, Any]] = {
    # ~2 minutes on 2 loaded cores: 12 rollouts of 8 games x 4 plies, checkpoints every 2 rollouts.
    "ci": {
        "config": {
            "env": {"num_envs": 8, "reward_depth": 1, "max_plies": 60, "start_positions": "builtin", "engine_processes": 2},
            "algo": {"policy_kwargs": TINY, "group_size": 4, "horizon": 4, "n_epochs": 1, "batch_size": 32, "seed": 0},
            "train": {"total_timesteps": 8 * 4 * 12, "checkpoint_every": 2, "progress_bar": False, "evaluate": "none"},
        },
        "kill_every": 40, "stop_at": 15, "watchdog": 1.0, "timeout": 300,
    },
    # The README's table: 48 rollouts of 16 games x 8 plies with the default network, checkpoints every 6.
    "laptop": {
        "config": {
            "env": {"num_envs": 16, "reward_depth": 1, "max_plies": 200, "start_positions": "builtin", "engine_processes": 2},
            "algo": {"policy_kwargs": {"features_extractor_kwargs": {"n_blocks": 4, "channels": 64}}, "group_size": 8,
                     "horizon": 8, "n_epochs": 2, "batch_size": 64, "seed": 0, "target_entropy": 0.5},
            "train": {"total_timesteps": 16 * 8 * 48, "checkpoint_every": 6, "progress_bar": False, "evaluate": "none"},
        },
        "kill_every": 150, "stop_at": 60, "watchdog": 2.0, "timeout": 900,
    },
}

#: how each faulty session ends: "between" (this driver's SIGKILL once a log row past the last checkpoint is
#: written), "checkpoint" / "config" / "progress" (the trainer's own SIGKILL half-way through writing that
#: file), or None (it runs to the end)
SESSION_ENDS = ("between", "checkpoint", "config", "progress", "between", None)


# -- inside the trainer ----------------------------------------------------------------------------------------


class FaultInjector:
    """Faults injected from inside a training process: engine SIGKILLs and a SIGSTOP, and a SIGKILL of the
    process itself while it writes a chosen file. Every fault is appended to ``log`` as a JSON line.

    :param kill_every: SIGKILL a random engine process of a pool after every this many searches it was sent
    :param stop_at: SIGSTOP one of its processes (for good) once it was sent this many searches
    :param watchdog: the pools' watchdog (``StockfishPool.timeout``), seconds
    :param die_writing: ``"checkpoint"``, ``"config"``, ``"progress"`` or None: which file to die writing
    """

    def __init__(self, log: Path, kill_every: int, stop_at: int, watchdog: float, die_writing: str | None,
                 seed: int = 0) -> None:
        self.log_path, self.kill_every, self.stop_at, self.watchdog = log, kill_every, stop_at, watchdog
        self.die_writing = die_writing
        self.rng = random.Random(seed)
        self.next_kill: dict[int, int] = {}
        self.stopped: set[int] = set()
        self.lock = threading.Lock()

    def log(self, **event: Any) -> None:
        with self.lock, open(self.log_path, "a") as f:
            f.write(json.dumps({"t": time.time(), **event}) + "\n")

    def install(self) -> None:
        """Wrap the pool's submissions and every module's ``atomic_write``."""
        import grpo_agent.cli.train  # noqa: F401  (binds the names patched below)
        from chess_env.engine import StockfishPool
        from grpo_agent import save_util

        injector = self
        for name in ("submit", "submit_moves"):
            original = getattr(StockfishPool, name)

            def wrapped(pool: Any, boards: Any, limit: Any, _original: Any = original) -> Any:
                pool.timeout = injector.watchdog  # read at each submission
                future = _original(pool, boards, limit)
                injector.after_submit(pool)
                return future

            setattr(StockfishPool, name, wrapped)
        original_write = save_util.atomic_write

        def atomic_write(path: Any, data: bytes) -> None:
            if injector.die_writing is not None and injector.die_writing in _kind(Path(path)):
                injector.die_half_way(Path(path), data)
            original_write(path, data)

        for module in list(sys.modules.values()):
            if getattr(module, "atomic_write", None) is original_write:
                module.atomic_write = atomic_write  # type: ignore[attr-defined]

    def after_submit(self, pool: Any) -> None:
        """Kill or stop an engine process of ``pool`` once enough searches were sent to it (right after a
        submission: the batch's first requests are already written, so the kill lands mid-search)."""
        sent = pool.cache_misses
        key = id(pool)
        nxt = self.next_kill.setdefault(key, self.kill_every)
        live = [pid for pid in pool.pids if pid not in self.stopped]
        if sent >= nxt and live:
            victim = self.rng.choice(live)
            os.kill(victim, signal.SIGKILL)
            self.next_kill[key] = sent + self.kill_every
            self.log(fault="engine_kill", pid=victim, searches=sent)
            live.remove(victim)
        if sent >= self.stop_at and not self.stopped and live:
            victim = self.rng.choice(live)
            os.kill(victim, signal.SIGSTOP)
            self.stopped.add(victim)
            self.log(fault="engine_stop", pid=victim, searches=sent, watchdog=self.watchdog)
            threading.Thread(target=self._time_stop, args=(victim, time.monotonic()), daemon=True).start()

    def _time_stop(self, pid: int, since: float) -> None:
        while Path(f"/proc/{pid}").exists():
            time.sleep(0.02)
        self.log(fault="engine_stop_ended", pid=pid, stopped_s=round(time.monotonic() - since, 3))

    def die_half_way(self, path: Path, data: bytes) -> None:
        """Leave half of ``data`` in the temporary file that ``atomic_write`` renames from, then SIGKILL self."""
        with open(path.with_name(f".{path.name}.tmp"), "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            os.fsync(fh.fileno())
        self.log(fault="trainer_kill", during=f"writing {path.name}", written=len(data) // 2, of=len(data))
        os.kill(os.getpid(), signal.SIGKILL)


def _kind(path: Path) -> str:
    """``"checkpoint"``, ``"config"``, ``"progress"`` or ``""``: which file of a run ``path`` is."""
    if path.parent.name == "checkpoints":
        return "checkpoint"
    return {"config.yaml": "config", "progress.csv": "progress"}.get(path.name, "")


def child_main(plan: dict[str, Any], log: Path, train_argv: list[str]) -> int:
    """A training session with the faults of ``plan`` injected: ``grpo-chess train TRAIN_ARGV``."""
    FaultInjector(log, plan["kill_every"], plan["stop_at"], plan["watchdog"], plan.get("die_writing"),
                  plan.get("seed", 0)).install()
    from grpo_agent.cli import main

    return main(["train", *train_argv])


# -- watching a session from outside ------------------------------------------------------------------------------


def _ppid_and_comm(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    return int(stat[stat.rindex(")") + 2 :].split()[1]), comm


def engine_children(pid: int) -> list[int]:
    """The Stockfish processes whose parent is ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _ppid_and_comm(int(entry))
            if info is not None and info[0] == pid and info[1].startswith("stockfish"):
                out.append(int(entry))
    return out


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def log_rows(path: Path | None) -> int:
    """Complete data rows of a ``progress.csv`` (0 while it does not exist)."""
    try:
        return max(path.read_text().count("\n") - 1, 0) if path is not None else 0
    except OSError:
        return 0


def _inode(path: Path | None) -> int | None:
    try:
        return path.stat().st_ino if path is not None else None
    except OSError:
        return None


@dataclass
class Session:
    """One training process: how it ended and what it used."""

    end: str | None
    returncode: int | None = None
    wall_s: float = 0.0
    #: (seconds since start, trainer RSS MB, engines' RSS MB, engine processes, log rows of this session)
    samples: list[tuple[float, float, float, int, int]] = field(default_factory=list)
    engine_pids: set[int] = field(default_factory=set)
    left_behind: list[int] = field(default_factory=list)
    rows_at_start: int = 0
    #: rows of the log that the session keeps (those at or before the checkpoint it resumes from)
    rows_kept: int = 0
    #: whether it rewrote the log (dropping the rows past its checkpoint) before it ended
    rewrote_log: bool = False
    resumed_from: int | None = None
    stderr: str = ""
    #: wall time (``time.time()``) at its start, to match the fault log's events to their session
    started: float = 0.0

    @property
    def planned_end(self) -> bool:
        """It ended as planned: killed (by the driver or by itself) when a kill was planned, else with status 0."""
        return self.returncode == (-signal.SIGKILL if self.end is not None else 0)


def run_session(train_argv: list[str], plan: dict[str, Any] | None, log: Path, runs: Path, end: str | None,
                kept: int, kill_after_rows: int | None, timeout: float) -> Session:
    """Run one training process (``grpo-chess train TRAIN_ARGV``, faults of ``plan`` injected) to its end, sampling
    its memory. It keeps ``kept`` rows of the log. With ``kill_after_rows``, SIGKILL it once its
    ``runs/*/progress.csv`` has that many rows (counted once the session has rewritten the file: before that,
    the rows are the previous session's)."""
    def progress() -> Path | None:
        return next(iter(runs.glob("*/progress.csv")), None)

    session = Session(end, rows_at_start=log_rows(progress()), rows_kept=kept)
    command = [sys.executable, "-m", "benchmarks.faults", "child", "--plan", json.dumps(plan), "--log", str(log), "--"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    inode, armed = _inode(progress()), False
    start, session.started = time.monotonic(), time.time()
    # A session of its own: once it is killed, its engines' process group is orphaned, and the kernel sends a
    # stopped engine SIGCONT and the SIGHUP that ends it.
    proc = subprocess.Popen(command + train_argv, cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    while proc.poll() is None:
        now = time.monotonic() - start
        engines = engine_children(proc.pid)
        session.engine_pids.update(engines)
        path = progress()
        armed = armed or _inode(path) not in (None, inode)
        rows = log_rows(path) if armed else kept
        session.samples.append((round(now, 2), rss_mb(proc.pid), sum(rss_mb(p) for p in engines), len(engines), rows))
        if (kill_after_rows is not None and armed and rows >= kill_after_rows) or now > timeout:
            proc.send_signal(signal.SIGKILL)
        time.sleep(SAMPLE_INTERVAL)
    session.returncode, session.wall_s = proc.returncode, time.monotonic() - start
    session.rewrote_log = armed or _inode(progress()) not in (None, inode)
    reader.join(5)
    session.stderr = "".join(stderr)[-3000:]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in session.engine_pids):
        time.sleep(0.05)
    session.left_behind = [p for p in session.engine_pids if Path(f"/proc/{p}").exists()]
    return session


# -- the suite ---------------------------------------------------------------------------------------------------


def run_suite(preset: dict[str, Any], work: Path) -> dict[str, Any]:
    """Train ``preset`` clean and with faults in ``work``; return the report (see the module docstring)."""
    import yaml

    from grpo_agent.cli.train import latest_checkpoint
    from grpo_agent.resume import checkpoint_timesteps

    work.mkdir(parents=True, exist_ok=True)
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(preset["config"]))
    fault_log = work / "faults.jsonl"
    fault_log.write_text("")
    every = preset["config"]["train"]["checkpoint_every"]
    fresh = ["--config", str(config), "--wandb", "disabled", "--set"]

    clean = run_session([*fresh, f"train.runs_dir={work / 'clean'}"], None, fault_log, work / "clean", None, 0, None,
                        preset["timeout"])
    sessions: list[Session] = []
    runs = work / "faulty"
    for index, end in enumerate(SESSION_ENDS):
        plan = {key: preset[key] for key in ("kill_every", "stop_at", "watchdog")}
        plan.update(seed=index, die_writing=None if end == "between" else end)
        run_dir = next(iter(runs.glob("*")), None)
        if run_dir is None:
            args, resumed_from, kept = [*fresh, f"train.runs_dir={runs}"], None, 0
        else:
            resumed_from = checkpoint_timesteps(latest_checkpoint(run_dir))
            args, kept = ["--resume", str(run_dir), "--wandb", "disabled"], _rows_at(run_dir / "progress.csv", resumed_from)
        # "between": a row past the next checkpoint is on disk, and the one after that is being played.
        kill_after = kept + every + 1 if end == "between" else None
        session = run_session(args, plan, fault_log, runs, end, kept, kill_after, preset["timeout"])
        session.resumed_from = resumed_from
        sessions.append(session)
    (clean_dir,), (run_dir,) = list((work / "clean").iterdir()), list(runs.iterdir())
    return report(preset, clean, clean_dir, sessions, run_dir, fault_log)


def _rows_at(progress: Path, timesteps: int) -> int:
    """Rows of ``progress`` logged at or before ``timesteps`` (those a resume from there keeps)."""
    import pandas as pd

    return int((pd.read_csv(progress)["time/total_timesteps"] <= timesteps).sum()) if progress.is_file() else 0


# -- the report --------------------------------------------------------------------------------------------------


def _memory(session: Session) -> dict[str, Any] | None:
    """Memory while a session trains (engines up, its first rollout logged): the medians of the first and the
    second half of the samples and the largest, of the trainer and of the engines (all processes together);
    None for a session that never got there. Medians, because the trainer's RSS swings by ~20 MB within a
    rollout (the allocator taking and returning the update's tensors)."""
    training = [s for s in session.samples if s[3] > 0 and s[4] > session.rows_kept]
    if len(training) < 4:
        return None
    half = len(training) // 2

    def median(values: list[float]) -> float:
        return round(sorted(values)[len(values) // 2], 1)

    out: dict[str, Any] = {"training_s": round(training[-1][0] - training[0][0], 1), "samples": len(training)}
    for name, column in (("trainer", 1), ("engines", 2)):
        values = [s[column] for s in training]
        out.update({f"{name}_mb_first_half": median(values[:half]), f"{name}_mb_second_half": median(values[half:]),
                    f"{name}_mb_max": round(max(values), 1)})
    out["engine_processes_max"] = max(s[3] for s in training)
    return out


def _final_parameters_equal(a: Path, b: Path) -> bool:
    import torch as th

    from grpo_agent import GRPO

    vectors = [th.nn.utils.parameters_to_vector(GRPO.load(path).policy.parameters()) for path in (a, b)]
    return bool(th.equal(*vectors))


def report(preset: dict[str, Any], clean: Session, clean_dir: Path, sessions: list[Session], run_dir: Path,
           fault_log: Path) -> dict[str, Any]:
    """Faults, what they cost and what they lost, from the sessions, the fault log and the two runs' outputs."""
    import pandas as pd

    events = [json.loads(line) for line in fault_log.read_text().splitlines() if line]
    kinds = ("engine_kill", "engine_stop", "trainer_kill")
    injected = {kind: sum(e["fault"] == kind for e in events) for kind in kinds}
    injected["trainer_kill"] += sum(s.end == "between" and s.returncode == -signal.SIGKILL for s in sessions)
    # A fault is survived when its session went on as planned (engine faults), or when the next session resumed
    # from the run and went on as planned (kills of the trainer).
    session_of = [(e, _session_at(sessions, e["t"])) for e in events if e["fault"] in kinds]
    survived = {kind: sum(e["fault"] == kind and s is not None and s.planned_end for e, s in session_of) for kind in kinds}
    survived["trainer_kill"] = sum(nxt.planned_end for s, nxt in zip(sessions, sessions[1:]) if s.end is not None)
    steps = [pd.read_csv(d / "progress.csv")["time/total_timesteps"].tolist() for d in (clean_dir, run_dir)]
    num_envs = preset["config"]["env"]["num_envs"]
    missing = sorted(set(steps[0]) - set(steps[1]))
    finished = (run_dir / "final_model.zip").is_file()
    from benchmarks.common import machine_info

    return {
        "machine": machine_info(),
        "config": preset["config"],
        "kill_every": preset["kill_every"], "watchdog_s": preset["watchdog"],
        "faults_injected": injected,
        "faults_survived": survived,
        "engine_stopped_s": [e["stopped_s"] for e in events if e["fault"] == "engine_stop_ended"],
        "sessions": [{"end": s.end or "finished", "returncode": s.returncode, "wall_s": round(s.wall_s, 1),
                      "resumed_from_timesteps": s.resumed_from, "engines_left_behind": len(s.left_behind)}
                     for s in sessions],
        "trajectories_lost": len(missing) * num_envs,
        "log_rows_duplicated": len(steps[1]) - len(set(steps[1])),
        "log_rows_missing": len(missing),
        "rollouts_repeated_after_kills": sum(s.rows_at_start - s.rows_kept for s in sessions if s.rewrote_log),
        "final_parameters_equal_clean": finished and _final_parameters_equal(clean_dir / "final_model.zip",
                                                                             run_dir / "final_model.zip"),
        "engines_left_behind": sum(len(s.left_behind) for s in [clean, *sessions]),
        "wall_clean_s": round(clean.wall_s, 1),
        "wall_faulty_s": round(sum(s.wall_s for s in sessions), 1),
        "wall_overhead": round(sum(s.wall_s for s in sessions) / clean.wall_s - 1, 3),
        "memory_clean": _memory(clean),
        # The faulty session with the most training samples; which session that is depends on where the kills
        # land on this machine's clock, and one killed early may have too few samples to measure.
        "memory_faulty_longest": max((m for m in map(_memory, sessions) if m is not None),
                                     key=lambda m: m["samples"], default=None),
        #: every memory sample: (seconds, trainer MB, engines MB, engine processes, log rows)
        "samples": {"clean": clean.samples, "faulty": [s.samples for s in sessions]},
    }


def _session_at(sessions: list[Session], t: float) -> Session | None:
    """The session running at wall time ``t`` (sessions run one after another)."""
    for session in sessions:
        if session.started <= t <= session.started + session.wall_s + 1.0:
            return session
    return None


def markdown(result: dict[str, Any]) -> str:
    """The README's table of a :func:`report`."""
    inj, sur = result["faults_injected"], result["faults_survived"]
    stopped = result["engine_stopped_s"]
    rows = [
        ("Stockfish SIGKILLed (every %d searches)" % result["kill_every"], inj["engine_kill"], sur["engine_kill"]),
        ("Stockfish SIGSTOPped, watchdog %.1f s (stopped %s s)" % (result["watchdog_s"], ", ".join(f"{x:.1f}" for x in stopped)),
         inj["engine_stop"], sur["engine_stop"]),
        ("trainer SIGKILLed between checkpoints, mid-checkpoint, mid-resume", inj["trainer_kill"], sur["trainer_kill"]),
    ]
    lines = ["| fault | injected | survived |", "|---|---:|---:|", *(f"| {a} | {b} | {c} |" for a, b, c in rows)]
    lines += [
        "", "| outcome | value |", "|---|---:|",
        f"| trajectories lost | {result['trajectories_lost']} |",
        f"| final parameters equal to the clean run's (bit for bit) | {result['final_parameters_equal_clean']} |",
        f"| log rows duplicated / missing | {result['log_rows_duplicated']} / {result['log_rows_missing']} |",
        f"| rollouts repeated after kills (logged, then dropped at resume) | {result['rollouts_repeated_after_kills']} |",
        f"| Stockfish processes left behind | {result['engines_left_behind']} |",
        f"| wall-clock: clean / with faults (overhead) | {result['wall_clean_s']} s / {result['wall_faulty_s']} s "
        f"(+{100 * result['wall_overhead']:.0f}%) |",
        *(f"| RSS while training, {label} ({m['training_s']} s), median of the first / second half (max): trainer; "
          f"engines | {m['trainer_mb_first_half']} / {m['trainer_mb_second_half']} MB ({m['trainer_mb_max']} MB); "
          f"{m['engines_mb_first_half']} / {m['engines_mb_second_half']} MB ({m['engines_mb_max']} MB) |"
          for label, m in (("clean run", result["memory_clean"]), ("longest faulty session", result["memory_faulty_longest"]))
          if m is not None),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    child = sub.add_parser("child", help="(internal) one training session with faults injected")
    child.add_argument("--plan", required=True, help="JSON: kill_every, stop_at, watchdog, die_writing, seed; null: none")
    child.add_argument("--log", required=True, type=Path)
    child.add_argument("train_argv", nargs=argparse.REMAINDER)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="laptop")
    parser.add_argument("--out", type=Path, default=None, help="JSON report (default results/faults_<preset>.json)")
    parser.add_argument("--work", type=Path, default=None, help="folder of the runs (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.command == "child":
        plan = json.loads(args.plan)
        train_argv = args.train_argv[1:] if args.train_argv[:1] == ["--"] else args.train_argv
        if plan is None:
            from grpo_agent.cli import main as cli_main

            return cli_main(["train", *train_argv])
        return child_main(plan, args.log, train_argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_suite(PRESETS[args.preset], args.work or Path(tmp))
    from grpo_agent.save_util import write_json

    out = args.out or RESULTS / f"faults_{args.preset}.json"
    write_json(out, result)
    print(markdown(result))
    print(f"\nreport: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
