"""The ``vase-rl`` command: train, evaluate, ablate, plot and benchmark VASE from a shell.

    vase-rl train --preset cpu32 --sequence moving_shapes,digits,moving_digits --out runs/vase
    vase-rl evaluate runs/vase
    vase-rl ablate --quick --out runs/ablation-quick
    vase-rl plot runs/vase
    vase-rl bench                     # lists the benchmarks; vase-rl bench rl -- --quick runs one
    vase-rl results check             # stale results, docs figures without a source

Every subcommand has a complete ``--help``. Bad arguments exit with status 2 and a message that
names the argument; a failure inside a run exits with status 1 (``results check``: 1 when it
finds a problem). Run settings can come from a JSON file (``--settings``, e.g. a run's
``experiment.json``); options given on the command line win. Every JSON written here carries a
provenance block (:mod:`vase_rl.provenance`). See docs/CLI.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser"]

_DEFAULT_SEQUENCE = "moving_shapes,digits,moving_digits"


class CLIError(Exception):
    """A user error: printed as ``vase-rl <cmd>: error: ...`` with exit status 2."""


class _Formatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` to an option's help unless its text already states the default
    (so no default is printed twice) or there is nothing to state (None, False, empty)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text + " (default: %(default)s)"
        return text


#: Benchmarks reachable as ``vase-rl bench NAME``: script (relative to the repository) and what it measures.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "update": ("benchmarks/bench_update.py", "cost of one VASE update vs a bare beta-VAE step; bf16, channels_last"),
    "encode": ("benchmarks/bench_encode.py", "encoder cost at RL batch sizes (fp32, bf16, channels_last, compiled)"),
    "envs": ("benchmarks/bench_envs.py", "env steps/s, stream images/s, sprite-bank build time, reference returns"),
    "rl": ("benchmarks/bench_rl.py", "PPO on VASE latents vs raw pixels vs true factors; wrapper overhead"),
    "domain_inference": ("benchmarks/bench_domain_inference.py", "domain inference over seeds on the demo stream"),
    "dreaming": ("benchmarks/bench_dreaming.py", "forgetting of the old domain for dreaming weights"),
    "imagination": ("examples/imagination_exploration.py", "imagination-driven exploration (paper fig. 4C)"),
    "ray": ("benchmarks/bench_ray.py", "RayVecEnv overhead, bytes per step and actor scaling on a local Ray cluster"),
    "continual_rl": (
        "benchmarks/bench_continual_rl.py",
        "continual RL: PPO on VASE / CCI-VAE latents, pixels, true factors as the look changes A->B->A",
    ),
}

#: Keys of a ``--settings`` file that are recorded for information only (never options).
_SETTINGS_IGNORED = {"provenance", "progress"}
#: Keys of one command's settings that another command does not take (a run's experiment.json
#: given to ``ablate``): skipped with a note instead of refused.
_RUN_ONLY_SETTINGS = {"seed", "checkpoint_every", "seeds", "variants", "jobs", "title"}


# ---------------------------------------------------------------------------------------------
# argument helpers


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def _int_list(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part[1:] and part[0] != "-":
            a, b = part.split("-", 1)
            try:
                lo, hi = int(a), int(b)
            except ValueError:
                raise argparse.ArgumentTypeError(f"bad seed range {part!r} (use e.g. 0-2 or 0,1,2)") from None
            if hi < lo:
                raise argparse.ArgumentTypeError(f"bad seed range {part!r}: end before start")
            out += list(range(lo, hi + 1))
        else:
            try:
                out.append(int(part))
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected integers like 0,1,2 or 0-2, got {text!r}") from None
    if any(s < 0 for s in out):
        raise argparse.ArgumentTypeError("seeds must be >= 0")
    return out


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE (e.g. width=0.5), got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if isinstance(value, list):
        value = tuple(value)
    return key, value


def _add_config_args(p: argparse.ArgumentParser, default_preset: str = "cpu32") -> None:
    g = p.add_argument_group("model configuration")
    g.add_argument(
        "--preset",
        default=None,
        help=f"named VASEConfig preset (default {default_preset}; see `vase-rl train --list-presets`)",
    )
    g.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="a VASEConfig JSON file (e.g. a run's config.json); --preset and --config exclude each other",
    )
    g.add_argument(
        "--set",
        dest="overrides",
        type=_key_value,
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a config field; VALUE is JSON (width=0.5, image_shape=[1,32,32], dreaming=false); repeatable",
    )
    g.add_argument(
        "--image-size",
        type=_positive_int,
        default=None,
        metavar="PX",
        help="square image side; shorthand for --set image_shape=[C,PX,PX]",
    )
    p.set_defaults(_default_preset=default_preset)


def _add_run_args(p: argparse.ArgumentParser, steps_default: int) -> None:
    g = p.add_argument_group("stream and evaluation")
    g.add_argument(
        "--sequence",
        default=_DEFAULT_SEQUENCE,
        metavar="DOMAINS",
        help="comma-separated domains, each optionally NAME:STEPS, e.g. "
        f"'{_DEFAULT_SEQUENCE}' (default) or 'digits,garments:300,digits'",
    )
    g.add_argument(
        "--steps-per-domain",
        type=_positive_int,
        default=steps_default,
        metavar="N",
        help=f"updates per domain segment without an explicit length (default {steps_default})",
    )
    g.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="B",
        help="stream batch size (default: the config's batch_size)",
    )
    g.add_argument(
        "--eval-every",
        type=_positive_int,
        default=25,
        metavar="N",
        help="score the probes on held-out data every N updates and at segment ends (default 25)",
    )
    g.add_argument(
        "--eval-size",
        type=_positive_int,
        default=512,
        metavar="N",
        help="held-out images per domain for probe scores and latent usage (default 512)",
    )
    g.add_argument(
        "--probe-every",
        type=_positive_int,
        default=1,
        metavar="N",
        help="train the probes every N updates (default 1: every update, as in the paper)",
    )
    g.add_argument(
        "--refit-steps",
        type=_positive_int,
        default=300,
        metavar="N",
        help="updates of the refit probe trained from scratch at every segment end (default 300)",
    )
    g.add_argument(
        "--probe-batch-size",
        type=_positive_int,
        default=64,
        metavar="B",
        help="images per domain per probe update (default 64, the paper's batch)",
    )
    g.add_argument(
        "--refit-size",
        type=_positive_int,
        default=1024,
        metavar="N",
        help="training images of each refit probe (default 1024)",
    )
    g.add_argument("--no-refit", action="store_true", help="skip the refit probes")
    g.add_argument("--no-disentanglement", action="store_true", help="skip MIG/DCI at the end of a run")
    g.add_argument(
        "--disentanglement-size",
        type=_positive_int,
        default=10_000,
        metavar="N",
        help="samples per domain for MIG and DCI's training set (default 10000, disentanglement_lib's; DCI is "
        "tested on 5000 more). Fewer is faster and is stated in the results",
    )
    g.add_argument(
        "--dci-method",
        choices=("gradient_boosting", "random_forest", "lasso"),
        default="gradient_boosting",
        help="DCI's predictor (default gradient_boosting: scikit-learn's, as disentanglement_lib)",
    )
    g.add_argument(
        "--boundary-tolerance",
        type=_nonneg_int,
        default=None,
        metavar="N",
        help="updates a detected domain switch may lag the true one (default: a tenth of the "
        "shortest segment, at least 5)",
    )
    g.add_argument(
        "--family-seed",
        type=_nonneg_int,
        default=0,
        metavar="S",
        help="seed of the procedural sprites (writers, textures); default 0",
    )
    g.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda or auto")
    g.add_argument(
        "--threads", type=_positive_int, default=1, metavar="N", help="torch CPU threads per process (default 1)"
    )
    g.add_argument(
        "--settings",
        type=Path,
        default=None,
        metavar="FILE",
        help="JSON object of these options (names with - or _, e.g. a run's experiment.json); options given "
        "on the command line win",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vase-rl",
        description="VASE, the life-long disentangled representation learner: train it on domain streams, "
        "evaluate forgetting and domain inference, run the paper's ablation, plot, benchmark.",
        epilog="Run `vase-rl COMMAND --help` for the options of each command. Docs: docs/CLI.md.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # -- train
    p = sub.add_parser(
        "train",
        help="train VASE on a domain stream with probes alongside (resumable)",
        description="Train a VASE learner on a stream of sprite domains. Probes (2x256 MLPs) learn object "
        "identity and position from the latents alongside; the run folder receives the settings, "
        "per-step history, probe scores, domain-inference log, results.json, the final model "
        "(vase.pt) and a resumable checkpoint. Re-running the same command continues an interrupted "
        "run and returns a finished one at once.",
        formatter_class=_Formatter,
    )
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="run folder (created; required to train)")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seed of learner, stream and probes")
    _add_config_args(p)
    _add_run_args(p, steps_default=600)
    g = p.add_argument_group("run control")
    g.add_argument(
        "--checkpoint-every",
        type=_nonneg_int,
        default=200,
        metavar="N",
        help="write a resumable checkpoint every N updates (0: only at the end)",
    )
    g.add_argument("--fresh", action="store_true", help="ignore an existing run in --out and start over")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--plot", action="store_true", help="also write the figures (as `vase-rl plot`)")
    g.add_argument("--list-presets", action="store_true", help="list the config presets and exit")
    p.set_defaults(func=_cmd_train)

    # -- evaluate
    p = sub.add_parser(
        "evaluate",
        help="summarise a finished run, or evaluate a saved model on domains",
        description="With RUN (a folder written by `vase-rl train`): print its results (forgetting, probe "
        "scores, domain inference, latent usage, MIG/DCI) and write them with --json. With "
        "--checkpoint: evaluate a saved learner (vase.pt) on the domains of --sequence: the domain "
        "it assigns to each, latent usage, MIG/DCI and, with --probes, freshly trained probes.",
        formatter_class=_Formatter,
    )
    p.add_argument("run", nargs="?", type=Path, default=None, metavar="RUN", help="run folder")
    p.add_argument("--checkpoint", type=Path, default=None, metavar="FILE", help="a saved learner (vase.pt)")
    p.add_argument(
        "--sequence", default=_DEFAULT_SEQUENCE, metavar="DOMAINS", help="domains to evaluate a --checkpoint on"
    )
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the held-out data and probes")
    p.add_argument("--eval-size", type=_positive_int, default=512, metavar="N", help="held-out images per domain")
    p.add_argument("--probes", action="store_true", help="train fresh probes on the --checkpoint's latents")
    p.add_argument("--refit-steps", type=_positive_int, default=300, metavar="N", help="updates of those probes")
    p.add_argument("--no-disentanglement", action="store_true", help="skip MIG/DCI of a --checkpoint")
    p.add_argument(
        "--disentanglement-size",
        type=_positive_int,
        default=10_000,
        metavar="N",
        help="samples per domain for MIG and DCI (default 10000, disentanglement_lib's; fewer is stated in the output)",
    )
    p.add_argument(
        "--dci-method",
        choices=("gradient_boosting", "random_forest", "lasso"),
        default="gradient_boosting",
        help="DCI's predictor (default gradient_boosting, the standard)",
    )
    p.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="also write the numbers (with provenance) to FILE"
    )
    p.add_argument("--threads", type=_positive_int, default=1, metavar="N", help="torch CPU threads")
    p.set_defaults(func=_cmd_evaluate)

    # -- ablate
    p = sub.add_parser(
        "ablate",
        help="the paper's ablation: S/D/A switches x objective x seeds -> JSON + markdown table",
        description="Train every variant of the ablation grid for every seed and write ablation.json (per-run "
        "numbers, mean and spread per variant) and ablation.md (a table like the paper's table 1) "
        "into --out. Variants: SDA (full VASE), SD, SA, DA, S, D, A, - (= CCI-VAE), each optionally "
        "'/entangled'. Interrupted ablations resume (--fresh starts over). --quick runs a tiny version "
        "(16x16, 30 updates per domain, one seed) that checks the pipeline end to end and says what it "
        "cannot show.",
        formatter_class=_Formatter,
    )
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="ablation folder (created; required)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny smoke-test scale (overrides image size, steps, seeds and evaluation sizes): checks that "
        "everything runs; its numbers mean nothing",
    )
    p.add_argument(
        "--fresh", action="store_true", help="ignore finished or interrupted runs in --out and start every run over"
    )
    p.add_argument("--list-presets", action="store_true", help="list the config presets and exit")
    p.add_argument("--seeds", type=_int_list, default=[0, 1, 2], metavar="LIST", help="seeds, e.g. 0,1,2 or 0-4")
    p.add_argument(
        "--variants",
        default="default",
        metavar="LIST",
        help="'default' (8 disentangled combinations + entangled SDA and -), 'all' (8 x 2 "
        "objectives), or a comma list such as SDA,-,SDA/entangled",
    )
    p.add_argument("--jobs", type=_positive_int, default=1, metavar="N", help="experiments run in parallel")
    p.add_argument("--title", default=None, help="title line of the markdown table")
    _add_config_args(p)
    _add_run_args(p, steps_default=600)
    p.add_argument("--no-progress", action="store_true", help="do not print a line per finished run")
    p.set_defaults(func=_cmd_ablate)

    # -- plot
    p = sub.add_parser(
        "plot",
        help="figures of a run (traversals, reconstructions, atypicality, probes) or an ablation",
        description="Write PNG figures. For a run folder: latent traversals per domain (rows = latents, "
        "labelled added/reused/frozen/unused), cross-domain reconstructions, the atypicality profile "
        "with the thresholds and inferred domains, the probe curves with domain boundaries. For an "
        "ablation folder (with ablation.json): bars of the object-id change per variant.",
        formatter_class=_Formatter,
    )
    p.add_argument("run", type=Path, metavar="DIR", help="run folder or ablation folder")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="figure folder (default DIR/figures)")
    p.add_argument(
        "--figures",
        default="all",
        metavar="LIST",
        help="comma list of traversals,reconstructions,atypicality,probes,domains (runs) or 'all'",
    )
    p.add_argument("--prefix", default="", help="prefix of the file names")
    p.add_argument(
        "--num-images",
        type=_positive_int,
        default=6,
        metavar="N",
        help="images per domain in the reconstruction figure",
    )
    p.add_argument("--threads", type=_positive_int, default=1, metavar="N", help="torch CPU threads")
    p.set_defaults(func=_cmd_plot)

    # -- bench
    listing = "; ".join(f"{k}: {v[1]}" for k, v in BENCHMARKS.items())
    p = sub.add_parser(
        "bench",
        help="run a benchmark by name (update, encode, envs, rl, domain_inference, dreaming, imagination, ray, "
        "continual_rl)",
        description="Run one of the repository's benchmarks: `vase-rl bench NAME [-- ARGS]` runs its script "
        "with ARGS (e.g. `vase-rl bench rl -- --quick`, `vase-rl bench update -- --help`); without NAME it "
        f"lists them. Benchmarks: {listing}. Needs a source checkout (the scripts are not installed); "
        "--script runs another file.",
        formatter_class=_Formatter,
    )
    p.add_argument(
        "--script",
        type=Path,
        default=None,
        metavar="FILE",
        help="run this script instead of a named benchmark",
    )
    p.add_argument(
        "args",
        nargs=argparse.REMAINDER,
        metavar="NAME [-- ARGS]",
        help="benchmark name, then the arguments passed to its script",
    )
    p.set_defaults(func=_cmd_bench)

    # -- continual-rl (issue 11; the options are vase_rl.agents.continual's)
    p = sub.add_parser(
        "continual-rl",
        help="continual-RL benchmark: PPO on VASE / CCI-VAE / pixels / factors while the look changes A->B->A",
        description="Run the continual-RL benchmark of vase_rl.agents.continual (the same as "
        "benchmarks/bench_continual_rl.py); every argument after `continual-rl` goes to it, e.g. "
        "`vase-rl continual-rl --quick`; `vase-rl continual-rl --help` lists them.",
        prefix_chars="+",  # options such as --quick are the benchmark's, passed on untouched
        add_help=False,
    )
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the benchmark (see --help)")
    p.set_defaults(func=_cmd_continual_rl)

    # -- results
    p = sub.add_parser(
        "results",
        help="check results: stale JSON, missing provenance, docs figures and tables without a source",
        description="`vase-rl results check [PATH ...]` checks every JSON under benchmarks/results/ (and the run "
        "or ablation folders / files given) against the code it measured: stale when that code changed since, "
        "also reported when it has no provenance, names an unknown commit or copies another result; and checks "
        "that every figure and number table in docs/ and README.md names its source. Each finding comes with "
        "the command that regenerates it. Exit status 0 when nothing is wrong, 1 otherwise.",
        formatter_class=_Formatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser(
        "check",
        help="report stale results and docs items without a source",
        description="Check results and docs (see `vase-rl results --help`); exit status 1 when something is wrong.",
        formatter_class=_Formatter,
    )
    p.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="more result files or run/ablation folders")
    p.add_argument(
        "--root",
        type=Path,
        default=None,
        metavar="DIR",
        help="repository to check (default: the checkout holding this package)",
    )
    p.add_argument("--no-docs", action="store_true", help="skip the docs figures and tables")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the findings to FILE")
    p.set_defaults(func=_cmd_results)
    return parser


def _version() -> str:
    try:
        from vase_rl import __version__

        return __version__
    except Exception:  # pragma: no cover
        return "unknown"


# ---------------------------------------------------------------------------------------------
# config


def _build_config(args: argparse.Namespace, extra: dict[str, Any] | None = None):
    from vase_rl.config import VASEConfig, preset_names

    if args.config is not None and args.preset is not None:
        raise CLIError("give either --preset or --config, not both")
    overrides = dict(extra or {})
    overrides.update(dict(args.overrides))
    try:
        if args.config is not None:
            if not args.config.is_file():
                raise CLIError(f"--config: no such file: {args.config}")
            cfg = VASEConfig.load(args.config)
            if overrides:
                cfg = cfg.replace(**overrides)
        else:
            name = args.preset or args._default_preset
            if name not in preset_names():
                raise CLIError(f"--preset: unknown preset {name!r}; choose one of {', '.join(preset_names())}")
            cfg = VASEConfig.preset(name, **overrides)
        if args.image_size is not None:
            cfg = cfg.replace(image_shape=(cfg.image_shape[0], args.image_size, args.image_size))
    except (ValueError, TypeError) as err:
        raise CLIError(str(err)) from None
    return cfg


def _sequence(text: str):
    from vase_rl.evaluation.experiment import parse_sequence

    try:
        seq = parse_sequence(text)
    except ValueError as err:
        raise CLIError(f"--sequence: {err}") from None
    from vase_rl.envs import list_domains, parse_domain

    for item in seq:
        name = item if isinstance(item, str) else item[0]
        try:
            parse_domain(name)
        except (ValueError, KeyError) as err:
            raise CLIError(f"--sequence: unknown domain {name!r} ({err}); known: {', '.join(list_domains())}") from None
    return seq


def _run_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "batch_size": args.batch_size,
        "probe_every": args.probe_every,
        "probe_batch_size": args.probe_batch_size,
        "eval_every": args.eval_every,
        "eval_size": args.eval_size,
        "refit": not args.no_refit,
        "refit_steps": args.refit_steps,
        "refit_size": args.refit_size,
        "family_seed": args.family_seed,
        "boundary_tolerance": args.boundary_tolerance,
        "device": args.device,
        "disentanglement": not args.no_disentanglement,
        "disentanglement_size": args.disentanglement_size,
        "dci_method": args.dci_method,
        "command": args._command,
    }


def _settings_defaults(path: Path, sub: argparse.ArgumentParser) -> dict[str, Any]:
    """Option values from a ``--settings`` JSON file, checked with the options' own types.

    Keys are option names (``eval-every`` or ``eval_every``); a run folder's ``experiment.json``
    works as it is (``seed``, ``sequence`` as a list, ``refit``/``disentanglement`` booleans are
    mapped to their options; ``provenance`` and ``progress`` are ignored). An unknown key is an
    error that lists the known ones."""
    if not path.is_file():
        raise CLIError(f"--settings: no such file: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CLIError(f"--settings: {path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CLIError(f"--settings: {path} must hold a JSON object of option names and values")
    actions = {a.dest: a for a in sub._actions if a.option_strings and a.dest not in ("help", "settings")}
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = raw_key.replace("-", "_")
        if key in _SETTINGS_IGNORED:
            continue
        if key in ("refit", "disentanglement") and isinstance(value, bool):
            key, value = f"no_{key}", not value
        if key == "sequence" and isinstance(value, list):
            value = ",".join(v if isinstance(v, str) else f"{v[0]}:{v[1]}" for v in value)
        if key == "seeds" and isinstance(value, list):
            value = ",".join(str(v) for v in value)
        if key == "variants" and isinstance(value, list):
            value = ",".join(value)
        if key not in actions and key in _RUN_ONLY_SETTINGS:
            print(f"--settings: {raw_key!r} is not an option of this command; ignored", file=sys.stderr)
            continue
        if key not in actions:
            known = sorted(a.option_strings[-1].lstrip("-") for a in actions.values())
            raise CLIError(f"--settings: unknown option {raw_key!r} in {path}; known: {', '.join(known)}")
        action = actions[key]
        if action.type is not None and value is not None and not isinstance(value, bool):
            try:
                value = action.type(str(value))
            except (argparse.ArgumentTypeError, ValueError, TypeError) as err:
                raise CLIError(f"--settings: {raw_key}: {err}") from None
        if action.choices is not None and value not in action.choices:
            raise CLIError(f"--settings: {raw_key} must be one of {list(action.choices)}, got {value!r}")
        out[key] = value
    return out


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------
# commands


def _print_presets() -> None:
    from vase_rl.config import PRESETS

    for name in sorted(PRESETS):
        print(f"{name:12s} {json.dumps(PRESETS[name], default=str) if PRESETS[name] else '(the paper, 64x64)'}")


def _cmd_train(args: argparse.Namespace) -> int:
    if args.list_presets:
        _print_presets()
        return 0
    if args.out is None:
        raise CLIError("--out DIR is required (the run folder to create or resume)")
    cfg = _build_config(args)
    seq = _sequence(args.sequence)
    _threads(args.threads)
    from vase_rl.evaluation.experiment import run_experiment

    kwargs = _run_kwargs(args)
    try:
        res = run_experiment(
            cfg,
            seq,
            args.steps_per_domain,
            args.seed,
            args.out,
            checkpoint_every=args.checkpoint_every,
            resume=not args.fresh,
            progress=not args.no_progress,
            **kwargs,
        )
    except ValueError as err:
        raise CLIError(str(err)) from None
    print(format_results(res))
    print(f"\nrun folder: {args.out}")
    if args.plot:
        from vase_rl.evaluation.plots import plot_run

        for name, path in plot_run(args.out).items():
            print(f"figure {name}: {path}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    _threads(args.threads)
    if (args.run is None) == (args.checkpoint is None):
        raise CLIError("give a run folder (RUN) or --checkpoint FILE, not both and not neither")
    if args.run is not None:
        from vase_rl.evaluation.experiment import RUN_FILES

        res_path = args.run / RUN_FILES["results"]
        if not args.run.is_dir():
            raise CLIError(f"no run folder at {args.run}")
        if not res_path.is_file():
            hint = (
                " (it has a checkpoint: re-run the same `vase-rl train` command to finish it)"
                if (args.run / RUN_FILES["checkpoint"]).is_file()
                else ""
            )
            raise CLIError(f"{args.run} holds no finished run: {RUN_FILES['results']} is missing{hint}")
        res = json.loads(res_path.read_text())
        print(format_results(res))
        out = res
    else:
        if not args.checkpoint.is_file():
            raise CLIError(f"--checkpoint: no such file: {args.checkpoint}")
        from vase_rl.evaluation.experiment import evaluate_learner
        from vase_rl.learner import VASE

        try:
            learner = VASE.load(args.checkpoint, device="cpu")
        except ValueError as err:
            raise CLIError(str(err)) from None
        seq = _sequence(args.sequence)
        out = evaluate_learner(
            learner,
            seq,
            seed=args.seed,
            eval_size=args.eval_size,
            probes=args.probes,
            refit_steps=args.refit_steps,
            disentanglement=not args.no_disentanglement,
            disentanglement_size=args.disentanglement_size,
            dci_method=args.dci_method,
        )
        out = {"checkpoint": str(args.checkpoint), **out}
        print(format_static(out, learner))
    if args.json is not None:
        from vase_rl.evaluation.experiment import RUN_CODE, to_jsonable
        from vase_rl.provenance import collect, write_json

        data = to_jsonable(out)
        if args.run is not None:
            # the numbers are the run's: keep its provenance (never invent one for an old run
            # that has none) and record this command beside it
            data["evaluated_by"] = collect(command=args._command)
            data.setdefault("provenance", None)
        else:
            data["provenance"] = collect(command=args._command, seeds=[args.seed], code_paths=RUN_CODE)
        write_json(args.json, data)
        print(f"\nwritten: {args.json}")
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    from vase_rl.evaluation.ablation import (
        DEFAULT_VARIANTS,
        QUICK,
        QUICK_LIMITS,
        ablation_variants,
        goals_line,
        run_ablation,
    )

    if args.list_presets:
        _print_presets()
        return 0
    if args.out is None:
        raise CLIError("--out DIR is required (the ablation folder to create or resume)")

    if args.variants == "default":
        variants = list(DEFAULT_VARIANTS)
    elif args.variants == "all":
        variants = ablation_variants(("disentangled", "entangled"))
    else:
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants:
        raise CLIError("--variants is empty")
    seq = _sequence(args.sequence)
    kwargs = _run_kwargs(args)
    steps, seeds = args.steps_per_domain, args.seeds
    extra = {}
    if args.quick:
        extra = dict(QUICK["config_overrides"])
        steps = QUICK["steps_per_domain"]
        seeds = list(QUICK["seeds"])
        kwargs.update(QUICK["run_kwargs"])
        kwargs["batch_size"] = None
    kwargs["resume"] = not args.fresh
    cfg = _build_config(args, extra)
    _threads(args.threads)

    def report(name: str, seed: int, res: dict) -> None:
        if args.no_progress:
            return
        o = res.get("object_id", {})
        ch = o.get("change")
        f1 = res.get("domain_inference", {}).get("boundary", {}).get("f1")
        print(
            f"  {name:16s} seed {seed}: object-id change "
            f"{'–' if ch is None else f'{100 * ch:+.1f}%'}, boundary F1 {'–' if f1 is None else f'{f1:.2f}'}, "
            f"{res.get('wall_time_s', 0):.0f} s",
            flush=True,
        )

    total = len(variants) * len(seeds)
    if args.quick:
        print(QUICK_LIMITS + "\n", flush=True)
    if not args.no_progress:
        print(
            f"ablation: {len(variants)} variant(s) x {len(seeds)} seed(s) = {total} run(s) of "
            f"{args.sequence} ({steps} updates per domain) -> {args.out}",
            flush=True,
        )
    try:
        summary = run_ablation(
            cfg,
            seq,
            steps,
            seeds,
            args.out,
            variants=variants,
            jobs=args.jobs,
            run_kwargs=kwargs,
            title=args.title,
            on_result=report,
            command=args._command,
        )
    except ValueError as err:
        raise CLIError(str(err)) from None
    print()
    print((args.out / "ablation.md").read_text())
    print(goals_line(summary.get("goals", {})))
    if args.quick:
        print("(--quick: a smoke test of the pipeline; see above for what it cannot show)")
    print(f"written: {args.out / 'ablation.json'}, {args.out / 'ablation.md'}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    _threads(args.threads)
    if not args.run.is_dir():
        raise CLIError(f"no such folder: {args.run}")
    out = args.out if args.out is not None else args.run / "figures"
    if (args.run / "ablation.json").is_file():
        from vase_rl.evaluation.plots import plot_ablation

        summary = json.loads((args.run / "ablation.json").read_text())
        path = plot_ablation(summary, out / f"{args.prefix}ablation.png", title=summary.get("title"))
        print(f"figure ablation: {path}")
        return 0
    from vase_rl.evaluation.plots import FIGURES, plot_run

    which = list(FIGURES) if args.figures == "all" else [w.strip() for w in args.figures.split(",") if w.strip()]
    bad = sorted(set(which) - set(FIGURES))
    if bad:
        raise CLIError(f"--figures: unknown figure(s) {', '.join(bad)}; choose from {', '.join(FIGURES)} or all")
    try:
        paths = plot_run(args.run, out, which=which, num_images=args.num_images, prefix=args.prefix)
    except FileNotFoundError as err:
        raise CLIError(str(err)) from None
    for name, path in paths.items():
        print(f"figure {name}: {path}")
    return 0


def _find_script(rel: str) -> Path:
    here = Path(__file__).resolve().parent.parent
    for cand in (here / rel, Path.cwd() / rel):
        if cand.is_file():
            return cand
    raise CLIError(
        f"the benchmark script {rel} was not found (looked next to the installed package, {here / rel}, and in "
        f"{Path.cwd() / rel}). `vase-rl bench` needs a source checkout of vase_rl; run it from the repository "
        "root or pass --script PATH"
    )


def _cmd_continual_rl(args: argparse.Namespace) -> int:
    from vase_rl.agents.continual import main as continual_main

    rest = list(args.args)
    if rest and rest[0] == "--":
        rest = rest[1:]
    return continual_main(rest, prog="vase-rl continual-rl")


def _cmd_bench(args: argparse.Namespace) -> int:
    rest = list(args.args)
    name = None
    if rest and rest[0] != "--":
        candidate = rest[0].replace("-", "_")
        if candidate in BENCHMARKS:
            name, rest = candidate, rest[1:]
        elif args.script is None:
            raise CLIError(f"unknown benchmark {rest[0]!r}; choose one of {', '.join(BENCHMARKS)}")
    if rest and rest[0] == "--":
        rest = rest[1:]
    if args.script is not None:
        if not args.script.is_file():
            raise CLIError(f"--script: no such file: {args.script}")
        script = args.script
    elif name is None and not rest:
        width = max(map(len, BENCHMARKS))
        print("benchmarks (vase-rl bench NAME [-- ARGS]; ARGS go to the script, e.g. -- --help):")
        for key, (rel, what) in BENCHMARKS.items():
            print(f"  {key:{width}s}  {rel:40s} {what}")
        return 0
    else:
        if name is None:
            print("vase-rl bench: no benchmark named; running 'update' (name one to choose)", file=sys.stderr)
            name = "update"
        script = _find_script(BENCHMARKS[name][0])
    return subprocess.call([sys.executable, str(script), *rest])


def _cmd_results(args: argparse.Namespace) -> int:
    from vase_rl.evaluation.results_check import check, format_findings
    from vase_rl.provenance import REPO_ROOT, write_json

    root = args.root if args.root is not None else REPO_ROOT
    if not root.is_dir():
        raise CLIError(f"--root: no such folder: {root}")
    try:
        findings = check(root, args.paths, docs=not args.no_docs)
    except FileNotFoundError as err:
        raise CLIError(str(err)) from None
    print(format_findings(findings))
    if args.json is not None:
        write_json(args.json, {"root": str(root), "findings": [f.as_dict() for f in findings]}, command=args._command)
        print(f"written: {args.json}")
    return 1 if any(f.is_problem for f in findings) else 0


# ---------------------------------------------------------------------------------------------
# output


def _pct(v: Any, sign: bool = False) -> str:
    if v is None:
        return "–"
    return f"{100 * float(v):+.1f}%" if sign else f"{100 * float(v):.1f}%"


def _num(v: Any, fmt: str = ".3g") -> str:
    return "–" if v is None else format(float(v), fmt)


def format_results(res: dict[str, Any]) -> str:
    """A human-readable summary of a results dict (``results.json``)."""
    lines = []
    sw = res.get("switches", {})
    flags = "".join(k for k in "SDA" if sw.get(k)) or "-"
    exp = res.get("experiment", {})
    lines.append(
        f"VASE run: switches {flags}, objective {sw.get('objective')}, seed {exp.get('seed')}, "
        f"{res.get('num_steps')} updates, {res.get('wall_time_s')} s"
    )
    lines.append("segments: " + ", ".join(f"{d}[{a}:{b}]" for d, a, b in res.get("segments", [])))
    o = res.get("object_id")
    if o:
        lines.append(
            f"object id:  max {_pct(o.get('best'))}, change {_pct(o.get('change'), True)}, "
            f"refit change {_pct(None if o.get('refit_forgetting') is None else -o['refit_forgetting'], True)}, "
            f"ACC {_pct(o.get('average_accuracy'))}, BWT {_pct(o.get('backward_transfer'), True)}, "
            f"Chaudhry forgetting {_pct(o.get('chaudhry_forgetting'))}"
        )
    p = res.get("position")
    if p and p.get("best") is not None:
        lines.append(
            f"position:   min MSE {_num(p.get('best') and p['best'] * 1e4, '.1f')}e-4, change "
            f"{_num(p.get('change') and p['change'] * 1e4, '+.1f')}e-4"
        )
    d = res.get("domain_inference", {})
    if d:
        b, ag, rid = d.get("boundary", {}), d.get("agreement", {}), d.get("reidentification", {})
        lines.append(
            f"domains:    {d.get('num_domains')} inferred for {ag.get('num_true_domains')} true; boundary "
            f"F1 {_num(b.get('f1'), '.2f')} (P {_num(b.get('precision'), '.2f')}, R "
            f"{_num(b.get('recall'), '.2f')}, delay {_num(b.get('mean_delay'), '.1f')}, tolerance "
            f"{d.get('tolerance')}), ARI {_num(ag.get('ari'), '.2f')}, re-identification "
            f"{_num(rid.get('rate'), '.2f')} of {rid.get('num_returns', 0)} return(s)"
        )
    u = res.get("latent_usage", {})
    if u:
        lines.append(
            f"latents:    {u.get('num_in_use')} of {u.get('latent_dim')} in use (active for a domain's data and "
            "needed by its decoder)"
        )
    dis = res.get("disentanglement", {})
    if dis:
        parts = [
            f"{n}: MIG {_num(v.get('mig'), '.2f')}, DCI-D {_num(v.get('dci_disentanglement'), '.2f')}"
            for n, v in dis.items()
            if v
        ]
        if parts:
            lines.append("disentanglement: " + "; ".join(parts))
        small = sorted({v["num_samples"] for v in dis.values() if v and v.get("standard_sample_size") is False})
        if small:
            lines.append(
                f"  (MIG/DCI on {', '.join(map(str, small))} samples per domain, below disentanglement_lib's "
                "10,000: not comparable to published scores)"
            )
    return "\n".join(lines)


def format_static(out: dict[str, Any], learner) -> str:
    lines = [repr(learner)]
    for name, row in out["per_domain"].items():
        bits = [f"assigned domain {row['assigned_domain']}"]
        if "object_id_accuracy" in row:
            bits.append(f"object-id accuracy {_pct(row['object_id_accuracy'])}")
        if "position_mse" in row:
            bits.append(f"position MSE {_num(row['position_mse'] * 1e4, '.1f')}e-4")
        if "mig" in row:
            bits.append(f"MIG {_num(row['mig'], '.2f')}")
        if "dci_disentanglement" in row:
            bits.append(f"DCI-D {_num(row['dci_disentanglement'], '.2f')}")
        if row.get("standard_sample_size") is False:
            bits.append(f"MIG/DCI on {row['num_samples']} samples (below the standard 10,000)")
        lines.append(f"  {name}: " + ", ".join(bits))
    lines.append(out["latent_usage"].get("text", ""))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vase-rl`` command; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    sub = parser._subparsers._group_actions[0].choices[args.command]  # type: ignore[union-attr]
    try:
        if getattr(args, "settings", None) is not None:
            # the file's values become defaults, so options given on the command line still win
            sub.set_defaults(**_settings_defaults(args.settings, sub))
            args = parser.parse_args(argv)
        args._command = "vase-rl " + shlex.join(argv)
        return int(args.func(args) or 0)
    except CLIError as err:
        sub.print_usage(sys.stderr)
        print(f"vase-rl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
