"""Provenance blocks (vase_rl.provenance) and the staleness / source check (`vase-rl results check`).

The check is exercised on a throw-away git repository built in each test: a result is made, then
the code it measured changes, and the result must be flagged; docs figures and tables without a
source must be flagged too.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from vase_rl import provenance
from vase_rl.cli import main
from vase_rl.evaluation.results_check import check, check_docs, check_result
from vase_rl.provenance import (
    code_paths,
    code_state,
    collect,
    content_hash,
    git_state,
    path_selected,
    short_commit,
    write_json,
)

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.org",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org",
}

LEARNER_V1 = "def update(x):\n    return x + 1\n"
LEARNER_V1_REFORMATTED = "# the update rule\ndef update( x ):\n    return (x + 1)\n"
LEARNER_V2 = "def update(x):\n    return x + 2\n"


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def commit(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    (r / "vase_rl").mkdir(parents=True)
    (r / "envs").mkdir()
    (r / "benchmarks" / "results").mkdir(parents=True)
    (r / "docs" / "figures").mkdir(parents=True)
    (r / "vase_rl" / "learner.py").write_text(LEARNER_V1)
    (r / "vase_rl" / "cli.py").write_text("print('cli')\n")
    (r / "envs" / "streams.py").write_text("STREAM = 1\n")
    git(r, "init", "-q")
    commit(r, "code")
    return r


def result_with_provenance(repo: Path, name: str, groups=("core",), digest: bool = True) -> Path:
    """A result as the writers make it, with a provenance block for ``repo``'s code now."""
    block = {**git_state(str(repo)), "command": "python make_it.py"}
    if digest:
        block.update(code_state(groups, root=repo))
    else:
        block["code_paths"] = code_paths(*groups)
    path = repo / "benchmarks" / "results" / name
    path.write_text(json.dumps({"value": 1.0, "provenance": block}))
    return path


# ------------------------------------------------------------------------------ the block


def test_collect_has_every_field():
    with provenance.Timer() as t:
        pass
    block = collect(command="python x.py --quick", seeds=[0, 1], started=t.started, code_paths=["envs"], jobs=2)
    for key in ("commit", "dirty", "commit_time", "versions", "cpu", "threads", "platform", "command", "argv"):
        assert key in block, key
    assert block["seeds"] == [0, 1] and block["wall_seconds"] >= 0 and block["jobs"] == 2
    assert {"torch", "numpy", "gymnasium", "stable-baselines3", "scikit-learn"} <= set(block["versions"])
    assert {"model", "logical_cpus", "flags", "torch_capability", "native_bf16"} <= set(block["cpu"])
    assert block["code_paths"] == ["envs/"] and all(f.startswith("envs/") for f in block["code_files"])
    assert len(block["code_digest"]) == 64


def test_write_json_adds_provenance_once(tmp_path):
    path = write_json(tmp_path / "a" / "r.json", {"x": 1}, command="python r.py", seeds=[3], code_paths=["envs"])
    data = json.loads(path.read_text())
    assert data["x"] == 1 and data["provenance"]["command"] == "python r.py" and data["provenance"]["seeds"] == [3]
    kept = write_json(tmp_path / "b.json", {"x": 2, "provenance": {"commit": "abc"}})
    assert json.loads(kept.read_text())["provenance"] == {"commit": "abc"}  # an existing block is kept


def test_code_paths_groups_and_errors():
    assert code_paths("envs", "benchmarks/bench_x.py", "envs") == ["envs/", "benchmarks/bench_x.py"]
    core = code_paths("core")
    assert "vase_rl/" in core and "!vase_rl/cli.py" in core and "!vase_rl/evaluation/" in core
    with pytest.raises(ValueError, match="unknown code group"):
        code_paths("coer")


def test_content_hash_ignores_formatting_but_not_behaviour():
    a = content_hash(LEARNER_V1.encode(), "learner.py")
    assert a == content_hash(LEARNER_V1_REFORMATTED.encode(), "learner.py")
    assert a != content_hash(LEARNER_V2.encode(), "learner.py")
    # other files are compared byte for byte
    assert content_hash(b"a: 1\n", "c.json") != content_hash(b"a:  1\n", "c.json")


