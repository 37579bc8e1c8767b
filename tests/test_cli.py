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
COMMANDS = ("train", "evaluate", "ablate", "plot", "bench", "results")


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


@pytest.mark.parametrize("cmd", COMMANDS)
def test_defaults_are_printed_once(cmd):
    # ArgumentDefaultsHelpFormatter appended "(default: 25)" to help that already said "(default 25)"
    sub = build_parser()._subparsers._group_actions[0].choices[cmd]
    formatter = sub._get_formatter()
    for action in sub._actions:
        if action.help and action.dest != "help":
            text = formatter._get_help_string(action) % {"default": action.default}
            assert text.lower().count("default") <= 1, (cmd, action.option_strings, text)


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train"], "--out"),
        (["ablate", "--quick"], "--out"),
        (["train", "--out", "x", "--settings", "missing.json"], "no such file"),
        (["bench", "nope"], "unknown benchmark"),
        (["results", "check", "--root", "no/such/dir"], "no such folder"),
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


def test_list_presets_needs_no_out(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for cmd in ("train", "ablate"):
        assert main([cmd, "--list-presets"]) == 0
        assert "cci_vae32" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_run_provenance_names_the_cli_command(run_dir):
    prov = json.loads((run_dir / "results.json").read_text())["provenance"]
    assert prov["command"].startswith("vase-rl train --out ") and "--no-progress" in prov["command"]
    assert prov["seeds"] == [0] and prov["commit"] is None or len(prov["commit"]) == 40


def test_settings_file_and_command_line_precedence(tmp_path, run_dir, capsys):
    settings = tmp_path / "settings.json"
    settings.write_text(
        json.dumps(
            {
                "sequence": ["moving_shapes", ["digits", 2]],
                "steps-per-domain": 4,
                "eval_every": 2,
                "eval_size": 16,
                "refit": False,
                "disentanglement": False,
                "seed": 3,
                "provenance": {"ignored": True},
            }
        )
    )
    out = tmp_path / "r"
    argv = ["train", "--out", str(out), "--no-progress", "--config", str(run_dir / "config.json")]
    assert main([*argv, "--settings", str(settings), "--steps-per-domain", "3"]) == 0
    exp = json.loads((out / "experiment.json").read_text())
    # from the file: sequence, seed, eval settings; from the command line: steps per domain
    assert exp["sequence"] == ["moving_shapes", ["digits", 2]] and exp["seed"] == 3
    assert exp["steps_per_domain"] == 3 and exp["eval_every"] == 2 and exp["refit"] is False
    # a run folder's own experiment.json is a settings file: the same run, returned as finished
    assert main([*argv, "--settings", str(out / "experiment.json")]) == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"eval-everyy": 2}))
    assert main([*argv, "--settings", str(bad)]) == 2
    assert "unknown option 'eval-everyy'" in capsys.readouterr().err
    bad.write_text(json.dumps({"eval_every": 0}))
    assert main([*argv, "--settings", str(bad)]) == 2
    assert "positive integer" in capsys.readouterr().err


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
                "--disentanglement-size",
                "200",
                "--dci-method",
                "random_forest",
                "--json",
                str(tmp_path / "c.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "moving_shapes: assigned domain" in out and "object-id accuracy" in out
    assert "MIG/DCI on 200 samples (below the standard 10,000)" in out
    c = json.loads((tmp_path / "c.json").read_text())
    assert set(c["per_domain"]) == {"moving_shapes"} and "position_mse" in c["per_domain"]["moving_shapes"]
    assert c["provenance"]["command"].startswith("vase-rl evaluate --checkpoint") and c["provenance"]["code_digest"]
    # MIG/DCI below the standard sample size say so
    d = c["per_domain"]["moving_shapes"]
    assert d["num_samples"] == 200 and d["standard_sample_size"] is False and "fewer than" in d["note"]
    # a run's JSON keeps the run's provenance and records who evaluated it
    e = json.loads((tmp_path / "e.json").read_text())
    assert e["provenance"]["command"].startswith("vase-rl train") and e["evaluated_by"]["command"].startswith(
        "vase-rl evaluate"
    )


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
    assert summary["provenance"]["command"].startswith("vase-rl ablate") and summary["provenance"]["seeds"] == [0]
    assert "Source: ablation.json, commit" in (out / "ablation.md").read_text()
    assert main(["plot", str(out)]) == 0
    assert (out / "figures" / "ablation.png").stat().st_size > 1000
    # --fresh (which the refusal message suggests) retrains; without it a finished run is reused
    marker = out / "runs" / "SDA" / "seed0" / "results.json"
    data = json.loads(marker.read_text())
    marker.write_text(json.dumps({**data, "marker": 1}))
    argv = ["ablate", "--out", str(out), "--variants", "SDA", "--seeds", "0", *TINY_SETS, *TINY_RUN]
    argv += ["--steps-per-domain", "4", "--no-progress"]
    assert main(argv) == 0 and "marker" in json.loads(marker.read_text())
    assert main([*argv, "--fresh"]) == 0 and "marker" not in json.loads(marker.read_text())


@pytest.mark.slow
def test_ablate_quick_reports_every_column(tmp_path, capsys):
    from vase_rl.evaluation.ablation import goals_line

    out = tmp_path / "quick"
    assert main(["ablate", "--quick", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    summary = json.loads((out / "ablation.json").read_text())
    assert len(summary["variants"]) == 10
    # it says what it cannot show, and never declares success on a degenerate VASE run
    assert "CANNOT show forgetting differences" in text
    goals = summary["goals"]
    assert goals_line(goals) in text
    vase = next(v for v in summary["variants"] if v["variant"] == "SDA")
    if vase["degenerate_runs"]:
        assert goals["assessable"] is False and "NOT ASSESSABLE" in text
        assert goals["vase_at_most_half_of_cci_vae"] is None
    prov = summary["provenance"]
    for key in ("commit", "dirty", "versions", "cpu", "threads", "command", "seeds", "wall_seconds", "code_digest"):
        assert key in prov, key
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


def test_bench_lists_every_benchmark_and_each_exists(capsys):
    from pathlib import Path

    import vase_rl.cli as cli

    assert main(["bench"]) == 0
    text = capsys.readouterr().out
    root = Path(cli.__file__).resolve().parents[1]
    for name, (rel, _) in cli.BENCHMARKS.items():
        assert name in text and (root / rel).is_file(), rel
    # every script in benchmarks/ is reachable by a name
    scripts = {f"benchmarks/{f.name}" for f in (root / "benchmarks").glob("bench_*.py")}
    assert scripts <= {rel for rel, _ in cli.BENCHMARKS.values()}


def test_bench_missing_script_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import vase_rl.cli as cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "pkg" / "vase_rl" / "cli.py"))
    assert main(["bench", "rl"]) == 2
    assert "benchmarks/bench_rl.py was not found" in capsys.readouterr().err


def test_bench_runs_a_named_benchmark(tmp_path, monkeypatch):
    import vase_rl.cli as cli

    (tmp_path / "pkg" / "benchmarks").mkdir(parents=True)
    (tmp_path / "pkg" / "benchmarks" / "bench_envs.py").write_text(
        "import sys, json, pathlib\npathlib.Path(sys.argv[-1]).write_text(json.dumps(sys.argv[1:]))\n"
    )
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "pkg" / "vase_rl" / "cli.py"))
    target = tmp_path / "args.json"
    assert main(["bench", "envs", "--", "--quick", str(target)]) == 0
    assert json.loads(target.read_text()) == ["--quick", str(target)]


def test_bench_runs_the_script_with_arguments(tmp_path):
    script = tmp_path / "bench_update.py"
    script.write_text("import sys, json, pathlib\npathlib.Path(sys.argv[-1]).write_text(json.dumps(sys.argv[1:]))\n")
    target = tmp_path / "args.json"
    assert main(["bench", "--script", str(script), "--", "--quick", str(target)]) == 0
    assert json.loads(target.read_text()) == ["--quick", str(target)]


def test_console_entry_point_is_installed():
    r = subprocess.run([sys.executable, "-m", "vase_rl.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "vase-rl" in r.stdout
