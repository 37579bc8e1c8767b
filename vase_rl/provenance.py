"""Provenance of a result: which code, machine and command produced it.

Every JSON under ``benchmarks/results/`` and every ``vase-rl`` run folder carries a
``provenance`` block made by :func:`collect` (one helper, so the fields never drift apart):

- ``commit`` / ``dirty`` / ``commit_time``: the git HEAD of the checkout and whether the working tree
  had uncommitted changes (``None`` outside a git checkout);
- ``versions``: Python, torch, numpy, gymnasium, stable-baselines3, kornia, vase_rl;
- ``cpu``: model name, core count, the instruction-set flags that decide floating-point speed and
  rounding (AVX2, AVX-512, AVX-512 BF16, AMX), torch's ``get_cpu_capability()`` and whether bf16
  matrix work is native; ``threads``: torch's intra-op threads;
- ``command`` / ``argv`` / ``seeds`` / ``started`` / ``wall_seconds``;
- with ``code_paths``: the code the result depends on (:func:`code_paths` expands the named
  groups of :data:`CODE_PATHS`), a digest of those files' contents as they were (uncommitted
  edits included) and a short hash per file, so a later change to any of them marks the result
  stale (``vase-rl results check``, :mod:`vase_rl.evaluation.results_check`) even if the git
  history is rewritten.

:func:`write_json` adds the block and writes atomically. :func:`cpu_info` and
:func:`machine_summary` are usable on their own (benchmarks print them under their tables);
:func:`short_commit` gives the one-line "commit abc1234 (dirty)" that generated docs tables print.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "CODE_PATHS",
    "collect",
    "code_paths",
    "code_state",
    "content_hash",
    "cpu_info",
    "git_state",
    "include_rules",
    "machine_summary",
    "package_versions",
    "path_selected",
    "short_commit",
    "write_json",
    "Timer",
]

REPO_ROOT = Path(__file__).resolve().parents[1]

#: The code each kind of result depends on, in one place (paths relative to the repository root;
#: a folder means every file under it; ``!path`` excludes). Writers name groups and add their own
#: script: ``code_paths("core", "envs", "benchmarks/bench_x.py")``. "core" is the whole library
#: except the modules listed, so a module added to the core later is covered without an edit here.
CODE_PATHS: dict[str, tuple[str, ...]] = {
    "core": (
        "vase_rl/",
        "!vase_rl/evaluation/",
        "!vase_rl/cli.py",
        "!vase_rl/provenance.py",
        "!vase_rl/wrappers.py",
        "!vase_rl/observations.py",
    ),
    "evaluation": ("vase_rl/evaluation/", "!vase_rl/evaluation/plots.py", "!vase_rl/evaluation/results_check.py"),
    "plots": ("vase_rl/evaluation/plots.py",),
    "wrappers": ("vase_rl/wrappers.py", "vase_rl/observations.py"),
    "envs": ("envs/",),
    "agents": ("agents/",),
}

# flags that change speed or rounding of float kernels (x86 /proc/cpuinfo names)
_FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_bf16", "amx_tile")


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    """The CPU as it matters for results: model, cores, float-relevant flags, torch's dispatch."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and value.strip():
                model = value.strip()
            elif key == "flags":
                flags = set(value.split())
    except OSError:
        pass
    info: dict[str, Any] = {
        "model": model,
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "flags": sorted(f for f in _FLAGS_OF_INTEREST if f in flags),
    }
    try:
        import torch

        info["torch_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:  # pragma: no cover - torch missing or too old
        info["torch_capability"] = None
    info["native_bf16"] = bool({"avx512_bf16", "amx_bf16"} & flags)
    return info


@lru_cache(maxsize=4)
def git_state(root: str | None = None) -> dict[str, Any]:
    """``{"commit", "dirty", "commit_time"}`` of the checkout holding this package (None values
    when it is not a git checkout, e.g. an installed wheel)."""
    cwd = str(root or REPO_ROOT)

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "commit_time": None}
    # dirty: a tracked file changed, or an untracked source file exists (results and run folders are not code)
    status = git("status", "--porcelain", "--untracked-files=all") or ""
    dirty = any(
        not line.startswith("??") or line.rstrip().endswith((".py", ".toml", "Makefile"))
        for line in status.splitlines()
        if line.strip()
    )
    return {"commit": commit, "dirty": dirty, "commit_time": git("show", "-s", "--format=%cI", "HEAD")}


