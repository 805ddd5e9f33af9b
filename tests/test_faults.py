"""The fault suite (``benchmarks/faults.py``) at its CI size: a real training run, engines killed and hung,
the trainer killed between and during checkpoint writes and during resume, against a clean run."""

import pytest
from conftest import needs_stockfish

from benchmarks.faults import PRESETS, SESSION_ENDS, markdown, run_suite


@pytest.mark.slow
@needs_stockfish
def test_training_survives_every_fault_and_loses_nothing(tmp_path):
    result = run_suite(PRESETS["ci"], tmp_path)
    injected, survived = result["faults_injected"], result["faults_survived"]
    assert injected["engine_kill"] >= 5 and injected["engine_stop"] >= 3
    assert injected["trainer_kill"] == sum(end is not None for end in SESSION_ENDS)
    assert survived == injected
    assert all(stopped > PRESETS["ci"]["watchdog"] for stopped in result["engine_stopped_s"])
    assert result["trajectories_lost"] == 0 and result["final_parameters_equal_clean"]
    assert result["log_rows_duplicated"] == result["log_rows_missing"] == 0
    assert result["rollouts_repeated_after_kills"] > 0  # the kills did cost work: the log was cut back
    assert result["engines_left_behind"] == 0
    memory = result["memory_faulty_longest"]
    assert memory["engine_processes_max"] <= PRESETS["ci"]["config"]["env"]["engine_processes"]
    assert memory["trainer_mb_second_half"] < 1.2 * memory["trainer_mb_first_half"]  # restarts leak nothing
    assert "| trajectories lost | 0 |" in markdown(result)
