"""The learning benchmarks (benchmarks/compare_ppo.py, benchmarks/ablation.py): helpers, the fair-comparison
network, and the whole code path at the ``ci`` preset."""

from __future__ import annotations

import json
import math
import os

import chess
import pytest

from benchmarks import ablation, common, compare_ppo
from grpo_agent.cli import ConfigError, build_parser, main
from grpo_agent.cli.bench import BENCHMARKS, SOURCE_ROOT, benchmark_command


def test_mean_ci_uses_student_t():
    out = common.mean_ci([1.0, 2.0, 3.0])
    assert out["mean"] == pytest.approx(2.0)
    assert out["ci"] == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert out["n"] == 3
    single = common.mean_ci([5.0, float("nan")])
    assert single["mean"] == 5.0 and math.isnan(single["ci"])
    assert common.mean_ci([])["n"] == 0


def test_slope_and_tail_mean():
    assert ablation.slope_per_10k([0, 5000, 10000], [1.0, 0.75, 0.5]) == pytest.approx(-0.5)
    assert math.isnan(ablation.slope_per_10k([100], [1.0]))
    curve = [{"x": float(i)} for i in range(8)]
    assert ablation.tail_mean(curve, "x") == pytest.approx(6.5)  # the last 2 of 8
    assert math.isnan(ablation.tail_mean(curve, "missing"))


def test_bad_arguments_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="nope"):
        compare_ppo.run("nope", tmp_path)
    with pytest.raises(ValueError, match="nope"):
        ablation.run("nope", tmp_path)
    with pytest.raises(ValueError, match="'bad'"):
        ablation.run("ci", tmp_path, scales=["bad"])
    with pytest.raises(ValueError, match="learning rates"):
        ablation.run("ci", tmp_path, learning_rates=[0.0])
    with pytest.raises(ValueError, match="algo"):
        compare_ppo.algo_config(compare_ppo.PRESETS["ci"], "dqn")
    with pytest.raises(ValueError, match="workers"):
        common.run_jobs(len, [], 0)


def test_maskable_ppo_actor_is_the_grpo_network():
    """Same trunk and conv policy head; MaskablePPO only adds its value MLP."""
    from grpo_agent.policies import ChessResNet, ConvPolicyHead

    preset = compare_ppo.PRESETS["ci"]
    env = common.make_vector_env(preset["env"], preset["num_envs"])
    try:
        grpo = common.build_grpo(env, compare_ppo.algo_config(preset, "grpo"), preset["net"], 0, "cpu")
        ppo = common.build_maskable_ppo(env, compare_ppo.algo_config(preset, "maskable_ppo"), preset["net"], 0, "cpu")
    finally:
        env.close()
    assert isinstance(ppo.policy.features_extractor, ChessResNet)
    assert isinstance(ppo.policy.action_net, ConvPolicyHead)

    def count(module):
        return sum(p.numel() for p in module.parameters())

    actor = count(ppo.policy.features_extractor) + count(ppo.policy.action_net)
    assert actor == count(grpo.policy)
    critic = count(ppo.policy.mlp_extractor) + count(ppo.policy.value_net)
    assert count(ppo.policy) == actor + critic
    # The optimizer was rebuilt after the head swap: it updates the conv head.
    optimized = {id(p) for group in ppo.policy.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in optimized for p in ppo.policy.action_net.parameters())


def test_cli_runs_the_benchmarks_of_the_checkout_as_modules(tmp_path, capfd):
    command, env = benchmark_command("compare_ppo", ["--preset", "ci", "--seeds", "3"])
    assert command[1:] == ["-m", "benchmarks.compare_ppo", "--preset", "ci", "--seeds", "3"]
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(SOURCE_ROOT)
    assert all((SOURCE_ROOT / "benchmarks" / f"{module}.py").is_file() for module, _ in BENCHMARKS.values())
    # Every argument after the name is the benchmark's own, --help included; its exit status is the command's.
    assert build_parser().parse_args(["bench", "compare", "--help"]).benchmark_args == ["--help"]
    assert main(["sweep", "--preset", "nope"]) == 2
    err = capfd.readouterr().err
    assert "ablation.py" in err and "invalid choice: 'nope'" in err
    with pytest.raises(ConfigError, match="source repository"):  # a pip install has no benchmarks/
        benchmark_command("compare_ppo", [], root=tmp_path)


