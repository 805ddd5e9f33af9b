"""benchmarks/finetune.py: GRPO from a tune-split warm start (the warm start is also the KL reference)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch as th

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import finetune  # noqa: E402
from chess_env.engine import EngineNotFoundError, find_stockfish  # noqa: E402
from chess_env.positions import load_positions  # noqa: E402
from grpo_agent.cli.config import load_config  # noqa: E402
from grpo_agent.pretrain import MODEL_FILE, PretrainConfig, pretrain  # noqa: E402

try:
    find_stockfish()
    HAVE_STOCKFISH = True
except EngineNotFoundError:
    HAVE_STOCKFISH = False

TINY = {"features_extractor_kwargs": {"n_blocks": 1, "channels": 8}}


@pytest.mark.skipif(not HAVE_STOCKFISH, reason="Stockfish is not installed")
def test_finetune_starts_from_the_warm_start_and_trains_away_from_it(tmp_path):
    starts = list(load_positions("builtin"))[:3]
    (tmp_path / "walk_starts.epd").write_text("\n".join(starts) + "\n")
    pretrain(PretrainConfig(positions=str(tmp_path / "walk_starts.epd"), n_positions=16, walk_plies=2, depth=1,
                            epochs=1, batch_size=8, heldout_frac=0.25, engine_processes=1, device="cpu"),
             tmp_path, policy_kwargs=TINY)
    config = load_config(None, ["env.num_envs=4", "env.reward_depth=1", "env.max_plies=2", "algo.group_mode=moves",
                                "algo.group_size=all", "algo.horizon=2", "algo.batch_size=8", "algo.device=cpu",
                                f"algo.policy_kwargs={TINY}"])

    model, info = finetune.finetune(tmp_path, config, seconds=0)
    assert info["positions"] == 0 and info["rollouts"] == 0
    reference = model.ref_policy.state_dict()
    assert all(th.equal(v, reference[k]) for k, v in model.policy.state_dict().items())

    model, info = finetune.finetune(tmp_path, config, seconds=1e-6)
    # the first rollout (4 games x 2 steps) is played and trained whole; the next one stops at its first step
    assert info["rollouts"] == 1 and info["positions"] == 8 + 4
    assert not all(th.equal(v, model.ref_policy.state_dict()[k]) for k, v in model.policy.state_dict().items())
    assert (tmp_path / MODEL_FILE).is_file()


def test_a_base_folder_without_walk_starts_is_named(tmp_path):
    with pytest.raises(SystemExit, match=str(tmp_path)):
        finetune.main([str(tmp_path), "x"])