def short_commit(info: dict[str, Any] | None = None) -> str:
    """``commit abc1234`` (+ `` (uncommitted changes)`` when dirty), or ``commit unknown``, for
    the source line of generated tables. ``info`` is a provenance block (default: now)."""
    state = git_state() if info is None else info
    commit = state.get("commit")
    if not commit:
        return "commit unknown (not a git checkout)"
    return f"commit {commit[:7]}" + (" (uncommitted changes)" if state.get("dirty") else "")


def code_paths(*items: str) -> list[str]:
    """Expand group names of :data:`CODE_PATHS` and keep explicit paths (``"benchmarks/x.py"``,
    ``"!vase_rl/cli.py"``); order kept, duplicates dropped. Unknown names without a ``/`` or a
    suffix are refused, so a typo in a group name cannot silently track nothing."""
    out: list[str] = []
    for item in items:
        if item in CODE_PATHS:
            expanded = CODE_PATHS[item]
        elif "/" in item or "." in item:
            expanded = (item,)
        else:
            raise ValueError(f"unknown code group {item!r}: use one of {sorted(CODE_PATHS)} or a path")
        for path in expanded:
            if path not in out:
                out.append(path)
    return out


def path_selected(rel: str, paths: Sequence[str]) -> bool:
    """Whether the file ``rel`` (relative, ``/``-separated) is selected by ``paths``: the *last*
    rule that matches it decides (``"a/"`` or ``"a/x.py"`` includes, ``"!a/x.py"`` excludes), so
    a group listed after another re-includes what the first excluded (``code_paths("core",
    "wrappers")`` selects ``vase_rl/wrappers.py``, which "core" alone leaves out)."""
    selected = False
    for rule in paths:
        target = rule[1:] if rule.startswith("!") else rule
        if rel == target or rel.startswith(target.rstrip("/") + "/"):
            selected = not rule.startswith("!")
    return selected


def include_rules(paths: Iterable[str]) -> list[str]:
    """The include rules of ``paths`` (what git is asked to list); :func:`path_selected` then
    applies the exclusions in order."""
    return [p for p in paths if not p.startswith("!")]


def _code_files(paths: list[str], root: Path) -> list[str]:
    """Files selected by ``paths`` (:func:`path_selected`; tracked or untracked-but-not-ignored
    in git; a plain walk of non-cache files outside a checkout), relative to ``root``, sorted."""
    include = include_rules(paths)
    try:
        out = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "--", *include],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=20,
        )
        if out.returncode == 0:
            found = (f for f in out.stdout.splitlines() if f and (root / f).is_file())
            return sorted({f for f in found if path_selected(f, paths)})
    except (OSError, subprocess.SubprocessError):
        pass
    files = set()
    for inc in include:
        base = root / inc
        cands = [base] if base.is_file() else ([f for f in base.rglob("*") if f.is_file()] if base.is_dir() else [])
        for f in cands:
            rel = f.relative_to(root).as_posix()
            if "__pycache__" not in rel and path_selected(rel, paths):
                files.add(rel)
    return sorted(files)


def content_hash(data: bytes, name: str = "") -> str:
    """First 12 hex digits of a SHA-256 of a file's *behaviour*: for Python source (``name``
    ending in ``.py``) the parsed syntax tree, so reformatting and comments are not changes;
    otherwise (or if it does not parse) the raw bytes."""
    if name.endswith(".py"):
        with contextlib.suppress(SyntaxError, ValueError):
            data = ast.dump(ast.parse(data)).encode()
    return hashlib.sha256(data).hexdigest()[:12]


