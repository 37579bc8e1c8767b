"""The ablation study of the VASE paper (tables 1 and 3): every switch combination, many seeds.

VASE has three switches (``VASE_SPEC.md`` §9): **S** domain inference, **D** dreaming, **A** the
atypicality mask, and two objectives (disentangled capacity objective, or the entangled plain
VAE). :func:`ablation_variants` names the combinations; :func:`run_ablation` trains every
(variant, seed) with :func:`~vase_rl.evaluation.experiment.run_experiment` (optionally in
parallel processes, each on one thread), and writes

* ``ablation.json``: every run's headline numbers and, per variant, the mean and spread
  (sample standard deviation over seeds) of each metric;
* ``ablation.md``: a markdown table in the layout of the paper's table 1.

Runs live in ``<out>/runs/<variant>/seed<k>`` and are resumable: finished runs are read back,
interrupted ones continue from their checkpoints.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from vase_rl import provenance
from vase_rl.config import PAPER, VASEConfig
from vase_rl.evaluation.experiment import RUN_CODE, _write_json, run_experiment, to_jsonable
from vase_rl.provenance import machine_summary, short_commit

__all__ = [
    "SWITCH_COMBOS",
    "DEFAULT_VARIANTS",
    "ablation_variants",
    "variant_config",
    "run_ablation",
    "summarise_ablation",
    "ablation_table",
    "domain_inference_table",
    "degenerate_reasons",
    "ranking",
    "goals_line",
    "QUICK",
    "QUICK_LIMITS",
    "METRICS",
]

#: The eight S/D/A combinations, from the full model to none (paper's table 1 order).
SWITCH_COMBOS = ("SDA", "SD", "SA", "DA", "S", "D", "A", "-")

#: The default grid: the 8 disentangled combinations (SDA = VASE, "-" = CCI-VAE) plus the
#: entangled full model and the entangled baseline (a plain VAE): 10 variants.
DEFAULT_VARIANTS = tuple(SWITCH_COMBOS) + ("SDA/entangled", "-/entangled")

_DISPLAY = {
    "SDA": "VASE (SDA)",
    "-": "CCI-VAE (-)",
    "SDA/entangled": "entangled VASE (SDA)",
    "-/entangled": "entangled VAE (-)",
}

#: The metrics aggregated over seeds: name -> (path in results.json, scale for the table).
METRICS: dict[str, tuple[tuple[str, ...], float]] = {
    "object_id_best": (("object_id", "best"), 100.0),
    "object_id_change": (("object_id", "change"), 100.0),
    "position_best": (("position", "best"), 1e4),
    "position_change": (("position", "change"), 1e4),
    "refit_change": (("object_id", "refit_forgetting"), -100.0),
    "average_accuracy": (("object_id", "average_accuracy"), 100.0),
    "backward_transfer": (("object_id", "backward_transfer"), 100.0),
    "chaudhry_forgetting": (("object_id", "chaudhry_forgetting"), 100.0),
    "boundary_f1": (("domain_inference", "boundary", "f1"), 1.0),
    "boundary_precision": (("domain_inference", "boundary", "precision"), 1.0),
    "boundary_recall": (("domain_inference", "boundary", "recall"), 1.0),
    "boundary_delay": (("domain_inference", "boundary", "mean_delay"), 1.0),
    "boundary_matched": (("domain_inference", "boundary", "num_matched"), 1.0),
    "boundary_true": (("domain_inference", "boundary", "num_true"), 1.0),
    "reidentification": (("domain_inference", "reidentification", "rate"), 1.0),
    "ari": (("domain_inference", "agreement", "ari"), 1.0),
    "num_domains": (("domain_inference", "num_domains"), 1.0),
    "latents_in_use": (("latent_usage", "num_in_use"), 1.0),
    "final_recon": (("final_recon",), 1.0),
    "wall_time_s": (("wall_time_s",), 1.0),
}

#: What ``ablate --quick`` can and cannot show (printed by the CLI before and after the run).
QUICK_LIMITS = (
    "--quick runs every variant for one seed at 16x16 with 8 latents, a quarter-width network and 30 updates per "
    "domain. It CAN show that the whole pipeline runs end to end (training, probes, domain-inference scores, "
    "latent usage, tables, JSON, resumption) and fills every column. It CANNOT show forgetting differences, "
    "domain inference (no switch is expected to be detected at this scale) or disentanglement: its numbers "
    "carry no meaning and its goals are reported as not assessable whenever a run is degenerate."
)

#: Settings of ``ablate --quick``: tiny images and streams; all 10 variants take ~15 s on two
#: free CPU cores. For smoke tests, not for conclusions.
QUICK: dict[str, Any] = {
    "config_overrides": {
        "image_shape": (1, 16, 16),
        "batch_size": 32,
        "latent_dim": 8,
        "width": 0.25,
        "capacity_max": 10.0,
        "capacity_increment": 1.0 / 60,
        "domain_warmup": 8,
        "patience": 2,
        "snapshot_every": 10,
        "used_refresh_every": 10,
        "used_estimation_steps": 10,
    },
    "steps_per_domain": 30,
    "seeds": (0,),
    "run_kwargs": {
        "eval_every": 10,
        "eval_size": 64,
        "refit_steps": 30,
        "refit_size": 128,
        "probe_batch_size": 32,
        "disentanglement": False,
    },
}


def _parse_variant(name: str) -> tuple[str, str]:
    combo, _, objective = name.partition("/")
    objective = objective or "disentangled"
    if combo not in SWITCH_COMBOS:
        raise ValueError(
            f"unknown variant {name!r}: the switch part must be one of {list(SWITCH_COMBOS)} "
            "(e.g. 'SDA', 'SD', '-'), optionally followed by '/entangled' or '/disentangled'"
        )
    if objective not in ("disentangled", "entangled"):
        raise ValueError(f"unknown objective in variant {name!r}: use '/entangled' or '/disentangled'")
    return combo, objective


def display_name(name: str) -> str:
    combo, objective = _parse_variant(name)
    key = combo if objective == "disentangled" else f"{combo}/entangled"
    if key in _DISPLAY:
        return _DISPLAY[key]
    return combo if objective == "disentangled" else f"entangled {combo}"


def ablation_variants(
    objectives: Sequence[str] = ("disentangled",), include_entangled_baselines: bool = True
) -> list[str]:
    """Variant names: every switch combination for each objective in ``objectives``; with only
    the disentangled objective and ``include_entangled_baselines``, also the entangled full
    model and plain VAE (the 10-variant default, :data:`DEFAULT_VARIANTS`)."""
    out: list[str] = []
    for obj in objectives:
        if obj not in ("disentangled", "entangled"):
            raise ValueError(f"objective must be 'disentangled' or 'entangled', got {obj!r}")
        out += [c if obj == "disentangled" else f"{c}/entangled" for c in SWITCH_COMBOS]
    if include_entangled_baselines:
        out += [v for v in ("SDA/entangled", "-/entangled") if v not in out]
    return out


def variant_config(base: VASEConfig, name: str) -> VASEConfig:
    """``base`` with the switches and objective of variant ``name`` (e.g. ``"SA"``,
    ``"-/entangled"``). The entangled objective uses table 2's entangled kappa (1.1), the
    disentangled one the disentangled kappa (1.5), unless ``base`` already sets another."""
    combo, objective = _parse_variant(name)
    kappa = base.kappa
    if objective != base.objective and base.kappa in (PAPER["kappa_disentangled"], PAPER["kappa_entangled"]):
        kappa = PAPER["kappa_entangled"] if objective == "entangled" else PAPER["kappa_disentangled"]
    return base.replace(
        domain_inference="S" in combo,
        dreaming="D" in combo,
        atypicality_mask="A" in combo,
        objective=objective,
        kappa=kappa,
        preset_name=f"{base.preset_name}:{name}",
    )


def _dir_name(name: str) -> str:
    return name.replace("/", "_").replace("-", "none")


def _one_run(args: tuple) -> tuple[str, int, dict[str, Any]]:
    import torch

    torch.set_num_threads(1)
    name, seed, cfg_dict, sequence, steps, out, kwargs = args
    cfg = VASEConfig.from_dict(cfg_dict)
    res = run_experiment(cfg, sequence, steps, seed, out, **kwargs)
    return name, seed, res


def run_ablation(
    base: VASEConfig,
    sequence: Sequence[Any] | str,
    steps_per_domain: int,
    seeds: Sequence[int],
    out_dir: str | os.PathLike,
    *,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    jobs: int = 1,
    run_kwargs: Mapping[str, Any] | None = None,
    title: str | None = None,
    on_result: Callable[[str, int, dict[str, Any]], Any] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Train every (variant, seed), then write ``ablation.json`` and ``ablation.md``.

    ``run_kwargs`` go to :func:`run_experiment` (eval_every, refit_steps, ...); ``jobs`` > 1
    runs that many experiments at once in separate processes (one torch thread each).
    ``on_result(variant, seed, results)`` is called as runs finish. ``command`` is recorded in
    the provenance of ``ablation.json`` and of every run (default: this process's command
    line). Returns the summary.
    """
    if not seeds:
        raise ValueError("give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat: {list(seeds)}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    variants = list(dict.fromkeys(variants))
    for v in variants:
        _parse_variant(v)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kwargs = dict(run_kwargs or {})
    command = command if command is not None else provenance.collect()["command"]
    kwargs.setdefault("command", command)
    code = provenance.code_state(RUN_CODE)
    wall_start = time.time()
    tasks = []
    for name in variants:
        cfg = variant_config(base, name)
        for seed in seeds:
            run_dir = out / "runs" / _dir_name(name) / f"seed{seed}"
            tasks.append((name, int(seed), cfg.to_dict(), sequence, steps_per_domain, str(run_dir), kwargs))
    t0 = time.perf_counter()
    results: dict[tuple[str, int], dict[str, Any]] = {}
    if jobs == 1:
        for task in tasks:
            name, seed, res = _one_run(task)
            results[(name, seed)] = res
            if on_result is not None:
                on_result(name, seed, res)
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_one_run, t) for t in tasks]
            for fut in as_completed(futures):
                name, seed, res = fut.result()
                results[(name, seed)] = res
                if on_result is not None:
                    on_result(name, seed, res)
    summary = summarise_ablation(results, variants, seeds)
    summary.update(
        {
            "sequence": sequence
            if isinstance(sequence, str)
            else [list(i) if isinstance(i, tuple) else i for i in sequence],
            "steps_per_domain": steps_per_domain,
            "base_config": base.to_dict(),
            "run_kwargs": {k: v for k, v in kwargs.items() if k != "command"},
            "wall_time_s": round(time.perf_counter() - t0, 1),
            "title": title,
        }
    )
    summary["provenance"] = provenance.collect(
        command=command, seeds=list(seeds), started=wall_start, code_state=code, jobs=jobs
    )
    _write_json(out / "ablation.json", summary)
    text = ablation_table(summary, title=title)
    if any(r["switches"]["S"] for r in summary["variants"]):
        text += "\n\nDomain inference (variants with S):\n\n" + domain_inference_table(summary)
    (out / "ablation.md").write_text(text + "\n")
    return json.loads(json.dumps(to_jsonable(summary)))


