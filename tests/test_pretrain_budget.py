"""benchmarks/pretrain_budget.py: argument parsing, and a dataset cut from a larger one is the one labelling makes."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import pretrain_budget  # noqa: E402
from chess_env.engine import EngineNotFoundError, StockfishPool, find_stockfish  # noqa: E402
from grpo_agent.pretrain import LabelledPositions, PretrainConfig, build_dataset  # noqa: E402
from grpo_agent.pretrain_data import stored_key  # noqa: E402

try:
    find_stockfish()
    HAVE_STOCKFISH = True
except EngineNotFoundError:
    HAVE_STOCKFISH = False


def test_arguments_are_parsed_and_bad_ones_named():
    assert pretrain_budget.parse_net("4x32") == {"features_extractor_kwargs": {"n_blocks": 4, "channels": 32}}
    assert pretrain_budget.parse_sets(["depth=2", "lr=1e-3", "targets=best"]) == {"depth": 2, "lr": 1e-3, "targets": "best"}
    assert pretrain_budget.parse_net("4x64+attacks") == {
        "features_extractor_kwargs": {"n_blocks": 4, "channels": 64, "attack_planes": True}}
    assert pretrain_budget.parse_net("4x64+attacks+checks") == {
        "features_extractor_kwargs": {"n_blocks": 4, "channels": 64, "attack_planes": True, "check_planes": True}}
    for bad in ("wide", "4x64+wide", "4x64+attacks+pins"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            pretrain_budget.parse_net(bad)
    with pytest.raises(ValueError, match="'depth'"):
        pretrain_budget.parse_sets(["depth"])


@pytest.mark.skipif(not HAVE_STOCKFISH, reason="Stockfish is not installed")
def test_a_prefix_of_a_larger_dataset_is_reused_as_the_smaller_one(tmp_path):
    config = PretrainConfig(n_positions=130, walk_plies=3, depth=1, engine_processes=1)
    with StockfishPool(processes=1) as pool:
        source = build_dataset(dataclasses.replace(config, n_positions=170), pool, tmp_path / "source")
        direct = build_dataset(config, pool, tmp_path / "direct")
        pretrain_budget.seed_prefix(source, config, tmp_path / "cut")
        calls = pool.engine_calls
        cut = build_dataset(config, pool, tmp_path / "cut")
        assert pool.engine_calls == calls and stored_key(cut) == stored_key(direct)
    for field in dataclasses.fields(LabelledPositions):
        np.testing.assert_array_equal(getattr(LabelledPositions.load(cut), field.name),
                                      getattr(LabelledPositions.load(direct), field.name))
    with pytest.raises(ValueError, match=r"\['depth'\]"):
        pretrain_budget.seed_prefix(source, dataclasses.replace(config, depth=2), tmp_path / "other")