def code_state(paths: Iterable[str], root: str | os.PathLike | None = None) -> dict[str, Any]:
    """The content of the code at ``paths`` now: ``code_paths``, ``code_files`` (relative path ->
    :func:`content_hash`) and ``code_digest`` (SHA-256 over all of them). Take it when a run
    *starts* (the modules a process imported are what it ran) and pass it to :func:`collect` /
    :func:`write_json` as ``code_state=``."""
    paths = code_paths(*paths)
    base = Path(root) if root is not None else REPO_ROOT
    files = {}
    for rel in _code_files(paths, base):
        files[rel] = content_hash((base / rel).read_bytes(), rel)
    digest = hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in files.items()).encode()).hexdigest()
    return {"code_paths": paths, "code_digest": digest, "code_files": files}


def package_versions() -> dict[str, str | None]:
    from importlib import metadata

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("torch", "numpy", "gymnasium", "stable-baselines3", "kornia", "vase-rl", "scikit-learn", "ray"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _threads() -> int | None:
    try:
        import torch

        return int(torch.get_num_threads())
    except Exception:  # pragma: no cover
        return None


def collect(
    command: str | None = None,
    seeds: Iterable[int] | None = None,
    started: float | None = None,
    argv: list[str] | None = None,
    code_paths: Iterable[str] | None = None,
    code_state: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The provenance block. ``command`` defaults to this process's command line; ``started`` is a
    ``time.time()`` stamp (gives ``wall_seconds``); ``code_paths`` (groups or paths, see
    :func:`code_paths`) records the digest of that code now, ``code_state`` one taken earlier
    with :func:`code_state` (preferred for long runs); ``extra`` adds fields (e.g. ``jobs=2``)."""
    argv = list(sys.argv if argv is None else argv)
    if command is None:
        prog = argv[0] if argv else "python"
        with contextlib.suppress(ValueError):  # another drive on Windows
            prog = os.path.relpath(prog, REPO_ROOT) if os.path.isabs(prog) else prog
        command = "python " + " ".join(shlex.quote(a) for a in [prog, *argv[1:]])
    now = time.time()
    block: dict[str, Any] = {
        **git_state(),
        "command": command,
        "argv": argv,
        "seeds": None if seeds is None else [int(s) for s in seeds],
        "versions": package_versions(),
        "cpu": cpu_info(),
        "threads": _threads(),
        "platform": platform.platform(),
        "finished": _dt.datetime.fromtimestamp(now, _dt.timezone.utc).isoformat(timespec="seconds"),
        "started": None
        if started is None
        else _dt.datetime.fromtimestamp(started, _dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": None if started is None else round(now - started, 2),
    }
    if code_state is None and code_paths is not None:
        code_state = _code_state(list(code_paths))
    if code_state is not None:
        block.update(code_state)
    block.update(extra)
    return block


def machine_summary(info: dict[str, Any] | None = None) -> str:
    """One line for tables: ``AMD EPYC (2 CPUs, AVX512, bf16 native), torch 2.13.0, 1 thread``."""
    cpu = cpu_info() if info is None else info.get("cpu", info)
    versions = package_versions() if info is None else info.get("versions", {})
    threads = _threads() if info is None else info.get("threads")
    bf16 = "bf16 native" if cpu.get("native_bf16") else "no native bf16"
    return (
        f"{cpu.get('model')} ({cpu.get('logical_cpus')} CPUs, {cpu.get('torch_capability')}, {bf16}), "
        f"torch {versions.get('torch')}, {threads} thread(s)"
    )


def write_json(
    path: str | os.PathLike,
    payload: dict[str, Any],
    *,
    command: str | None = None,
    seeds: Iterable[int] | None = None,
    started: float | None = None,
    code_paths: Iterable[str] | None = None,
    code_state: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write ``payload`` with a ``provenance`` block (kept if the payload already has one) to
    ``path`` atomically, creating folders. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dict(payload)
    if "provenance" not in data:
        data["provenance"] = collect(
            command=command, seeds=seeds, started=started, code_paths=code_paths, code_state=code_state, **extra
        )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_jsonable) + "\n")
    os.replace(tmp, path)
    return path


def _jsonable(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


class Timer:
    """``with Timer() as t: ...`` then ``t.started`` (epoch) for :func:`collect`, ``t.seconds``."""

    def __enter__(self) -> Timer:
        self.started = time.time()
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._t0


_code_state = code_state  # collect() and write_json() take a parameter of the same name