def _get(d: Mapping[str, Any], path: Sequence[str]) -> float:
    cur: Any = d
    for key in path:
        if not isinstance(cur, Mapping) or key not in cur:
            return float("nan")
        cur = cur[key]
    return float("nan") if cur is None else float(cur)


def summarise_ablation(
    results: Mapping[tuple[str, int], Mapping[str, Any]], variants: Sequence[str], seeds: Sequence[int]
) -> dict[str, Any]:
    """Per variant: the headline numbers of every seed and their mean, std (ddof=1; 0 with one
    seed), min and max. Metric values are in the units of ``results.json`` (fractions, MSE)."""
    rows = []
    for name in variants:
        combo, objective = _parse_variant(name)
        per_seed = {}
        for seed in seeds:
            res = results.get((name, seed))
            if res is None:
                continue
            per_seed[str(seed)] = {m: _get(res, path) for m, (path, _) in METRICS.items()}
            if "S" not in combo:
                # one domain for ever: a returning domain trivially keeps id 0, which says nothing
                per_seed[str(seed)]["reidentification"] = float("nan")
            per_seed[str(seed)]["degenerate"] = degenerate_reasons(per_seed[str(seed)], "S" in combo)
        degenerate = {k: v["degenerate"] for k, v in per_seed.items() if v["degenerate"]}
        metrics = {}
        for m in METRICS:
            vals = np.array([v[m] for v in per_seed.values()], dtype=np.float64)
            ok = vals[np.isfinite(vals)]
            metrics[m] = {
                "mean": float(ok.mean()) if ok.size else None,
                "std": float(ok.std(ddof=1)) if ok.size > 1 else (0.0 if ok.size else None),
                "min": float(ok.min()) if ok.size else None,
                "max": float(ok.max()) if ok.size else None,
                "n": int(ok.size),
            }
        rows.append(
            {
                "name": display_name(name),
                "variant": name,
                "objective": objective,
                "switches": {"S": "S" in combo, "D": "D" in combo, "A": "A" in combo},
                "metrics": metrics,
                "per_seed": per_seed,
                "degenerate_runs": degenerate,
                "num_runs": len(per_seed),
            }
        )
    return {"variants": rows, "seeds": list(seeds), "goals": _goals(rows)}


