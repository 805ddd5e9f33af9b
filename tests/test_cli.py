"""grpo-chess CLI: strict config, overrides, schedules, plot, and an end-to-end smoke train + resume."""

import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from grpo_agent.cli import ConfigError, main
from grpo_agent.cli.config import load_config, parse_schedule
from grpo_agent.cli.train import latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["smoke.yaml", "default.yaml", "games.yaml", "large.yaml", "pretrain.yaml"])
def test_shipped_configs_are_valid(name):
    config = load_config(ROOT / "configs" / name)
    assert set(config) == {"env", "algo", "train", "pretrain"}
    if config["algo"] and config["algo"].get("group_mode", "games") == "games":
        assert config["env"]["num_envs"] % config["algo"]["group_size"] == 0


def test_unknown_keys_are_errors_naming_them(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"algo": {"learning_rat": 1e-3}}))
    with pytest.raises(ConfigError, match=r"algo\.learning_rat"):
        load_config(path)
    with pytest.raises(ConfigError, match="'optim'"):
        load_config(None, ["optim.lr=1"])
    with pytest.raises(ConfigError, match=r"env\.num_env\b"):
        load_config(None, ["env.num_env=3"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["algo.ent_coef"])


def test_cli_reports_config_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--set", "train.total_timestep=5", "--set", f"train.runs_dir={tmp_path}"])
    assert exc.value.code == 2
    assert "train.total_timestep" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no run folder for a bad config
    # The pretrain stage's start positions need that stage, and a bad env value fails before it runs.
    smoke = str(ROOT / "configs" / "smoke.yaml")
    no_pretrain = tmp_path.parent / f"{tmp_path.name}-no-pretrain.yaml"
    sections = yaml.safe_load(Path(smoke).read_text())
    no_pretrain.write_text(yaml.safe_dump({k: v for k, v in sections.items() if k != "pretrain"}))
    for config, extra, named in ((str(no_pretrain), [], "needs a pretrain: section"),
                                 (smoke, ["--init", str(tmp_path / "m.zip")], "--init"),
                                 (smoke, ["--set", "env.max_plies=-3"], "max_plies")):
        with pytest.raises(SystemExit):
            main(["train", "--config", config, "--set", f"train.runs_dir={tmp_path}", *extra])
        assert named in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_overrides_are_parsed_as_yaml():
    config = load_config(ROOT / "configs" / "smoke.yaml", ["algo.learning_rate=1e-4", "algo.target_kl=null"])
    assert config["algo"]["learning_rate"] == 1e-4 and config["algo"]["target_kl"] is None
    assert config["train"]["torch_threads"] == 1  # defaults filled in


def test_linear_schedule():
    schedule = parse_schedule("linear:1e-3:1e-5")
    assert schedule(1.0) == pytest.approx(1e-3) and schedule(0.0) == pytest.approx(1e-5)
    assert parse_schedule(0.5) == 0.5
    with pytest.raises(ConfigError, match="linear:1e-3"):
        parse_schedule("linear:1e-3")


def _saved_at(path: Path, timesteps: int) -> None:
    """A stand-in model zip: what latest_checkpoint reads of a saved model (its data's num_timesteps)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data", json.dumps({"num_timesteps": timesteps}))


def test_latest_checkpoint(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    for steps in (96, 1024, 512):
        (tmp_path / "checkpoints" / f"grpo_{steps}_steps.zip").touch()
    assert latest_checkpoint(tmp_path).name == "grpo_1024_steps.zip"
    _saved_at(tmp_path / "final_model.zip", 1024)
    assert latest_checkpoint(tmp_path).name == "final_model.zip"  # a tie: the finished run's model
    (tmp_path / "checkpoints" / "grpo_2048_steps.zip").touch()  # resumed past its end, then interrupted
    assert latest_checkpoint(tmp_path).name == "grpo_2048_steps.zip"


def test_plot_writes_png(tmp_path):
    pd.DataFrame(
        {"time/total_timesteps": [10, 20, 30], "train/entropy": [3.0, 2.5, 2.4], "rollout/step_reward_mean": [0, 1, 2]}
    ).to_csv(tmp_path / "progress.csv", index=False)
    assert main(["plot", str(tmp_path)]) == 0
    assert (tmp_path / "learning_curves.png").stat().st_size > 1000


@pytest.mark.slow
def test_smoke_train_then_resume(tmp_path):
    config = str(ROOT / "configs" / "smoke.yaml")
    assert main(["train", "--config", config, "--set", f"train.runs_dir={tmp_path}", "--wandb", "disabled"]) == 0
    (run_dir,) = tmp_path.iterdir()
    assert (run_dir / "config.yaml").is_file() and (run_dir / "final_model.zip").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "grpo_32_steps.zip", "grpo_64_steps.zip", "grpo_96_steps.zip"
    ]
    assert len(pd.read_csv(run_dir / "progress.csv")) == 3
    # the smoke config pretrains first, then evaluates the initial, pretrained and final policy alike, and plots
    assert (run_dir / "pretrain" / "pretrained.zip").is_file() and (run_dir / "pretrained_model.zip").is_file()
    # env.start_positions: pretrain became the stage's own positions, named in config.yaml for a resume
    starts = run_dir / "pretrain" / "grpo_starts.epd"
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["env"]["start_positions"] == str(starts)
    assert len(starts.read_text().split("\n")) > 10
    for name in ("initial", "pretrained", "final"):
        report = json.loads((run_dir / "eval" / name / "eval.json").read_text())
        assert {"eval/acpl", "eval/score_vs_random", "eval/puzzle_accuracy"} <= set(report["metrics"])
    assert (run_dir / "learning_curves.png").is_file() and (run_dir / "collapse_dashboard.png").is_file()
    assert main(["train", "--resume", str(run_dir), "--set", "train.total_timesteps=160", "--wandb", "disabled"]) == 0
    from grpo_agent import GRPO

    assert GRPO.load(run_dir / "final_model.zip").num_timesteps == 160
    # one log continued from the final model at 96: its 3 rows, then the resumed session's
    steps = pd.read_csv(run_dir / "progress.csv")["time/total_timesteps"].tolist()
    assert steps[:3] == [32, 64, 96] and steps == sorted(set(steps)) and steps[-1] == 160
    assert main(["plot", str(run_dir)]) == 0
    assert (run_dir / "learning_curves.png").is_file()


def test_pretrain_command_then_train_from_it(tmp_path, capsys):
    config = str(ROOT / "configs" / "smoke.yaml")
    out = tmp_path / "pre"
    assert main(["pretrain", "--config", config, "--out", str(out), "--set", "train.evaluate=none"]) == 0
    model = out / "pretrained.zip"
    assert f"--init {model}" in capsys.readouterr().out
    overrides = ["--set", f"train.runs_dir={tmp_path / 'runs'}", "--set", "train.evaluate=none", "--wandb", "disabled",
                 "--set", "env.start_positions=builtin"]  # the config's own pretrain positions do not come with --init
    assert main(["train", "--config", config, "--init", str(model), *overrides]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert not (run_dir / "pretrain").exists()  # --init replaces the config's own pretrain stage
    from grpo_agent import GRPO

    import torch as th

    pretrained = GRPO.load(model).policy.state_dict()
    reference = GRPO.load(run_dir / "pretrained_model.zip").ref_policy.state_dict()
    for name, value in pretrained.items():
        th.testing.assert_close(reference[name], value, msg=name)
    with pytest.raises(SystemExit):
        main(["train", "--config", config, "--init", str(tmp_path / "missing.zip"), *overrides])
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_wandb_defaults_to_offline(tmp_path, monkeypatch):
    """wandb cannot reach a server here: the default mode must log locally without one."""
    wandb = pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "")  # no account: offline needs none
    config = str(ROOT / "configs" / "smoke.yaml")
    overrides = ["--set", f"train.runs_dir={tmp_path}", "--set", "train.evaluate=none"]
    assert main(["train", "--config", config, *overrides]) == 0
    (run_dir,) = tmp_path.iterdir()
    (offline_run,) = (run_dir / "wandb").glob("offline-run-*")
    assert list(offline_run.glob("*.wandb")), "the offline run holds no logged data"
    assert wandb.run is None  # the run was finished when training ended
