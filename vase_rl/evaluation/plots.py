"""Figures of a continual-learning run, as PNG files (matplotlib, no display needed).

The VASE paper's figures (Achille et al. 2018, figs. 2, 3, 5, 6) at any scale:

* :func:`plot_traversals`: latent traversals per domain; rows are latents, ordered and
  coloured by their history (used in this domain and an earlier one = *reused*, new with this
  domain = *added*, used only by earlier domains = *frozen*, never used = *unused*);
* :func:`plot_cross_domain_reconstructions`: images of every data domain reconstructed as every
  domain the learner knows;
* :func:`plot_atypicality`: the atypicality profile alpha_n over training with the mask
  thresholds lambda_0 < lambda < lambda_1, domain boundaries, and inferred vs true domain;
* :func:`plot_probe_curves`: probe accuracy / position MSE per domain over training with the
  domain boundaries (online probes as lines, refit probes as markers);
* :func:`plot_ablation`: the change in object-id accuracy of every ablation (mean and spread);
* :func:`plot_run`: all of the above from a run folder written by
  :func:`vase_rl.evaluation.experiment.run_experiment`.

Figures are built with :class:`matplotlib.figure.Figure` directly (not ``pyplot``), so plotting
never changes the caller's backend or global state. Every function returns the written path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "USAGE_COLOURS",
    "plot_traversals",
    "plot_cross_domain_reconstructions",
    "plot_atypicality",
    "plot_probe_curves",
    "plot_domain_inference",
    "plot_ablation",
    "plot_run",
    "latent_order",
    "FIGURES",
]

#: Colours of the latent usage labels (shared with the paper's convention: green = new).
USAGE_COLOURS = {"added": "#2ca02c", "reused": "#1f77b4", "frozen": "#7f7f7f", "unused": "#d0d0d0"}
_SEGMENT_COLOURS = ("#fbe9e7", "#e3f2fd", "#e8f5e9", "#fff8e1", "#f3e5f5", "#e0f7fa", "#fce4ec")


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - matplotlib is a dev/plots dependency
        raise ImportError("plotting needs matplotlib: pip install 'vase-rl[plots]'") from err
    return Figure(figsize=(width, height), dpi=100)


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path


def _as_gray(img: np.ndarray) -> np.ndarray:
    """(C, H, W) float -> (H, W) or (H, W, 3) for imshow."""
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 3 and img.shape[0] in (1, 3):
        img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
    elif img.ndim == 3 and img.shape[-1] in (1, 3):
        img = img[..., 0] if img.shape[-1] == 1 else img
        if img.dtype == np.uint8 or img.max() > 1.0:
            img = img / 255.0
    return np.clip(img, 0.0, 1.0)


def _to_float_chw(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = np.transpose(x, (0, 3, 1, 2))
    x = x.astype(np.float32)
    if np.asarray(images).dtype == np.uint8:
        x = x / 255.0
    return x


def _mosaic(tiles: np.ndarray, pad: int = 1) -> np.ndarray:
    """(rows, cols, H, W[, 3]) -> one image with ``pad`` white pixels between tiles."""
    r, c, h, w = tiles.shape[:4]
    extra = tiles.shape[4:]
    out = np.ones((r * (h + pad) - pad, c * (w + pad) - pad, *extra), dtype=np.float32)
    for i in range(r):
        for j in range(c):
            out[i * (h + pad) : i * (h + pad) + h, j * (w + pad) : j * (w + pad) + w] = tiles[i, j]
    return out


def latent_order(labels_by_domain: Mapping[Any, Sequence[str]], latent_dim: int) -> list[int]:
    """Row order of a traversal figure: latents in use by some domain first, grouped by the
    first domain that used them (in the order the domains were seen), then the unused ones."""
    first: dict[int, int] = {}
    for k, labels in enumerate(labels_by_domain.values()):
        for n, lab in enumerate(labels):
            if lab in ("added", "reused") and n not in first:
                first[n] = k
    used = sorted(first, key=lambda n: (first[n], n))
    return used + [n for n in range(latent_dim) if n not in first]


# ---------------------------------------------------------------------------------------------
# model figures


def _assigned(learner, images) -> tuple[np.ndarray, int]:
    from vase_rl.evaluation.experiment import probe_latents

    return probe_latents(learner, images)


def _usage_labels(learner) -> dict[int, list[str]]:
    from vase_rl.evaluation.experiment import _latent_usage

    u = _latent_usage(learner)
    return {int(d): labs for d, labs in u["labels"].items()}


def plot_traversals(
    learner,
    images_by_domain: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    *,
    values: Sequence[float] = (-2.0, -1.33, -0.67, 0.0, 0.67, 1.33, 2.0),
    latents: Sequence[int] | None = None,
    title: str | None = None,
) -> Path:
    """Latent traversals, one panel per data domain (the paper's fig. 2 top).

    For each domain the first image is encoded (the learner's own view: posterior means under
    the mask of the domain it infers, see :func:`~vase_rl.evaluation.experiment.probe_latents`),
    then each latent in turn is set to each of ``values`` and the result decoded as the inferred
    domain. Rows are latents in :func:`latent_order`; each row is labelled ``z<n>`` and its
    usage label for the inferred domain, in :data:`USAGE_COLOURS`.
    """
    if not images_by_domain:
        raise ValueError("images_by_domain is empty: give at least one domain's images")
    n_lat = learner.config.latent_dim
    labels = _usage_labels(learner)
    order = list(latents) if latents is not None else latent_order(labels, n_lat)
    vals = np.asarray(values, dtype=np.float32)
    panels = []
    for name, images in images_by_domain.items():
        seed = np.asarray(images)[:1]
        z, dom = _assigned(learner, seed)
        grid = np.repeat(z[None], len(order) * len(vals), axis=0)[:, 0].copy()
        for i, n in enumerate(order):
            grid[i * len(vals) : (i + 1) * len(vals), n] = vals
        dom_id = min(dom, max(learner.num_domains - 1, 0))
        imgs = learner.decode(grid, domain=dom_id)
        tile = _as_gray(imgs[0])
        tiles = np.stack([_as_gray(im) for im in imgs]).reshape(len(order), len(vals), *tile.shape)
        first = np.ones((len(order), 1, *tile.shape), dtype=np.float32)  # the input, top left
        first[0, 0] = _as_gray(_to_float_chw(seed)[0])
        panels.append((name, dom_id, _mosaic(np.concatenate([first, tiles], axis=1))))

    n_cols = len(vals) + 1
    fig = _figure(0.6 + (1.3 + 0.3 * n_cols) * len(panels), 1.2 + 0.3 * len(order))
    axes = fig.subplots(1, len(panels), squeeze=False, gridspec_kw={"wspace": 0.45})[0]
    for ax, (name, dom_id, mosaic) in zip(axes, panels):
        ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        h = mosaic.shape[0] / len(order)
        ax.set_yticks([(i + 0.5) * h for i in range(len(order))])
        dom_labels = labels.get(dom_id, ["unused"] * n_lat)
        ax.set_yticklabels([f"z{n} {dom_labels[n]}" for n in order], fontsize=7)
        for tick, n in zip(ax.get_yticklabels(), order):
            tick.set_color(USAGE_COLOURS.get(dom_labels[n], "black"))
        w = mosaic.shape[1] / n_cols
        ax.set_xticks([(j + 0.5) * w for j in range(n_cols)])
        ax.set_xticklabels(["input"] + [f"{v:g}" for v in vals], fontsize=6, rotation=90)
        ax.tick_params(length=0)
        ax.set_title(f"{name}\n(decoded as domain {dom_id})", fontsize=9)
    handles = [_patch(c, k) for k, c in USAGE_COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _patch(colour: str, label: str):
    from matplotlib.patches import Patch

    return Patch(facecolor=colour, edgecolor="black", linewidth=0.3, label=label)


def plot_cross_domain_reconstructions(
    learner,
    images_by_domain: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    *,
    num_images: int = 6,
    title: str | None = None,
) -> Path:
    """Images of each data domain (top row of a block) reconstructed as every learnt domain
    (the paper's fig. 6): encoded with that domain's mask and decoded with its one-hot."""
    if not images_by_domain:
        raise ValueError("images_by_domain is empty: give at least one domain's images")
    k = max(learner.num_domains, 1)
    rows, names = [], []
    for name, images in images_by_domain.items():
        x = np.asarray(images)[:num_images]
        orig = _to_float_chw(x)
        rows.append(np.stack([_as_gray(im) for im in orig]))
        names.append(f"{name}: input")
        for d in range(k):
            rec = learner.reconstruct(x, domain=d if learner.num_domains else None)
            rows.append(np.stack([_as_gray(im) for im in rec]))
            names.append(f"as domain {d}")
    tiles = np.stack(rows)
    mosaic = _mosaic(tiles)
    fig = _figure(1.5 + 0.45 * tiles.shape[1], 0.5 + 0.42 * tiles.shape[0])
    ax = fig.subplots()
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    h = mosaic.shape[0] / tiles.shape[0]
    ax.set_yticks([(i + 0.5) * h for i in range(tiles.shape[0])])
    ax.set_yticklabels(names, fontsize=7)
    for tick, nm in zip(ax.get_yticklabels(), names):
        if nm.endswith("input"):
            tick.set_fontweight("bold")
    ax.set_xticks([])
    ax.set_title(title or "cross-domain reconstructions", fontsize=9)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# curves


def _segments_background(ax, segments: Sequence[Sequence[Any]] | None, label: bool = True) -> None:
    if not segments:
        return
    names = list(dict.fromkeys(s[0] for s in segments))
    for s in segments:
        name, start, stop = s[0], s[1], s[2]
        ax.axvspan(start, stop, color=_SEGMENT_COLOURS[names.index(name) % len(_SEGMENT_COLOURS)], zorder=0, lw=0)
        if start > 0:
            ax.axvline(start, color="black", lw=0.8, ls="--", zorder=1)
        if label:
            ax.text(
                (start + stop) / 2,
                1.0,
                str(name),
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=7,
            )


def plot_atypicality(
    atypicality: Any,
    path: str | os.PathLike,
    *,
    steps: Sequence[int] | None = None,
    threshold: float | None = None,
    low: float | None = None,
    high: float | None = None,
    segments: Sequence[Sequence[Any]] | None = None,
    inferred: Sequence[int] | None = None,
    true: Sequence[int] | None = None,
    title: str | None = None,
) -> Path:
    """The atypicality profile (paper fig. 2 bottom): alpha_n per latent over training, the
    threshold lambda (dashed) and the hysteresis band [lambda_0, lambda_1] (shaded), domain
    segments in the background; with ``inferred``/``true`` a second panel compares the
    inferred domain id with the true one."""
    rows = [r for r in atypicality if r is not None]
    if not rows:
        raise ValueError("no atypicality values to plot")
    width = len(rows[0])
    arr = np.array([[np.nan] * width if r is None else r for r in atypicality], dtype=np.float64)
    x = np.arange(arr.shape[0]) if steps is None else np.asarray(steps)
    two = inferred is not None
    fig = _figure(9, 5.2 if two else 3.4)
    axes = fig.subplots(
        2 if two else 1, 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": [3, 1.2]} if two else None
    )[:, 0]
    ax = axes[0]
    _segments_background(ax, segments)
    cmap = _cmap("tab20")
    floor = 1e-3
    for n in range(arr.shape[1]):
        ax.plot(x, np.clip(_smooth(arr[:, n]), floor, None), lw=0.8, color=cmap(n % 20), label=f"z{n}")
    if low is not None and high is not None:
        ax.axhspan(max(low, floor), max(high, floor), color="black", alpha=0.08, lw=0)
    if threshold is not None:
        ax.axhline(max(threshold, floor), color="black", ls="--", lw=1.0, label="λ")
    ax.set_yscale("log")
    ax.set_ylabel("atypicality α_n")
    ax.set_xlim(x[0], x[-1])
    ax.legend(
        fontsize=6, ncol=max(1, arr.shape[1] // 8 + 1), loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False
    )
    if title:
        ax.set_title(title, fontsize=9, pad=12)
    if two:
        ax2 = axes[1]
        _segments_background(ax2, segments, label=False)
        if true is not None:
            ax2.step(x, np.asarray(true), where="post", color="black", lw=1.5, label="true domain")
        ax2.step(x, np.asarray(inferred), where="post", color="#d62728", lw=1.0, ls="-", label="inferred domain")
        ax2.set_ylabel("domain id")
        ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    axes[-1].set_xlabel("update")
    return _save(fig, path)


def _smooth(v: np.ndarray, k: int = 5) -> np.ndarray:
    if v.size < 2 * k:
        return v
    out = np.convolve(np.nan_to_num(v, nan=np.nanmean(v) if np.isfinite(v).any() else 0.0), np.ones(k) / k, mode="same")
    out[: k // 2] = v[: k // 2]
    out[-(k // 2) :] = v[-(k // 2) :]
    return out


def _cmap(name: str):
    from matplotlib import colormaps

    return colormaps[name]


def plot_domain_inference(
    inferred: Sequence[int],
    true: Sequence[int],
    path: str | os.PathLike,
    *,
    segments: Sequence[Sequence[Any]] | None = None,
    title: str | None = None,
) -> Path:
    """Inferred vs true domain id per update."""
    x = np.arange(len(inferred))
    fig = _figure(9, 2.2)
    ax = fig.subplots()
    _segments_background(ax, segments)
    ax.step(x, np.asarray(true), where="post", color="black", lw=1.5, label="true")
    ax.step(x, np.asarray(inferred), where="post", color="#d62728", lw=1.0, label="inferred")
    ax.set_xlabel("update")
    ax.set_ylabel("domain id")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    if title:
        ax.set_title(title, fontsize=9, pad=12)
    return _save(fig, path)


def plot_probe_curves(
    records: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    segments: Sequence[Sequence[Any]] | None = None,
    title: str | None = None,
) -> Path:
    """Probe scores over training (paper fig. 2 bottom): one panel per task (object-id
    accuracy, position MSE), one line per domain (online probes) and markers for refit probes,
    domain segments in the background. ``records`` are :class:`ProbeTracker` records."""
    if not records:
        raise ValueError("no probe records to plot")
    tasks = list(dict.fromkeys(r["task"] for r in records))
    fig = _figure(9, 2.6 * len(tasks))
    axes = fig.subplots(len(tasks), 1, sharex=True, squeeze=False)[:, 0]
    domains = list(dict.fromkeys(r["domain"] for r in records))
    colours = {d: _cmap("tab10")(i % 10) for i, d in enumerate(domains)}
    for ax, task in zip(axes, tasks):
        _segments_background(ax, segments, label=ax is axes[0])
        rows = [r for r in records if r["task"] == task]
        metric = rows[0].get("metric", "")
        for d in domains:
            on = sorted((r["step"], r["value"]) for r in rows if r["domain"] == d and not r.get("refit"))
            ref = sorted((r["step"], r["value"]) for r in rows if r["domain"] == d and r.get("refit"))
            if on:
                ax.plot(*zip(*on), color=colours[d], lw=1.2, label=f"{d}")
            if ref:
                ax.plot(*zip(*ref), ls="none", marker="o", ms=4, mfc="white", color=colours[d], label=f"{d} (refit)")
        ax.set_ylabel(f"{task}\n{metric}", fontsize=8)
        if metric == "accuracy":
            ax.set_ylim(0, 1.02)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    axes[-1].set_xlabel("update")
    if title:
        axes[0].set_title(title, fontsize=9, pad=12)
    return _save(fig, path)


def plot_ablation(
    summary: Mapping[str, Any], path: str | os.PathLike, *, metric: str = "object_id_change", title: str | None = None
) -> Path:
    """Bars of one aggregated metric per variant of an ablation summary (mean, error bar = spread)."""
    rows = summary.get("variants") if isinstance(summary, Mapping) else None
    if not rows:
        raise ValueError("the ablation summary has no variants")
    names = [r["name"] for r in rows]
    means = np.array([_nan(r["metrics"].get(metric, {}).get("mean")) for r in rows])
    spread = np.array([_nan(r["metrics"].get(metric, {}).get("std")) for r in rows])
    scale = 100.0 if metric.startswith("object_id") or metric.startswith("refit") else 1.0
    fig = _figure(1.5 + 0.7 * len(rows), 3.2)
    ax = fig.subplots()
    colours = [
        "#2ca02c"
        if r.get("switches", {}).get("S") and r.get("switches", {}).get("D") and r.get("switches", {}).get("A")
        else "#7f7f7f"
        for r in rows
    ]
    ax.bar(range(len(rows)), means * scale, yerr=np.nan_to_num(spread) * scale, color=colours, capsize=3)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(names, rotation=40, ha="right", fontsize=7)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel(metric.replace("_", " ") + (" (%)" if scale == 100.0 else ""))
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


# ---------------------------------------------------------------------------------------------
# a whole run


FIGURES = ("traversals", "reconstructions", "atypicality", "probes", "domains")


def plot_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    which: Sequence[str] = FIGURES,
    num_images: int = 6,
    prefix: str = "",
) -> dict[str, Path]:
    """Every figure of a run folder (see :data:`FIGURES`) into ``out_dir`` (default
    ``<run_dir>/figures``); returns ``{figure: path}``. Model figures need the run's final
    ``vase.pt`` (a finished run) or its checkpoint."""
    from vase_rl.evaluation.experiment import RUN_FILES, load_run

    unknown = sorted(set(which) - set(FIGURES))
    if unknown:
        raise ValueError(f"unknown figure(s) {unknown}; choose from {list(FIGURES)}")
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "figures"
    results = run.get("results", {})
    segments = results.get("segments")
    history = run.get("history")
    name = Path(run_dir).name
    paths: dict[str, Path] = {}
    if "atypicality" in which:
        if history is None:
            raise FileNotFoundError(f"{run_dir} has no {RUN_FILES['history']} (the run has not finished)")
        cfg = run.get("config", {})
        paths["atypicality"] = plot_atypicality(
            history["atypicality"],
            out / f"{prefix}atypicality.png",
            steps=history["step"],
            threshold=cfg.get("atypicality_threshold"),
            low=cfg.get("mask_threshold_low"),
            high=cfg.get("mask_threshold_high"),
            segments=segments,
            inferred=history["domain"],
            true=history["true_domain"],
            title=f"atypicality profile ({name})",
        )
    if "domains" in which and history is not None:
        paths["domains"] = plot_domain_inference(
            history["domain"],
            history["true_domain"],
            out / f"{prefix}domains.png",
            segments=segments,
            title=f"domain inference ({name})",
        )
    if "probes" in which:
        if "probes" not in run:
            raise FileNotFoundError(f"{run_dir} has no {RUN_FILES['probes']} (the run has not finished)")
        paths["probes"] = plot_probe_curves(
            run["probes"], out / f"{prefix}probes.png", segments=segments, title=f"probes on the latents ({name})"
        )
    model_figs = [w for w in which if w in ("traversals", "reconstructions")]
    if model_figs:
        learner = _load_learner(Path(run_dir))
        images = _domain_images(run, learner, num_images)
        if "traversals" in which:
            paths["traversals"] = plot_traversals(
                learner, images, out / f"{prefix}traversals.png", title=f"latent traversals ({name})"
            )
        if "reconstructions" in which:
            paths["reconstructions"] = plot_cross_domain_reconstructions(
                learner,
                images,
                out / f"{prefix}reconstructions.png",
                num_images=num_images,
                title=f"cross-domain reconstructions ({name})",
            )
    return paths


def _load_learner(run_dir: Path):
    from vase_rl.evaluation.experiment import RUN_FILES
    from vase_rl.learner import VASE

    model = run_dir / RUN_FILES["model"]
    if model.is_file():
        return VASE.load(model, device="cpu")
    ckpt = run_dir / RUN_FILES["checkpoint"]
    if ckpt.is_file():
        import torch

        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        return VASE.from_state_dict(state["learner"], device="cpu", source=str(ckpt))
    raise FileNotFoundError(f"{run_dir} has neither {RUN_FILES['model']} nor {RUN_FILES['checkpoint']}")


def _domain_images(run: Mapping[str, Any], learner, n: int) -> dict[str, np.ndarray]:
    from vase_rl.envs import make_domain

    exp = run["experiment"]
    names = run.get("results", {}).get("domain_names")
    if not names:
        from vase_rl.evaluation.experiment import parse_sequence

        names = list(dict.fromkeys(i if isinstance(i, str) else i[0] for i in parse_sequence(exp["sequence"])))
    c, h, _ = learner.config.image_shape
    out = {}
    for k, name in enumerate(names):
        fam = make_domain(name, image_size=h, channels=c, seed=exp.get("family_seed", 0))
        out[name] = fam.sample(n, np.random.default_rng([exp.get("seed", 0), 23, k]))[0]
    return out