def degenerate_reasons(run: Mapping[str, float], infers_domains: bool) -> list[str]:
    """Why a run's forgetting numbers cannot count as a result: ``"no latents in use"`` (the
    representation collapsed: nothing to forget, so little forgetting), ``"no switch detected"``
    (a variant with domain inference that never found a true switch: it ran as a single-domain
    learner), or ``"not measured"`` (the numbers that would tell are missing). Empty when the run
    is sound. Variants without S detect no switch by design, and are not marked for it."""
    reasons = []
    in_use = run.get("latents_in_use", float("nan"))
    if not np.isfinite(in_use):
        reasons.append("latents in use not measured")
    elif in_use <= 0:
        reasons.append("no latents in use")
    if infers_domains:
        true, matched = run.get("boundary_true", float("nan")), run.get("boundary_matched", float("nan"))
        if not (np.isfinite(true) and np.isfinite(matched)):
            reasons.append("switch detection not measured")
        elif true > 0 and matched == 0:
            reasons.append("no switch detected")
    return reasons


def ranking(rows: Sequence[Mapping[str, Any]], metric: str = "object_id_change") -> list[dict[str, Any]]:
    """Variants ordered best first by the mean of ``metric`` (higher is better: the signed
    change), but a variant's degenerate runs (:func:`degenerate_reasons`) rank it down first: the
    key is (share of degenerate runs, -mean). A collapsed variant forgets little because it learnt
    little, so it can never win by collapsing. Variants without the metric are left out."""
    out = []
    for r in rows:
        mean = r["metrics"][metric]["mean"]
        if mean is None:
            continue
        share = len(r.get("degenerate_runs", {})) / max(1, r.get("num_runs", 1))
        out.append({"variant": r["variant"], "mean": mean, "degenerate_share": share})
    out.sort(key=lambda x: (x["degenerate_share"], -x["mean"]))
    return out


