"""benchmarks/finetune.py: GRPO from a tune-split warm start (the warm start is also the KL reference)."""

from __future__ import annotations

import pytest
import torch as th
from conftest import needs_stockfish
from stable_baselines3.common.save_util import load_from_zip_file

from benchmarks import finetune
from chess_env.positions import load_positions
from grpo_agent.cli.config import load_config
from grpo_agent.pretrain import MODEL_FILE, PretrainConfig, pretrain

TINY = {"features_extractor_kwargs": {"n_blocks": 1, "channels": 8}}


@needs_stockfish
def test_finetune_starts_from_the_warm_start_and_trains_away_from_it(tmp_path):
    starts = list(load_positions("builtin"))[:3]
    (tmp_path / "walk_starts.epd").write_text("\n".join(starts) + "\n")
    pretrain(PretrainConfig(positions=str(tmp_path / "walk_starts.epd"), n_positions=16, walk_plies=2, depth=1,
                            epochs=1, batch_size=8, heldout_frac=0.25, engine_processes=1, device="cpu"),
             tmp_path, policy_kwargs=TINY)
    config = load_config(None, ["env.num_envs=4", "env.reward_depth=1", "env.max_plies=2", "algo.group_mode=moves",
                                "algo.group_size=all", "algo.horizon=2", "algo.batch_size=8", "algo.device=cpu",
                                f"algo.policy_kwargs={TINY}"])

    pretrained = load_from_zip_file(tmp_path / MODEL_FILE, device="cpu")[1]["policy"]

    model, info = finetune.finetune(tmp_path, config, seconds=0)
    assert info["positions"] == 0 and info["rollouts"] == 0
    for network in (model.policy, model.ref_policy):
        assert all(th.equal(v, pretrained[k]) for k, v in network.state_dict().items())

    model, info = finetune.finetune(tmp_path, config, seconds=1e-6)
    # the first rollout (4 games x 2 steps) is played and trained whole; the next one stops at its first step
    assert info["rollouts"] == 1 and info["positions"] == 8 and model.num_timesteps == 8 + 4
    assert not all(th.equal(v, pretrained[k]) for k, v in model.policy.state_dict().items())
    assert all(th.equal(v, pretrained[k]) for k, v in model.ref_policy.state_dict().items())

    (tmp_path / "other.epd").write_text(starts[0] + "\n")
    model, _ = finetune.finetune(tmp_path, config, seconds=0, starts=tmp_path / "other.epd")
    assert len(model.env.vector_env.envs[0].start_positions) == 1


def test_bad_arguments_are_named(tmp_path, capsys):
    for argv, message in (([str(tmp_path), "x"], "no walk_starts.epd"), ([str(tmp_path)], "NAME is required"),
                          ([str(tmp_path), "base"], "--seconds 0")):
        with pytest.raises(SystemExit):
            finetune.main(argv)
        assert message in capsys.readouterr().err


def test_results_judged_on_different_positions_are_not_paired():
    base = {"name": "base", "eval": {"cp_losses": [10, 20], "best_moves": [True, False]}}
    run = {"name": "run", "eval": {"cp_losses": [0, 40], "best_moves": [True, True]}}
    paired = finetune.paired_to_base(run, base)
    assert paired["acpl"]["mean"] == 5.0 and paired["best_move_rate"]["mean"] == 0.5
    with pytest.raises(ValueError, match="cannot be paired"):
        finetune.paired_to_base({"name": "run", "eval": {"cp_losses": [0], "best_moves": [True]}}, base)