@pytest.mark.slow
def test_compare_ci_preset_end_to_end(tmp_path):
    summary = compare_ppo.run("ci", tmp_path, quiet=True)
    budget = compare_ppo.PRESETS["ci"]["budget_plies"]
    for algo in compare_ppo.ALGOS:
        for seed in compare_ppo.PRESETS["ci"]["seeds"]:
            record = json.loads((tmp_path / "compare_ci" / f"{algo}_seed{seed}.json").read_text())
            assert record["env_plies"] <= budget and record["env_plies"] >= 0.75 * budget
            assert record["learner_samples"] > 0 and record["learner_samples_per_s"] > 0
            assert record["wall_seconds"] > record["learner_seconds"] > 0
            final = record["final"]
            assert 0.0 <= final["score_vs_random_low"] <= final["score_vs_random"] <= final["score_vs_random_high"]
            assert sum(final["wdl_vs_sf0"]) == compare_ppo.PRESETS["ci"]["eval"]["games"]
            assert final["acpl"] >= 0
            assert [row["plies"] for row in record["curve"]] == sorted(row["plies"] for row in record["curve"])
            assert any("acpl" in row for row in record["curve"])
    grpo = summary["algos"]["grpo"]
    assert grpo["acpl"]["n"] == 2
    assert sum(grpo["pooled_vs_random"]["wdl"]) == 2 * compare_ppo.PRESETS["ci"]["eval"]["games"]
    assert summary["learner_samples_per_s_ratio_grpo_over_ppo"] > 0
    assert (tmp_path / "compare_ci_curves.png").stat().st_size > 0
    assert json.loads((tmp_path / "compare_ci.json").read_text())["preset"] == "ci"


@pytest.mark.slow
def test_ablation_ci_preset_end_to_end_and_resumes(tmp_path):
    grid = ablation.PRESETS["ci"]
    summary = ablation.run("ci", tmp_path, quiet=True)
    n_cells = len(grid["learning_rates"]) * len(grid["ent_coefs"]) * len(grid["scales"])
    assert len(summary["cells"]) == n_cells
    for cell in summary["cells"]:
        assert 0.0 < cell["final"]["entropy_norm"] <= 1.0 + 1e-6
        assert 0.0 < cell["final"]["agreement"] <= 1.0
        assert cell["acpl"] >= 0 and not math.isnan(cell["entropy_slope_per_10k"])
        assert cell["collapsed"] == (cell["final"]["entropy_norm"] < 0.5 or cell["final"]["agreement"] > 0.7)
    for name in ("ablation_ci.json", "ablation_ci_collapse.png", "ablation_ci_acpl.png"):
        assert (tmp_path / name).stat().st_size > 0
    # Resumable: finished cells are read back, not rerun; new thresholds apply without rerunning.
    cell_files = sorted((tmp_path / "ablation_ci").glob("*.json"))
    before = {p: p.stat().st_mtime_ns for p in cell_files}
    again = ablation.run("ci", tmp_path, quiet=True, entropy_threshold=2.0)
    assert {p: p.stat().st_mtime_ns for p in cell_files} == before
    assert len(again["collapsed"]) == n_cells