def _goals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The paper's claims, checked on this ablation. They are only *assessable* when VASE (SDA)
    and CCI-VAE (-) both ran and no run of either is degenerate (:func:`degenerate_reasons`):
    otherwise ``assessable`` is False, ``not_assessable_because`` says why, and every claim is
    None rather than a success read off a collapsed run."""
    by = {r["variant"]: r for r in rows}

    def mean(v: str, m: str) -> float | None:
        return by[v]["metrics"][m]["mean"] if v in by else None

    reasons = []
    for v, label in (("SDA", "VASE (SDA)"), ("-", "CCI-VAE (-)")):
        if v not in by:
            reasons.append(f"{label} was not run")
        elif mean(v, "object_id_change") is None:
            reasons.append(f"{label} has no object-id change")
        for seed, why in by.get(v, {}).get("degenerate_runs", {}).items():
            reasons.append(f"{label} seed {seed}: {', '.join(why)}")
    out: dict[str, Any] = {"assessable": not reasons}
    if reasons:
        out["not_assessable_because"] = reasons
    vase, cci = mean("SDA", "object_id_change"), mean("-", "object_id_change")
    if vase is not None and cci is not None:
        out["vase_forgetting_pct"] = -100 * vase
        out["cci_vae_forgetting_pct"] = -100 * cci
    claim_half = None
    if not reasons:
        claim_half = bool(-vase <= 0.5 * -cci) if cci < 0 else bool(vase >= cci)
    out["vase_at_most_half_of_cci_vae"] = claim_half
    dis = [r for r in rows if r["objective"] == "disentangled"]
    ranked = ranking(dis)
    if ranked:
        out["ranking_by_change"] = [r["variant"] for r in ranked]
        out["degenerate_variants"] = [r["variant"] for r in ranked if r["degenerate_share"] > 0]
    names = [r["variant"] for r in ranked]
    out["vase_rank"] = 1 + names.index("SDA") if "SDA" in names and not reasons else None
    if "SDA" in by:
        out["vase_latents_in_use"] = mean("SDA", "latents_in_use")
        out["vase_boundary_f1"] = mean("SDA", "boundary_f1")
        out["vase_reidentification"] = mean("SDA", "reidentification")
    return out


def goals_line(goals: Mapping[str, Any]) -> str:
    """One honest line for the console: the claims when assessable, otherwise why not."""
    if not goals:
        return "goals: nothing to assess"
    if not goals.get("assessable"):
        return "goals: NOT ASSESSABLE on this run: " + "; ".join(goals.get("not_assessable_because", []))
    half = "met" if goals.get("vase_at_most_half_of_cci_vae") else "missed"
    return (
        f"goals: VASE forgets {goals['vase_forgetting_pct']:.1f} % vs CCI-VAE {goals['cci_vae_forgetting_pct']:.1f} % "
        f"(at most half: {half}); VASE ranks {goals.get('vase_rank')} of {len(goals.get('ranking_by_change', []))} "
        f"disentangled variants; latents in use {goals.get('vase_latents_in_use')}, boundary F1 "
        f"{goals.get('vase_boundary_f1')}"
    )


def _fmt(stat: Mapping[str, Any] | None, scale: float, digits: int = 1) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    m = stat["mean"] * scale
    s = (stat.get("std") or 0.0) * abs(scale)
    if stat.get("n", 0) > 1:
        return f"{m:.{digits}f} ± {s:.{digits}f}"
    return f"{m:.{digits}f}"


def ablation_table(summary: Mapping[str, Any], title: str | None = None) -> str:
    """The summary as a markdown table shaped like the paper's table 1 (mean ± std over seeds).

    Object-id columns in %, position MSE in 1e-4 (as in the paper); *change* is the paper's
    forgetting (max during a domain - min after it), signed so that a drop in accuracy is
    negative and a rise in MSE positive; *refit change* is the same for a probe retrained from
    scratch at every segment end; ACC and BWT count a returning domain once (BWT from its last
    training stage); domain inference: boundary F1, re-identification rate of returning domains
    (its own id, not one shared with another domain), domains allocated; latents in use after the
    run (of ``latent_dim``; one definition for every variant, see
    :data:`~vase_rl.evaluation.experiment.LATENTS_IN_USE_DEFINITION`); degenerate runs per
    variant; and the source line (commit, command, machine) when the summary has provenance."""
    cols = [
        ("object-id max (%)", "object_id_best", 100.0, 1),
        ("object-id change (%)", "object_id_change", 100.0, 1),
        ("position MSE min (1e-4)", "position_best", 1e4, 1),
        ("position MSE change (1e-4)", "position_change", 1e4, 1),
        ("refit change (%)", "refit_change", -100.0, 1),
        ("ACC (%)", "average_accuracy", 100.0, 1),
        ("BWT (%)", "backward_transfer", 100.0, 1),
        ("boundary F1", "boundary_f1", 1.0, 2),
        ("re-id", "reidentification", 1.0, 2),
        ("domains", "num_domains", 1.0, 1),
        ("latents in use", "latents_in_use", 1.0, 1),
    ]
    lines = []
    if title:
        lines += [f"**{title}**", ""]
    lines.append("| model | " + " | ".join(c[0] for c in cols) + " | degenerate runs |")
    lines.append("|---|" + "---:|" * len(cols) + "---:|")
    for r in summary["variants"]:
        m = r["metrics"]
        cells = [_fmt(m.get(key), scale, digits) for _, key, scale, digits in cols]
        bad = len(r.get("degenerate_runs", {}))
        cells.append(f"{bad}/{r.get('num_runs', 0)}")
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    seeds = summary.get("seeds", [])
    lines.append("")
    lines.append(
        f"Mean ± sample std over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}); "
        "– = not applicable (no moving domain, no returning domain, ...). Degenerate runs: no latent in use, "
        "or (variants with S) no true switch detected; they rank a variant down and make the goals not assessable."
    )
    prov = summary.get("provenance")
    if prov:
        lines.append(f"Source: ablation.json, {short_commit(prov)}, `{prov.get('command')}`; {machine_summary(prov)}.")
    return "\n".join(lines)


def domain_inference_table(summary: Mapping[str, Any]) -> str:
    """Domain-inference scores of the variants that infer domains (S on), mean ± std over seeds:
    boundary precision / recall / F1 (a detected switch may lag the true one by the run's
    tolerance; precision 0 when no switch was predicted), mean detection delay in updates (a
    missed switch counts until the learner did switch, or until its segment ended), adjusted
    Rand index of inferred vs true domain
    per update, re-identification rate of returning domains, and domains allocated."""
    cols = [
        ("boundary precision", "boundary_precision", 1.0, 2),
        ("boundary recall", "boundary_recall", 1.0, 2),
        ("boundary F1", "boundary_f1", 1.0, 2),
        ("delay (updates)", "boundary_delay", 1.0, 1),
        ("ARI", "ari", 1.0, 2),
        ("re-id", "reidentification", 1.0, 2),
        ("domains", "num_domains", 1.0, 1),
    ]
    lines = ["| model | " + " | ".join(c[0] for c in cols) + " |", "|---|" + "---:|" * len(cols)]
    for r in summary["variants"]:
        if not r["switches"]["S"]:
            continue
        m = r["metrics"]
        lines.append(f"| {r['name']} | " + " | ".join(_fmt(m.get(k), sc, d) for _, k, sc, d in cols) + " |")
    return "\n".join(lines)