def test_code_state_follows_exclusions(repo):
    state = code_state(["core"], root=repo)
    assert set(state["code_files"]) == {"vase_rl/learner.py"}  # cli.py is excluded from "core"
    (repo / "vase_rl" / "domains.py").write_text("X = 1\n")  # a new core module, not yet committed
    assert set(code_state(["core"], root=repo)["code_files"]) == {"vase_rl/learner.py", "vase_rl/domains.py"}


def test_a_later_group_includes_again_what_an_earlier_one_excluded(repo):
    """ "core" leaves the wrappers out and "wrappers" names them: together they select them (a
    git exclude pathspec would drop them whatever came after)."""
    (repo / "vase_rl" / "wrappers.py").write_text("W = 1\n")
    assert path_selected("vase_rl/wrappers.py", code_paths("core", "wrappers"))
    assert not path_selected("vase_rl/wrappers.py", code_paths("core"))
    assert not path_selected("vase_rl/wrappers.py", code_paths("wrappers", "core"))  # the last rule decides
    assert path_selected("vase_rl/learner.py", ["vase_rl/", "!vase_rl/cli.py"])
    assert not path_selected("vase_rl/cli.py", ["vase_rl/", "!vase_rl/cli.py"])
    assert not path_selected("vase_rl_other/x.py", ["vase_rl"])  # a prefix of a name is not a folder
    files = set(code_state(["core", "wrappers"], root=repo)["code_files"])
    assert files == {"vase_rl/learner.py", "vase_rl/wrappers.py"}


def test_files_an_old_provenance_left_out_are_judged_by_git(repo):
    """A result whose provenance (made by the old exclusion rule) did not record a file its code
    paths select is stale for that file only if git shows a change to it since its commit."""
    (repo / "vase_rl" / "wrappers.py").write_text("W = 1\n")
    commit(repo, "wrappers")
    path = result_with_provenance(repo, "old_rule.json", groups=("core", "wrappers"))
    data = json.loads(path.read_text())
    data["provenance"]["code_files"].pop("vase_rl/wrappers.py")  # what the old rule recorded
    path.write_text(json.dumps(data))
    commit(repo, "result")
    assert check_result(path, repo) == []
    (repo / "vase_rl" / "wrappers.py").write_text("W = 2\n")
    stale = check_result(path, repo)  # uncommitted change
    assert [f.kind for f in stale] == ["stale"] and stale[0].extra["changed_files"] == ["vase_rl/wrappers.py"]
    commit(repo, "change the wrappers")
    stale = check_result(path, repo)
    assert [f.kind for f in stale] == ["stale"] and stale[0].extra["changed_files"] == ["vase_rl/wrappers.py"]


def test_short_commit():
    assert short_commit({"commit": "0123456789abcdef", "dirty": False}) == "commit 0123456"
    assert short_commit({"commit": "0123456789abcdef", "dirty": True}).endswith("(uncommitted changes)")
    assert "unknown" in short_commit({"commit": None})


# ------------------------------------------------------------------------------ staleness


def test_a_result_made_before_a_code_change_is_stale(repo):
    made = result_with_provenance(repo, "digest.json")
    commit_only = result_with_provenance(repo, "commit_only.json", digest=False)
    envs_only = result_with_provenance(repo, "envs_only.json", groups=("envs",))
    commit(repo, "results")
    for path in (made, commit_only, envs_only):
        assert check_result(path, repo) == [], path.name

    # reformatting and comments are not changes
    (repo / "vase_rl" / "learner.py").write_text(LEARNER_V1_REFORMATTED)
    commit(repo, "format the learner")
    assert check_result(made, repo) == [] and check_result(commit_only, repo) == []

    # neither is a change to a file outside the result's code
    (repo / "vase_rl" / "cli.py").write_text("print('new cli')\n")
    commit(repo, "cli")
    assert check_result(made, repo) == [] and check_result(commit_only, repo) == []

    (repo / "vase_rl" / "learner.py").write_text(LEARNER_V2)
    # uncommitted: the digest sees it at once, the commit-based check once committed
    stale = check_result(made, repo)
    assert [f.kind for f in stale] == ["stale"] and stale[0].extra["changed_files"] == ["vase_rl/learner.py"]
    assert stale[0].command == "python make_it.py"
    commit(repo, "change the update rule")
    stale = check_result(commit_only, repo)
    assert [f.kind for f in stale] == ["stale"] and "change the update rule" in stale[0].detail
    assert "format the learner" not in stale[0].detail and "cli" not in stale[0].detail
    assert check_result(envs_only, repo) == []  # its code did not change