def test_ablation_puts_kinds_of_group_side_by_side(tmp_path):
    summary = ablation.run("ci", tmp_path, learning_rates=[3e-4], ent_coefs=[0.03],
                           groups=["games", "moves_g4_wor", "moves_all"], workers=1, quiet=True)
    cells = {cell["group"]: cell for cell in summary["cells"]}
    assert list(cells) == ["games", "moves_g4_wor", "moves_all"]
    assert cells["moves_g4_wor"]["config"]["sample_without_replacement"] is True
    assert cells["moves_all"]["config"]["group_size"] == "all"
    for cell in cells.values():
        assert cell["env_plies"] >= ablation.PRESETS["ci"]["budget_plies"]
        assert 0.0 < cell["final"]["entropy_norm"] <= 1.0 + 1e-6
    assert 0.0 < cells["moves_g4_wor"]["final"]["agreement"] <= 1.0
    assert math.isnan(cells["moves_all"]["final"]["agreement"])  # every legal move: nothing to agree on
    assert (tmp_path / "ablation_ci" / "lr0.0003_ent0.03_rms_moves_all.json").is_file()
    assert (tmp_path / "ablation_ci" / "lr0.0003_ent0.03_rms.json").is_file()  # trajectory groups keep their names
    with pytest.raises(ValueError, match="'moves_g3'"):
        ablation.run("ci", tmp_path, groups=["moves_g3"])


def test_train_throughput_times_learn_after_a_warm_up():
    from benchmarks import train_throughput

    row = train_throughput.measure("configs/smoke.yaml", 64)
    assert row["env_steps"] == 64  # 2 timed rollouts of 8 games x 4 plies, after the untimed one
    assert row["env_steps_per_s"] > 0 and 0 < row["learner_frac"] < 1


def test_draws_reads_the_material_left_when_a_game_ended():
    from benchmarks.draws import final_material

    # White: king, queen, two pawns; Black: a bare king. 1. Qh5 Ka7.
    start = "k7/8/8/8/8/8/PP6/K2Q4 w - - 0 1"
    assert final_material(start, ["d1h5", "a8a7"], chess.WHITE) == (11, "K")
    assert final_material(start, ["d1h5", "a8a7"], chess.BLACK) == (-11, "KPPQ")
    # Captures count: 1. Qd7 Kb8 2. Qxb7+ Kxb7 leaves two bare kings.
    start = "k7/1p6/8/8/8/8/8/K2Q4 w - - 0 1"
    assert final_material(start, ["d1d7", "a8b8", "d7b7", "b8b7"], chess.WHITE) == (0, "K")


def test_stalemate_traps_offer_a_stalemate_and_no_mate_and_are_counted():
    from benchmarks.draws import _ending, stalemate_traps, traps_fallen

    boards = stalemate_traps(20, seed=3)
    assert [b.fen() for b in boards] == [b.fen() for b in stalemate_traps(20, seed=3)]  # every model, the same
    for board in boards:
        assert board.turn == chess.WHITE and len(board.piece_map()) == 3
        ends = [_ending(board, move) for move in board.legal_moves]
        assert "stalemate" in ends and "checkmate" not in ends

    class Picks:  # a stand-in for a model: the first stalemating legal move, or the first legal move
        def __init__(self, stalemate: bool) -> None:
            self.stalemate = stalemate

        def predict(self, obs, action_masks, deterministic):
            from chess_env.encoding import encode_move

            moves = [next(m for m in b.legal_moves if (_ending(b, m) == "stalemate") == self.stalemate)
                     for b in boards]
            return [encode_move(b, m) for b, m in zip(boards, moves)], None

    assert traps_fallen(Picks(True), boards) == 20
    assert traps_fallen(Picks(False), boards) == 0


