"""The `vase-rl` command: help, argument errors, and each subcommand in a tiny configuration."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from vase_rl.cli import build_parser, main

TINY_SETS = [
    "--set",
    "latent_dim=4",
    "--set",
    "width=0.25",
    "--set",
    "batch_size=8",
    "--set",
    "domain_warmup=5",
    "--set",
    "patience=1",
    "--set",
    "snapshot_every=5",
    "--set",
    "used_refresh_every=5",
    "--set",
    "used_estimation_steps=5",
    "--set",
    "capacity_increment=0.02",
    "--set",
    "capacity_max=5.0",
    "--image-size",
    "16",
]
TINY_RUN = [
    "--sequence",
    "moving_shapes,digits",
    "--steps-per-domain",
    "6",
    "--eval-every",
    "3",
    "--eval-size",
    "16",
    "--refit-steps",
    "3",
    "--no-disentanglement",
]
COMMANDS = ("train", "evaluate", "ablate", "plot", "bench")


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--out", str(out), "--no-progress", *TINY_SETS, *TINY_RUN]) == 0
    return out


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for cmd in COMMANDS:
        assert cmd in text


@pytest.mark.parametrize("cmd", COMMANDS)
def test_subcommand_help_is_complete(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    sub = build_parser()._subparsers._group_actions[0].choices[cmd]
    for action in sub._actions:
        for opt in action.option_strings:
            assert opt in text
        if action.option_strings and action.dest != "help":
            assert action.help, f"{cmd} {action.option_strings} has no help text"


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train"], "--out"),
        (["train", "--out", "x", "--steps-per-domain", "0"], "positive integer"),
        (["train", "--out", "x", "--preset", "nope"], "unknown preset"),
        (["train", "--out", "x", "--set", "widht=0.5"], "did you mean 'width'"),
        (["train", "--out", "x", "--set", "novalue"], "FIELD=VALUE"),
        (["train", "--out", "x", "--sequence", "moving_shapes,blobs"], "unknown domain"),
        (["train", "--out", "x", "--sequence", "digits:zero"], "--sequence"),
        (["train", "--out", "x", "--preset", "cpu32", "--config", "c.json"], "not both"),
        (["train", "--out", "x", "--config", "missing.json"], "no such file"),
        (["ablate", "--out", "x", "--seeds", "a,b"], "integers"),
        (["ablate", "--out", "x", "--variants", "SDA,XYZ", "--quick"], "unknown variant"),
        (["evaluate"], "RUN"),
        (["evaluate", "no/such/run"], "no run folder"),
        (["plot", "no/such/dir"], "no such folder"),
        (["bench", "--script", "no/such/bench.py"], "no such file"),
    ],
)
def test_bad_arguments_give_clear_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        code = main(argv)
        raise SystemExit(code)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_train_writes_run_and_summary(run_dir, capsys):
    for name in (
        "experiment.json",
        "config.json",
        "history.json",
        "probes.json",
        "domain_log.json",
        "results.json",
        "vase.pt",
        "checkpoint.pt",
    ):
        assert (run_dir / name).is_file(), name
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["latent_dim"] == 4 and cfg["image_shape"] == [1, 16, 16] and cfg["preset_name"] == "cpu32"
    # the same command again returns the finished run without training
    assert main(["train", "--out", str(run_dir), "--no-progress", *TINY_SETS, *TINY_RUN]) == 0
    out = capsys.readouterr().out
    assert "object id:" in out and "domains:" in out


def test_train_from_config_file(tmp_path, run_dir):
    out = tmp_path / "again"
    assert (
        main(
            [
                "train",
                "--out",
                str(out),
                "--no-progress",
                "--config",
                str(run_dir / "config.json"),
                *TINY_RUN,
                "--steps-per-domain",
                "3",
                "--no-refit",
            ]
        )
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    assert res["num_steps"] == 6 and "refit_forgetting" not in res["object_id"]


def test_list_presets(capsys):
    assert main(["train", "--out", "unused", "--list-presets"]) == 0
    assert "cci_vae32" in capsys.readouterr().out


def test_evaluate_run_and_checkpoint(run_dir, tmp_path, capsys):
    assert main(["evaluate", str(run_dir), "--json", str(tmp_path / "e.json")]) == 0
    assert "object id:" in capsys.readouterr().out
    assert json.loads((tmp_path / "e.json").read_text())["num_steps"] == 12
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(run_dir / "vase.pt"),
                "--sequence",
                "moving_shapes",
                "--eval-size",
                "32",
                "--probes",
                "--refit-steps",
                "3",
                "--json",
                str(tmp_path / "c.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "moving_shapes: assigned domain" in out and "object-id accuracy" in out
    c = json.loads((tmp_path / "c.json").read_text())
    assert set(c["per_domain"]) == {"moving_shapes"} and "position_mse" in c["per_domain"]["moving_shapes"]


def test_evaluate_unfinished_run_says_how_to_finish(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    assert main(["evaluate", str(tmp_path / "r")]) == 2
    assert "results.json is missing" in capsys.readouterr().err


def test_ablate_tiny(tmp_path, capsys):
    out = tmp_path / "abl"
    assert (
        main(
            [
                "ablate",
                "--out",
                str(out),
                "--variants",
                "SDA,-",
                "--seeds",
                "0",
                *TINY_SETS,
                *TINY_RUN,
                "--steps-per-domain",
                "4",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "| VASE (SDA) |" in text and "| CCI-VAE (-) |" in text
    summary = json.loads((out / "ablation.json").read_text())
    assert [v["variant"] for v in summary["variants"]] == ["SDA", "-"]
    assert (out / "ablation.md").read_text().startswith("| model |")
    assert main(["plot", str(out)]) == 0
    assert (out / "figures" / "ablation.png").stat().st_size > 1000


@pytest.mark.slow
def test_ablate_quick_reports_every_column(tmp_path, capsys):
    out = tmp_path / "quick"
    assert main(["ablate", "--quick", "--out", str(out)]) == 0
    summary = json.loads((out / "ablation.json").read_text())
    assert len(summary["variants"]) == 10
    for v in summary["variants"]:
        for metric in (
            "object_id_best",
            "object_id_change",
            "position_best",
            "position_change",
            "refit_change",
            "boundary_f1",
            "latents_in_use",
        ):
            assert v["metrics"][metric]["mean"] is not None, (v["variant"], metric)


def test_plot_run(run_dir, tmp_path, capsys):
    assert (
        main(
            ["plot", str(run_dir), "--out", str(tmp_path / "figs"), "--figures", "probes,atypicality", "--prefix", "x_"]
        )
        == 0
    )
    assert (tmp_path / "figs" / "x_probes.png").stat().st_size > 1000
    assert (tmp_path / "figs" / "x_atypicality.png").stat().st_size > 1000
    assert not (tmp_path / "figs" / "x_traversals.png").exists()
    assert main(["plot", str(run_dir), "--figures", "probes,wrong"]) == 2
    assert "unknown figure" in capsys.readouterr().err


def test_bench_missing_script_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import vase_rl.cli as cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "pkg" / "vase_rl" / "cli.py"))
    assert main(["bench"]) == 2
    assert "bench_update.py was not found" in capsys.readouterr().err


def test_bench_runs_the_script_with_arguments(tmp_path):
    script = tmp_path / "bench_update.py"
    script.write_text("import sys, json, pathlib\npathlib.Path(sys.argv[-1]).write_text(json.dumps(sys.argv[1:]))\n")
    target = tmp_path / "args.json"
    assert main(["bench", "--script", str(script), "--", "--quick", str(target)]) == 0
    assert json.loads(target.read_text()) == ["--quick", str(target)]


def test_console_entry_point_is_installed():
    r = subprocess.run([sys.executable, "-m", "vase_rl.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "vase-rl" in r.stdout