def test_results_without_provenance_or_with_an_unknown_commit(repo):
    legacy = repo / "benchmarks" / "results" / "legacy.json"
    legacy.write_text(json.dumps({"value": 1}))
    commit(repo, "legacy result")
    kinds = [f.kind for f in check_result(legacy, repo)]
    assert "no_provenance" in kinds and "unregistered" in kinds and "stale" not in kinds
    (repo / "vase_rl" / "learner.py").write_text(LEARNER_V2)
    commit(repo, "change")
    assert "stale" in [f.kind for f in check_result(legacy, repo)]

    foreign = repo / "benchmarks" / "results" / "foreign.json"
    foreign.write_text(json.dumps({"provenance": {"commit": "f" * 40, "dirty": False}}))
    assert [f.kind for f in check_result(foreign, repo)] == ["unknown_commit"]
    dirty = result_with_provenance(repo, "dirty.json")
    data = json.loads(dirty.read_text())
    data["provenance"]["dirty"] = True
    dirty.write_text(json.dumps(data))
    assert [f.kind for f in check_result(dirty, repo)] == ["uncommitted_code"]


def test_a_copied_result_is_reported(repo):
    first = repo / "benchmarks" / "results" / "a.json"
    first.write_text(json.dumps({"provenance": {"commit": None}, "value": 1}))
    commit(repo, "a")
    first.write_text(json.dumps({"provenance": {"commit": None}, "value": 2}))  # a new measurement
    (repo / "benchmarks" / "results" / "b.json").write_text(json.dumps({"provenance": {"commit": None}, "value": 1}))
    commit(repo, "b copies the old a")
    dup = [f for f in check(repo, docs=False) if f.kind == "duplicate"]
    assert [(f.path, "a.json" in f.detail) for f in dup] == [("benchmarks/results/b.json", True)]


# ------------------------------------------------------------------------------ docs


def test_docs_figures_and_tables_need_a_source(repo):
    (repo / "docs" / "figures" / "f.png").write_bytes(b"png")
    made = result_with_provenance(repo, "table.json")
    (repo / "docs" / "PAGE.md").write_text(
        "# Page\n\n## Sourced\n\nFrom `benchmarks/results/table.json`:\n\n| model | score |\n|---|---:|\n| a | 0.5 |\n\n"
        "## Figure with its command\n\n`vase-rl plot runs/x`\n\n![f](figures/f.png)\n\n"
        "## Nothing\n\n| model | score |\n|---|---:|\n| a | 36.0 ± 6.2 |\n\n![f](figures/f.png)\n\n"
        "## A command is not enough for a table\n\n`python bench.py`\n\n| arm | return |\n|---|---:|\n| x | 1.13 |\n\n"
        "## Words only\n\n| prefix | effect |\n|---|---|\n| `moving_` | x = 0.5, 255 − image |\n\n"
        "## Declared\n\n<!-- source: kept in notebook 7 -->\n\n| a | b |\n|---|---|\n| x | 3 % |\n\n"
        "## Generated\n\n<!-- BENCH:START -->\n| a | b |\n|---|---|\n| x | 2.0 |\n<!-- BENCH:END -->\n\n"
        "## Broken\n\nSee `benchmarks/results/gone.json`.\n\n| a | b |\n|---|---|\n| x | 1.0 |\n\n![g](figures/missing.png)\n"
    )
    commit(repo, "docs")
    found = {(f.kind, f.line) for f in check_docs(repo)}
    lines = (repo / "docs" / "PAGE.md").read_text().splitlines()
    at = lambda text, after=0: next(i + 1 for i, line in enumerate(lines) if i >= after and text in line)
    nothing = at("## Nothing")
    assert found == {
        ("sourceless", at("| model | score |", nothing)),
        ("sourceless", at("![f]", nothing)),
        ("sourceless", at("| arm | return |")),
        ("dangling_source", at("| a | b |", at("## Broken"))),
        ("dangling_source", at("![g]")),
    }
    # a table whose JSON went stale is reported with the command that remakes it
    (repo / "vase_rl" / "learner.py").write_text(LEARNER_V2)
    stale = [f for f in check(repo) if f.kind == "stale_source"]
    assert [f.line for f in stale] == [at("| model | score |")] and stale[0].command == "python make_it.py"
    assert made.is_file()