def test_puzzle_probabilities_counts_ranks_and_lost_puzzles(tmp_path):
    from benchmarks import puzzle_probabilities
    from chess_env.puzzles import PUZZLES_FILE
    from conftest import save_tiny_model

    def row(pid, theme, p, rank, top):
        return {"id": pid, "theme": theme, "p_solution": p, "rank": rank, "p_top": top, "top": "e4"}

    stats = {"pretrained": [row("a", "mateIn1", 0.3, 1, 0.3), row("b", "mateIn1", 0.1, 3, 0.5), row("c", "winMaterial", 0.2, 1, 0.2)],
             "final": [row("a", "mateIn1", 0.4, 2, 0.5), row("b", "mateIn1", 0.6, 1, 0.6), row("c", "winMaterial", 0.9, 1, 0.9)]}
    summary = puzzle_probabilities.summarize(stats)
    assert summary["mateIn1"]["n"] == 2 and summary["all"]["n"] == 3
    assert summary["mateIn1"]["pretrained"] == {"p_solution": pytest.approx(0.2), "p_top": pytest.approx(0.4), "rank1": 1, "top3": 2}
    assert summary["mateIn1"]["final"]["rank1"] == 1 and summary["all"]["final"]["top3"] == 3
    assert [lost["id"] for lost in summary["all"]["lost"]] == ["a"] and summary["winMaterial"]["lost"] == []

    run = tmp_path / "run"
    run.mkdir()
    save_tiny_model(run / "pretrained_model.zip")
    with pytest.raises(FileNotFoundError, match="final_model.zip"):
        puzzle_probabilities.main([str(run)])
    save_tiny_model(run / "final_model.zip", sharpen=50.0)
    csv_path = tmp_path / "puzzles.csv"
    csv_path.write_text("".join(PUZZLES_FILE.read_text().splitlines(keepends=True)[:7]))
    result = puzzle_probabilities.main([str(run), "--puzzles", str(csv_path), "--out", str(tmp_path / "out.json")])
    total = result["runs"][str(run)]["all"]
    assert total["n"] == 6 and json.loads((tmp_path / "out.json").read_text()) == result
    # The same untrained network, its head scaled by 50: the same ranking, a sharper distribution.
    assert total["pretrained"]["rank1"] == total["final"]["rank1"] and total["pretrained"]["top3"] == total["final"]["top3"]
    assert total["final"]["p_top"] > total["pretrained"]["p_top"] and total["lost"] == []


def test_move_groups_summary_ranges_and_plot(tmp_path):
    from benchmarks import move_groups

    records = [{"method": m, "seed": s, "acpl": a, "best_move_rate": b, "accuracy": 60.0, "puzzles": p,
                "plies": 1000, "score_vs_random": 0.7, "wdl_vs_random": [w, 40 - w, 0]}
               for m, s, a, b, p, w in (("moves_d1", 0, 160.0, 0.20, 0.19, 20), ("moves_d1", 1, 168.0, 0.19, 0.21, 18),
                                        ("games", 0, 190.0, 0.13, 0.12, 17), ("games", 1, 210.0, 0.14, 0.16, 19))]
    summary = move_groups.summarize(records)
    assert summary["moves_d1"]["acpl"]["range"] == [160.0, 168.0]
    assert summary["games"]["acpl"]["mean"] == pytest.approx(200.0)
    assert summary["moves_d1"]["vs_random"]["wdl"] == [38, 42, 0]
    path = tmp_path / "mg.png"
    move_groups.plot(records, 360.0, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_move_groups_reuses_a_finished_run_only_of_the_same_network(tmp_path, monkeypatch):
    from benchmarks import move_groups

    def no_training(*args, **kwargs):
        raise RuntimeError("trained")

    monkeypatch.setattr(move_groups, "train", no_training)
    monkeypatch.setattr(move_groups, "limit_threads", lambda n: None)
    record = {"method": "moves_d1", "seed": 0, "seconds": 360.0, "update_threads": True, "planes": True,
              "acpl": 160.0, "eval": json.loads(json.dumps(move_groups.EVAL))}
    (tmp_path / "moves_d1_seed0.json").write_text(json.dumps(record))
    assert move_groups.run_one("moves_d1", 0, 360.0, tmp_path, update_threads=True, planes=True) == record
    with pytest.raises(RuntimeError, match="trained"):
        move_groups.run_one("moves_d1", 0, 360.0, tmp_path, update_threads=True, planes=False)