def test_results_check_command(repo, capsys):
    result_with_provenance(repo, "r.json")
    commit(repo, "result")
    assert main(["results", "check", "--root", str(repo)]) == 0
    assert "no findings" in capsys.readouterr().out
    (repo / "vase_rl" / "learner.py").write_text(LEARNER_V2)
    out = repo / "findings.json"
    assert main(["results", "check", "--root", str(repo), "--json", str(out)]) == 1
    text = capsys.readouterr().out
    assert "benchmarks/results/r.json" in text and "stale" in text and "regenerate: python make_it.py" in text
    findings = json.loads(out.read_text())["findings"]
    assert [f["kind"] for f in findings] == ["stale"] and "provenance" in json.loads(out.read_text())
    # a run folder given on the command line is checked too
    run = repo / "runs" / "x"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"value": 1}))
    assert main(["results", "check", "--root", str(repo), "--no-docs", str(run)]) == 1
    assert "runs/x/results.json" in capsys.readouterr().out


def test_results_registry_covers_the_repository_results():
    from vase_rl.evaluation.results_check import RESULT_SOURCES
    from vase_rl.provenance import REPO_ROOT

    # a benchmark's resume log (``*.partial.jsonl``, ignored by git) is work in progress, not a result
    # (sub-folders such as ``logs/`` included: every kept file is a result someone may cite)
    files = sorted(
        f
        for f in (REPO_ROOT / "benchmarks" / "results").rglob("*")
        if f.is_file() and not f.name.endswith(".partial.jsonl")
    )
    assert files, "no results in the repository"
    for f in files:
        rel = f.relative_to(REPO_ROOT).as_posix()
        if f.suffix == ".json":
            prov = json.loads(f.read_text()).get("provenance") if f.read_text().lstrip().startswith("{") else None
            if isinstance(prov, dict) and prov.get("code_paths") and prov.get("command"):
                continue  # a result with its own provenance names its code and command
        assert rel in RESULT_SOURCES, f"{rel}: add it to RESULT_SOURCES with its code and command"
    for entry in RESULT_SOURCES.values():
        if "code" in entry:
            code_paths(*entry["code"])  # every group name is valid
            script = next((c for c in entry["code"] if c.endswith(".py") and not c.startswith("!")), None)
            assert script is None or (REPO_ROOT / script).is_file(), script


# ------------------------------------------------------------------------------ benchmarks


FULL_BLOCK = ("commit", "dirty", "versions", "cpu", "threads", "command", "started", "wall_seconds", "code_digest")


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, args, code",
    [
        ("benchmarks/bench_envs.py", ["--quick", "--repeats", "1", "--no-doc"], "envs/streams.py"),
        ("benchmarks/bench_rl.py", ["--quick", "--arms", "vase", "--no-doc"], "vase_rl/learner.py"),
    ],
)
def test_benchmark_quick_modes_write_complete_provenance(script, args, code, tmp_path):
    import sys

    from vase_rl.provenance import REPO_ROOT

    out = tmp_path / "result.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SDL_VIDEODRIVER": "dummy"}
    r = subprocess.run(
        [sys.executable, str(REPO_ROOT / script), *args, "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    prov = json.loads(out.read_text())["provenance"]
    for key in FULL_BLOCK:
        assert prov.get(key) is not None or key == "dirty" and prov["commit"] is None, key
    assert prov["command"].startswith(f"python {script} --quick") and code in prov["code_files"]
    assert script in prov["code_files"] and prov["wall_seconds"] > 0
    assert not [f for f in check_result(out, REPO_ROOT) if f.kind == "stale"]  # made from the code as it is
