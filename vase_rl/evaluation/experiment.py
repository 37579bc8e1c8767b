"""One continual-learning experiment: train VASE on a domain stream and measure it as it learns.

:func:`run_experiment` is the paper's evaluation protocol (Achille et al. 2018, section 4 and
appendix A.5) at any scale. For every step of a :func:`vase_rl.envs.make_stream` stream it

1. runs one ``learner.update`` on the stream's batch and records the learner's scalars, the
   inferred and the true domain, and the atypicality of every latent;
2. trains one read-out probe per (task, domain) on the latents of a fresh batch of *every*
   domain of the sequence (object id = factor ``class`` for all domains, position = factors
   ``x``, ``y`` for domains whose sprites move); probes are 2 x 256 ReLU MLPs, Adam 6e-4, batch
   64, and never send a gradient into VASE (:class:`~vase_rl.evaluation.ProbeTracker`);
3. every ``eval_every`` steps and at the end of every segment, scores the probes on a fixed
   held-out set per domain; at each segment end it also scores a *refit* probe trained from
   scratch on the representation as it is then, which isolates representation loss from
   read-out drift.

The latents a probe sees are the learner's own view of that batch (:func:`probe_latents`): the
posterior means under the mask of the domain the learner infers for the batch.

Everything is written to ``out_dir`` as JSON (see :data:`RUN_FILES`): the settings, the per-step
history, the probe records, the domain-inference log and ``results.json`` with forgetting (the
paper's max - min, and ACC/BWT/Chaudhry from one accuracy matrix), refit forgetting,
domain-inference scores, latent usage and MIG/DCI. A checkpoint (learner, probes, history, step)
is written every ``checkpoint_every`` steps; a run restarted on the same folder continues from it
and gives the same numbers as an uninterrupted run, because batches, probe batches and every
random generator are functions of (seed, step) or saved state.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vase_rl import provenance
from vase_rl.config import VASEConfig
from vase_rl.evaluation.disentanglement import STANDARD_NUM_SAMPLES, STANDARD_NUM_TEST, dci_scores, mig_scores
from vase_rl.evaluation.domains import boundary_scores, domain_agreement, reidentification
from vase_rl.evaluation.forgetting import (
    Segment,
    accuracy_matrix,
    average_accuracy,
    backward_transfer,
    chaudhry_forgetting,
    paper_forgetting,
    paper_forgetting_per_domain,
    paper_max_accuracy,
)
from vase_rl.evaluation.latent_usage import latent_usage_table
from vase_rl.evaluation.probes import ProbeTracker
from vase_rl.learner import VASE

__all__ = [
    "LATENTS_IN_USE_DEFINITION",
    "RUN_CODE",
    "RUN_FILES",
    "TABLE1_SEQUENCE",
    "TABLE3_SEQUENCE",
    "parse_sequence",
    "probe_latents",
    "probe_view",
    "decoder_dependence",
    "measure_latent_usage",
    "matrix_measures",
    "run_experiment",
    "load_run",
    "summarise_run",
    "evaluate_learner",
    "to_jsonable",
]

#: The analogue of the paper's table 1 sequence (moving Fashion -> MNIST -> moving MNIST).
TABLE1_SEQUENCE: tuple[str, ...] = ("moving_shapes", "digits", "moving_digits")
#: The analogue of the paper's table 3 sequence (MNIST -> Fashion -> MNIST): a return.
TABLE3_SEQUENCE: tuple[str, ...] = ("digits", "garments", "digits")

#: Files a run folder holds.
RUN_FILES = {
    "experiment": "experiment.json",  # settings of the run (sequence, sizes, seed, ...)
    "config": "config.json",  # the VASEConfig
    "history": "history.json",  # per-step learner scalars, domains, atypicality
    "probes": "probes.json",  # ProbeTracker records (online and refit scores)
    "domain_log": "domain_log.json",  # learner.domain_log and learner.domains
    "results": "results.json",  # summary metrics (written last: its presence means "done")
    "checkpoint": "checkpoint.pt",  # learner + runner state for resuming
    "model": "vase.pt",  # the final learner (VASE.load)
}

OBJECT_TASK = "object_id"
POSITION_TASK = "position"
_CHECKPOINT_FORMAT = "vase_rl.experiment"
# settings that may differ between a run and its resumption
_RESUME_FREE = {"checkpoint_every", "progress", "device"}


# ---------------------------------------------------------------------------------------------
# small helpers


def to_jsonable(x: Any) -> Any:
    """Plain JSON data: numpy scalars/arrays to Python, NaN/inf to ``None``, tuples to lists."""
    if isinstance(x, Mapping):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, torch.Tensor):
        return to_jsonable(x.detach().cpu().tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer, int)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    return x


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(data), indent=1) + "\n")
    os.replace(tmp, path)


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


def parse_sequence(text: str | Sequence[Any]) -> list[Any]:
    """A stream sequence from ``"moving_shapes,digits:300,moving_digits"`` (``name[:steps]``,
    comma separated) or a list of names / ``(name, steps)`` pairs (returned as a list)."""
    if isinstance(text, str):
        items: list[Any] = []
        for raw in text.split(","):
            part = raw.strip()
            if not part:
                raise ValueError(f"empty item in sequence {text!r}")
            if ":" in part:
                name, steps = part.split(":", 1)
                try:
                    n = int(steps)
                except ValueError:
                    raise ValueError(f"steps of {part!r} must be an integer (name:steps)") from None
                if n < 1:
                    raise ValueError(f"steps of {part!r} must be positive")
                items.append((name.strip(), n))
            else:
                items.append(part)
        return items
    items = [tuple(i) if isinstance(i, (list, tuple)) else i for i in text]
    if not items:
        raise ValueError("sequence is empty")
    return items


def _make_stream(sequence, batch_size, seed, steps_per_domain, config: VASEConfig, family_seed: int):
    from vase_rl.envs import make_stream

    c, h, w = config.image_shape
    if h != w:
        raise ValueError(f"the sprite streams render square images; config.image_shape is {config.image_shape}")
    return make_stream(
        sequence,
        batch_size=batch_size,
        seed=seed,
        steps_per_domain=steps_per_domain,
        image_size=h,
        channels=c,
        family_seed=family_seed,
    )


def _factor_columns() -> dict[str, int]:
    from vase_rl.envs import FACTOR_NAMES

    return {name: i for i, name in enumerate(FACTOR_NAMES)}


# ---------------------------------------------------------------------------------------------
# the learner's view of a batch


@torch.no_grad()
def probe_view(
    learner: VASE, images: Any, generator: torch.Generator | None = None
) -> tuple[np.ndarray, int, np.ndarray]:
    """:func:`probe_latents` plus the mask it applied: ``(latents, domain, mask)``, the mask a
    ``(latent_dim,)`` bool array (True = active for this batch)."""
    from vase_rl.batches import as_image_batch
    from vase_rl.masking import atypicality, hysteresis_mask

    cfg = learner.config
    x = as_image_batch(images, cfg.image_shape, learner.device)
    learner.encoder.eval()
    learner.classifier.eval()
    mu, logvar, hidden = learner.encoder(x)
    mu, logvar = mu.float(), logvar.float()
    domain = learner.current_domain
    if cfg.domain_inference and learner.num_domains > 0:
        probs = learner.classifier(hidden.float())[:, : learner.num_domains].softmax(1).mean(0)
        domain = int(probs.argmax())
    if not cfg.atypicality_mask:
        mask = torch.ones(cfg.latent_dim, dtype=torch.bool, device=mu.device)
    elif cfg.domain_inference and learner.num_domains > 0:
        mask = torch.tensor(learner.domains[domain]["latent_mask"], dtype=torch.bool, device=mu.device)
    else:
        noise = torch.randn(mu.shape, generator=generator, device="cpu").to(mu.device)
        alpha = atypicality(mu + (0.5 * logvar).exp() * noise)
        previous = torch.as_tensor(learner.latent_mask, device=mu.device)
        mask = hysteresis_mask(alpha, previous, cfg.mask_threshold_low, cfg.mask_threshold_high)
    z = mu * mask.to(mu.dtype)
    return z.cpu().numpy().astype(np.float32), domain, mask.cpu().numpy().astype(bool)


def probe_latents(learner: VASE, images: Any, generator: torch.Generator | None = None) -> tuple[np.ndarray, int]:
    """The latents a read-out of ``images`` gets, and the domain the learner assigns the batch.

    * domain inference on (S): the classifier's batch vote s_hat (mean softmax over the
      domains seen, as in Algorithm 1) and s_hat's stored latent mask;
    * S off, atypicality mask on (A): the hysteresis mask the learner would compute on this very
      batch starting from the mask in force (its "mask as inference");
    * A off: every latent.

    Returns ``(posterior means with masked latents set to 0, domain id)``. No learner state
    changes (the networks are put in eval mode, like ``encode``).
    """
    z, domain, _ = probe_view(learner, images, generator)
    return z, domain


def decoder_dependence(
    learner: VASE, images: Any, domain: int, mask: Any, *, generator: torch.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Which latents the decoder of ``domain`` depends on to reconstruct ``images`` (spec §5).

    The noise test of the learner's own used-latent estimate, run here from the outside so that
    it is the same for every variant: with the networks frozen, per-latent noise scales sigma_n
    are fitted to minimise E[-log p(x | z + eps, domain)] - sum_n log sigma_n, z = the posterior
    means under ``mask`` (masked latents at the prior mean 0), for ``used_estimation_steps``
    Adam steps; a latent is used when sigma_n <= ``used_noise_threshold`` (the learner's
    settings). No learner state changes and no gradient reaches the networks.
    Returns ``(used (latent_dim,) bool, sigma (latent_dim,) float)``.
    """
    from vase_rl.batches import as_image_batch
    from vase_rl.masking import estimate_used_latents
    from vase_rl.objectives import reconstruction_nll

    cfg = learner.config
    x = as_image_batch(images, cfg.image_shape, learner.device)
    m = torch.as_tensor(np.asarray(mask, dtype=bool), device=learner.device)
    learner.encoder.eval()
    learner.decoder.eval()
    with torch.no_grad():
        z = learner.encoder(x)[0].float() * m.float()
    onehot = torch.zeros(x.shape[0], cfg.max_domains, device=learner.device)
    onehot[:, int(domain)] = 1.0

    def nll(zz: torch.Tensor) -> torch.Tensor:
        return reconstruction_nll(learner.decoder(zz, onehot).float(), x, cfg.likelihood, cfg.gaussian_std)

    used, sigma = estimate_used_latents(
        nll,
        z,
        steps=cfg.used_estimation_steps,
        lr=cfg.used_estimation_lr,
        threshold=cfg.used_noise_threshold,
        generator=generator,
    )
    return (used.cpu().numpy() & m.cpu().numpy()), sigma.cpu().numpy()


# ---------------------------------------------------------------------------------------------
# probe data


class _ProbeData:
    """Held-out data per domain: fresh probe-training batches (a pure function of the step) and
    fixed evaluation / refit sets."""

    def __init__(self, stream, seed: int, batch_size: int, eval_size: int, refit_size: int) -> None:
        cols = _factor_columns()
        self.class_col, self.x_col, self.y_col = cols["class"], cols["x"], cols["y"]
        self.families = dict(stream.families)
        self.names = list(stream.domain_names)
        self.seed, self.batch_size = int(seed), int(batch_size)
        self.moving = {}
        self.num_classes = {}
        for name, fam in self.families.items():
            sizes = fam.factor_sizes
            self.moving[name] = sizes[self.x_col] > 1 or sizes[self.y_col] > 1
            self.num_classes[name] = int(fam.num_classes)
        self.eval_sets = {n: self._sample(n, eval_size, [self.seed, 11, k]) for k, n in enumerate(self.names)}
        self.refit_sets = {n: self._sample(n, refit_size, [self.seed, 13, k]) for k, n in enumerate(self.names)}

    def _sample(self, name: str, n: int, key: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return self.families[name].sample(n, np.random.default_rng(key))

    def train_batch(self, name: str, step: int) -> tuple[np.ndarray, np.ndarray]:
        return self._sample(name, self.batch_size, [self.seed, 17, int(step), self.names.index(name)])

    def targets(self, name: str, factors: np.ndarray) -> dict[str, np.ndarray]:
        out = {OBJECT_TASK: factors[:, self.class_col].astype(np.int64)}
        if self.moving[name]:
            out[POSITION_TASK] = factors[:, [self.x_col, self.y_col]].astype(np.float32)
        return out


def _latents_in_chunks(learner: VASE, images: np.ndarray, gen: torch.Generator, chunk: int = 256):
    """probe_latents over a large set; the inferred domain is the majority over chunks."""
    zs, doms = [], []
    for i in range(0, len(images), chunk):
        z, d = probe_latents(learner, images[i : i + chunk], gen)
        zs.append(z)
        doms.append(d)
    return np.concatenate(zs), Counter(doms).most_common(1)[0][0]


# ---------------------------------------------------------------------------------------------
# the runner


def _settings(
    sequence,
    steps_per_domain,
    seed,
    batch_size,
    probe_every,
    probe_batch_size,
    eval_every,
    eval_size,
    refit,
    refit_steps,
    refit_size,
    checkpoint_every,
    family_seed,
    boundary_tolerance,
    device,
    progress,
) -> dict[str, Any]:
    return {
        "sequence": [list(i) if isinstance(i, tuple) else i for i in sequence],
        "steps_per_domain": int(steps_per_domain),
        "seed": int(seed),
        "batch_size": int(batch_size),
        "probe_every": int(probe_every),
        "probe_batch_size": int(probe_batch_size),
        "eval_every": int(eval_every),
        "eval_size": int(eval_size),
        "refit": bool(refit),
        "refit_steps": int(refit_steps),
        "refit_size": int(refit_size),
        "checkpoint_every": int(checkpoint_every),
        "family_seed": int(family_seed),
        "boundary_tolerance": int(boundary_tolerance),
        "device": str(device),
        "progress": bool(progress),
    }


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def run_experiment(
    config: VASEConfig,
    sequence: Sequence[Any] | str,
    steps_per_domain: int,
    seed: int,
    out_dir: str | os.PathLike,
    *,
    batch_size: int | None = None,
    probe_every: int = 1,
    probe_batch_size: int = 64,
    eval_every: int = 25,
    eval_size: int = 512,
    refit: bool = True,
    refit_steps: int = 300,
    refit_size: int = 1024,
    checkpoint_every: int = 0,
    resume: bool = True,
    family_seed: int = 0,
    boundary_tolerance: int | None = None,
    device: str = "cpu",
    progress: bool = False,
    disentanglement: bool = True,
    step_callback: Callable[[int, dict[str, Any]], Any] | None = None,
    disentanglement_size: int = STANDARD_NUM_SAMPLES,
    dci_method: str = "gradient_boosting",
    command: str | None = None,
) -> dict[str, Any]:
    """Train a VASE learner on a domain stream with probes alongside; write and return results.

    Args:
        config: the learner's configuration (its ``image_shape`` sets the stream's image size).
        sequence: domain names and optional ``(name, steps)`` pairs, or ``"a,b:300,c"``.
        steps_per_domain: updates per segment that has no explicit length.
        seed: seeds the learner, the stream, the probes and the held-out data.
        out_dir: run folder (created); see :data:`RUN_FILES`.
        batch_size: stream batch size (default ``config.batch_size``).
        probe_every: train the probes every n steps (paper: every step).
        probe_batch_size: images per domain per probe update (paper: 64).
        eval_every: score the probes on the held-out sets every n steps (and at segment ends).
        eval_size: held-out images per domain; refit_size: training images of a refit probe.
        refit: score a freshly trained probe at every segment end; refit_steps: its updates.
        checkpoint_every: save a resumable checkpoint every n steps (0: never; one is always
            written at the end, as ``vase.pt``).
        resume: continue from ``out_dir``'s checkpoint if there is one, and return the stored
            results of a finished run. ``False`` starts over (existing files are overwritten).
        family_seed: the stream's sprite seed (writers, textures).
        boundary_tolerance: steps a detected domain switch may lag the true one (default: a
            tenth of the shortest segment, at least 5).
        device: torch device of learner and probes.
        progress: show a tqdm progress bar.
        disentanglement: compute MIG and DCI on the final representation.
        step_callback: ``callback(step, stats)`` after every update; returning ``False`` stops
            the run early (the checkpoint is written; no results).
        disentanglement_size: samples per domain for MIG and DCI's training set (default
            disentanglement_lib's 10,000; DCI is tested on 5,000 more). Smaller is faster and
            is stated in the results (``standard_sample_size: false``).
        dci_method: DCI's predictor, ``"gradient_boosting"`` (default, the standard) or a faster
            one (see :func:`~vase_rl.evaluation.dci_scores`).
        command: the command line recorded in the provenance (default: this process's).

    Returns the results dict (also in ``results.json``); ``{"stopped_at": step}`` when stopped.
    ``experiment.json`` and ``results.json`` carry a ``provenance`` block
    (:mod:`vase_rl.provenance`): commit, versions, machine, command, seed, wall time and the
    digest of the code measured (:data:`RUN_CODE`), taken when the run (re)started; a run resumed
    on changed code lists every start in ``provenance["starts"]`` and sets
    ``code_changed_during_run``.
    """
    if not isinstance(config, VASEConfig):
        raise TypeError(f"config must be a VASEConfig, got {type(config).__name__}")
    seq = parse_sequence(sequence)
    batch_size = config.batch_size if batch_size is None else batch_size
    _check_positive(
        steps_per_domain=steps_per_domain,
        batch_size=batch_size,
        probe_every=probe_every,
        probe_batch_size=probe_batch_size,
        eval_every=eval_every,
        eval_size=eval_size,
        refit_steps=refit_steps,
        refit_size=refit_size,
    )
    if batch_size < 2:
        raise ValueError("batch_size must be >= 2 (VASE fits a Gaussian to each batch)")
    if checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be >= 0, got {checkpoint_every}")
    if eval_size < 8:
        raise ValueError(f"eval_size must be >= 8, got {eval_size}")
    stream = _make_stream(seq, batch_size, seed, steps_per_domain, config, family_seed)
    shortest = min(s.length for s in stream.segments)
    tol = max(5, shortest // 10) if boundary_tolerance is None else int(boundary_tolerance)
    if tol < 0:
        raise ValueError(f"boundary_tolerance must be >= 0, got {boundary_tolerance}")
    settings = _settings(
        seq,
        steps_per_domain,
        seed,
        batch_size,
        probe_every,
        probe_batch_size,
        eval_every,
        eval_size,
        refit,
        refit_steps,
        refit_size,
        checkpoint_every,
        family_seed,
        tol,
        device,
        progress,
    )
    if dci_method not in ("gradient_boosting", "random_forest", "lasso"):
        raise ValueError(f"dci_method must be gradient_boosting, random_forest or lasso, got {dci_method!r}")
    _check_positive(disentanglement_size=disentanglement_size)
    settings["disentanglement"] = bool(disentanglement)
    if disentanglement:
        settings.update(disentanglement_size=int(disentanglement_size), dci_method=dci_method)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {k: out / v for k, v in RUN_FILES.items()}

    if resume and files["experiment"].is_file():
        _check_same_experiment(files["experiment"], settings, config)
        if files["results"].is_file():
            return json.loads(files["results"].read_text())
    wall_start = time.time()
    start_state = {
        **provenance.git_state(),
        **provenance.code_state(RUN_CODE),
        "started": wall_start,
    }
    _write_json(
        files["experiment"],
        {**settings, "provenance": provenance.collect(command=command, seeds=[seed], code_state=_code_of(start_state))},
    )
    config.save(files["config"])

    data = _ProbeData(stream, seed, probe_batch_size, eval_size, refit_size)
    gen = torch.Generator().manual_seed(int(seed) + 99991)  # noise for the S-off mask inference
    state = _load_checkpoint(files["checkpoint"], device) if resume and files["checkpoint"].is_file() else None
    if state is not None:
        learner, tracker, history, start, elapsed = (
            state["learner"],
            state["tracker"],
            state["history"],
            state["step"],
            state["elapsed"],
        )
        gen.set_state(state["generator"])
        starts = list(state.get("provenance_starts", [])) + [{**start_state, "step": start}]
    else:
        learner = VASE(config, seed=seed, device=device)
        tracker = ProbeTracker(config.latent_dim, seed=seed, refit_steps=refit_steps, device=device)
        for name in data.names:
            tracker.add_probe(OBJECT_TASK, name, num_classes=max(2, data.num_classes[name]))
            if data.moving[name]:
                tracker.add_probe(POSITION_TASK, name, regression_dim=2)
        history = {k: [] for k in _HISTORY_KEYS}
        start, elapsed = 0, 0.0
        starts = [{**start_state, "step": 0}]

    seg_ends = {s.stop - 1 for s in stream.segments}
    bar = _bar(progress, len(stream), start)
    t0 = time.perf_counter()
    stopped = None
    try:
        for t in range(start, len(stream)):
            batch = stream[t]
            stats = learner.update(batch.images)
            _append_history(history, t, batch, stats, learner)
            if t % probe_every == 0:
                train = {}
                for name in data.names:
                    imgs, f = data.train_batch(name, t)
                    z, _ = probe_latents(learner, imgs, gen)
                    train[name] = (z, data.targets(name, f))
                tracker.train_step(train)
            if (t + 1) % eval_every == 0 or t in seg_ends:
                ev = _encode_sets(learner, data, data.eval_sets, gen)
                tracker.evaluate(t, ev, refit=False)
                if refit and t in seg_ends:
                    fit = _encode_sets(learner, data, data.refit_sets, gen)
                    tracker.evaluate(t, ev, refit=True, refit_data=fit)
            if bar is not None:
                bar.update(1)
                if t % 10 == 0 and not stats.get("skipped"):
                    bar.set_postfix(
                        dom=f"{stats['domain']}/{batch.domain}", n_dom=stats["num_domains"], loss=f"{stats['loss']:.1f}"
                    )
            if checkpoint_every and (t + 1) % checkpoint_every == 0 and t + 1 < len(stream):
                _save_checkpoint(
                    files["checkpoint"],
                    learner,
                    tracker,
                    history,
                    t + 1,
                    elapsed + time.perf_counter() - t0,
                    gen,
                    starts,
                )
            if step_callback is not None and step_callback(t, stats) is False:
                stopped = t + 1
                break
    finally:
        if bar is not None:
            bar.close()
    elapsed += time.perf_counter() - t0
    if stopped is not None and stopped < len(stream):
        _save_checkpoint(files["checkpoint"], learner, tracker, history, stopped, elapsed, gen, starts)
        return {"stopped_at": stopped}

    learner.save(files["model"])
    _save_checkpoint(files["checkpoint"], learner, tracker, history, len(stream), elapsed, gen, starts)
    _write_json(files["history"], history)
    _write_json(files["probes"], tracker.records)
    _write_json(files["domain_log"], {"domains": learner.domains, "decisions": learner.domain_log})
    final = evaluate_learner(
        learner,
        data=data,
        generator=gen,
        disentanglement=disentanglement,
        seed=seed,
        disentanglement_size=disentanglement_size,
        dci_method=dci_method,
    )
    results = summarise_run(settings, config, stream, history, tracker, learner, final, elapsed)
    results["provenance"] = _run_provenance(starts, command, seed)
    _write_json(files["results"], results)
    return json.loads(json.dumps(to_jsonable(results)))


#: The code a run folder's numbers depend on (groups of :data:`vase_rl.provenance.CODE_PATHS`).
RUN_CODE = ("core", "evaluation", "envs")


def _code_of(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k: state[k] for k in ("code_paths", "code_digest", "code_files")}


def _run_provenance(starts: list[dict[str, Any]], command: str | None, seed: int) -> dict[str, Any]:
    """The results' provenance: the machine and versions now, the code as of the first start,
    and every (re)start with its commit and code digest."""
    first = starts[0]
    block = provenance.collect(command=command, seeds=[seed], started=first["started"], code_state=_code_of(first))
    block["commit"], block["dirty"], block["commit_time"] = first["commit"], first["dirty"], first["commit_time"]
    block["starts"] = [
        {"step": int(s["step"]), "commit": s["commit"], "dirty": s["dirty"], "code_digest": s["code_digest"]}
        for s in starts
    ]
    block["code_changed_during_run"] = len({s["code_digest"] for s in starts}) > 1
    return block


_HISTORY_KEYS = (
    "step",
    "true_domain",
    "domain",
    "candidate",
    "event",
    "num_domains",
    "loss",
    "recon",
    "kl",
    "capacity",
    "active_latents",
    "used_latents",
    "atypicality",
)


def _append_history(h: dict[str, list], t: int, batch, stats: dict[str, Any], learner: VASE) -> None:
    h["step"].append(int(t))
    h["true_domain"].append(int(batch.domain))
    h["domain"].append(int(stats.get("domain", learner.current_domain)))
    h["candidate"].append(int(stats.get("candidate", stats.get("domain", 0))))
    h["event"].append(str(stats.get("event", "skipped")))
    h["num_domains"].append(int(stats.get("num_domains", learner.num_domains)))
    for key in ("loss", "recon", "kl", "capacity"):
        v = stats.get(key)
        h[key].append(None if v is None or not math.isfinite(float(v)) else round(float(v), 5))
    h["active_latents"].append(int(stats.get("active_latents", -1)))
    h["used_latents"].append(int(stats.get("used_latents", -1)))
    a = learner.last_atypicality
    h["atypicality"].append(None if a is None else [round(float(v), 5) for v in a])


def _encode_sets(learner: VASE, data: _ProbeData, sets: dict, gen: torch.Generator) -> dict:
    out = {}
    for name, (imgs, f) in sets.items():
        z, _ = _latents_in_chunks(learner, imgs, gen)
        out[name] = (z, data.targets(name, f))
    return out


def _bar(progress: bool, total: int, start: int):
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dev dependency
        warnings.warn("progress needs tqdm (pip install tqdm); continuing without a bar", RuntimeWarning, stacklevel=3)
        return None
    return tqdm(total=total, initial=start, desc="vase-rl", unit="upd", dynamic_ncols=True)


def _check_same_experiment(path: Path, settings: dict, config: VASEConfig) -> None:
    old = json.loads(path.read_text())
    old.pop("provenance", None)
    diff = sorted(k for k in set(old) | set(settings) if k not in _RESUME_FREE and old.get(k) != settings.get(k))
    cfg_path = path.with_name(RUN_FILES["config"])
    if cfg_path.is_file():
        old_cfg = VASEConfig.load(cfg_path)
        if old_cfg != config:
            diff.append("config")
    if diff:
        raise ValueError(
            f"{path.parent} holds a different experiment (differs in: {', '.join(diff)}); use another output "
            "folder, or start over with resume=False (--fresh)"
        )


def _save_checkpoint(
    path: Path,
    learner: VASE,
    tracker: ProbeTracker,
    history: dict,
    step: int,
    elapsed: float,
    gen: torch.Generator,
    starts: list[dict[str, Any]] | None = None,
) -> None:
    state = {
        "format": _CHECKPOINT_FORMAT,
        "step": int(step),
        "elapsed": float(elapsed),
        "learner": learner.state_dict(),
        "tracker": _plain(tracker.state_dict()),
        "history": history,
        "generator": gen.get_state(),
        "provenance_starts": _plain(starts or []),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _plain(x: Any) -> Any:
    """Python containers/scalars only (numpy types converted), so ``weights_only`` loading works."""
    if isinstance(x, dict):
        return {k if isinstance(k, str) else _plain(k): _plain(v) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(_plain(v) for v in x)
    if isinstance(x, list):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def _load_checkpoint(path: Path, device: str) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not a readable experiment checkpoint: {err}; delete it or use --fresh") from err
    if not isinstance(state, dict) or state.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a vase_rl experiment checkpoint")
    learner = VASE.from_state_dict(state["learner"], device=device, source=str(path))
    ts = state["tracker"]
    cfg = ts["config"]
    tracker = ProbeTracker(
        cfg["latent_dim"],
        hidden=cfg["hidden"],
        lr=cfg["lr"],
        batch_size=cfg["batch_size"],
        seed=cfg["seed"],
        eval_every=cfg["eval_every"],
        refit=cfg["refit"],
        refit_steps=cfg["refit_steps"],
        device=device,
    )
    tracker.load_state_dict(ts)
    return {
        "learner": learner,
        "tracker": tracker,
        "history": state["history"],
        "step": int(state["step"]),
        "elapsed": float(state["elapsed"]),
        "generator": state["generator"],
        "provenance_starts": state.get("provenance_starts", []),
    }


# ---------------------------------------------------------------------------------------------
# end-of-run evaluation


def evaluate_learner(
    learner: VASE,
    sequence: Sequence[Any] | str | None = None,
    *,
    data: _ProbeData | None = None,
    seed: int = 0,
    eval_size: int = 512,
    refit_size: int = 1024,
    refit_steps: int = 300,
    generator: torch.Generator | None = None,
    disentanglement: bool = True,
    probes: bool = False,
    family_seed: int = 0,
    disentanglement_size: int = STANDARD_NUM_SAMPLES,
    dci_test_size: int = STANDARD_NUM_TEST,
    dci_method: str = "gradient_boosting",
) -> dict[str, Any]:
    """Static evaluation of a (trained) learner on the domains of ``sequence``.

    Per domain: the domain id the learner assigns to its held-out set, MIG and DCI of the
    probe latents against the factors that vary in that domain (on ``disentanglement_size``
    fresh samples, DCI tested on ``dci_test_size`` more; the defaults are disentanglement_lib's
    10,000 and 5,000, and a smaller size is stated in the output), and (``probes=True``) the
    held-out score of a probe trained from scratch for ``refit_steps``. Plus the latent usage
    (:func:`measure_latent_usage`). Pass ``data`` (the runner does) or ``sequence``.
    """
    _check_positive(disentanglement_size=disentanglement_size, dci_test_size=dci_test_size)
    if data is None:
        if sequence is None:
            raise ValueError("give the domains to evaluate on (sequence=...)")
        seq = parse_sequence(sequence)
        stream = _make_stream(seq, 2, seed, 1, learner.config, family_seed)
        data = _ProbeData(stream, seed, 64, eval_size, refit_size)
    gen = generator if generator is not None else torch.Generator().manual_seed(int(seed) + 99991)
    per_domain: dict[str, Any] = {}
    views: dict[str, tuple[np.ndarray, int, np.ndarray]] = {}
    for k, name in enumerate(data.names):
        imgs, f = data.eval_sets[name]
        z, dom, mask = _view_in_chunks(learner, imgs, gen)
        views[name] = (imgs, dom, mask)
        row: dict[str, Any] = {"assigned_domain": int(dom)}
        if disentanglement:
            xs, fs = data._sample(name, disentanglement_size, [data.seed, 19, k])
            xt, ft = data._sample(name, dci_test_size, [data.seed, 23, k])
            zs, _ = _latents_in_chunks(learner, xs, gen)
            zt, _ = _latents_in_chunks(learner, xt, gen)
            row.update(_disentanglement(zs, fs, seed, zt, ft, dci_method))
        if probes:
            from vase_rl.evaluation.probes import LatentProbe

            rimgs, rf = data.refit_sets[name]
            zr, _ = _latents_in_chunks(learner, rimgs, gen)
            tr, te = data.targets(name, rf), data.targets(name, f)
            p = LatentProbe(learner.config.latent_dim, max(2, data.num_classes[name]), seed=seed * 31 + k)
            p.fit(zr, tr[OBJECT_TASK], refit_steps)
            row["object_id_accuracy"] = p.accuracy(z, te[OBJECT_TASK])
            if POSITION_TASK in te:
                q = LatentProbe(learner.config.latent_dim, regression_dim=2, seed=seed * 31 + k + 1000)
                q.fit(zr, tr[POSITION_TASK], refit_steps)
                row["position_mse"] = q.mse(z, te[POSITION_TASK])
        per_domain[name] = row
    usage = measure_latent_usage(learner, views, seed=seed)
    return {"per_domain": per_domain, "latent_usage": usage}


def _view_in_chunks(learner: VASE, images: np.ndarray, gen: torch.Generator, chunk: int = 256):
    """probe_view over a large set: latents, the majority domain, and the mask of the largest
    chunk that voted for it (the mask is a property of the domain, or of a batch when S is off)."""
    zs, doms, masks = [], [], []
    for i in range(0, len(images), chunk):
        z, d, m = probe_view(learner, images[i : i + chunk], gen)
        zs.append(z)
        doms.append(d)
        masks.append(m)
    dom = Counter(doms).most_common(1)[0][0]
    return np.concatenate(zs), dom, masks[doms.index(dom)]


#: Images of each domain's held-out set used by the noise test of :func:`measure_latent_usage`.
USAGE_TEST_IMAGES = 128

LATENTS_IN_USE_DEFINITION = (
    "a latent is in use for a true domain when the learner's view of that domain's held-out images keeps it "
    "active (the mask the learner applies to them: the stored mask of the domain it assigns with S on, the "
    "mask inferred on the batch with S off and A on, every latent with A off) and the decoder, conditioned on "
    "the assigned domain, depends on it (noise test of spec §5 with the learner's settings, run at evaluation "
    "on held-out images); num_in_use = latents in use for at least one true domain. Measured the same way for "
    "every variant."
)


def measure_latent_usage(
    learner: VASE,
    views: Mapping[str, tuple[Any, int, Any]],
    *,
    seed: int = 0,
    num_images: int = USAGE_TEST_IMAGES,
) -> dict[str, Any]:
    """Latents in use per *true* domain, one definition for every variant (see
    :data:`LATENTS_IN_USE_DEFINITION`), labelled added / reused / frozen / unused in the order
    of ``views`` (true domain name -> ``(held-out images, assigned domain id, mask applied)``).

    Returns ``definition``, ``latent_dim``, ``num_in_use``, ``domains`` (true domain names),
    ``assigned_domain``, ``active`` and ``in_use`` (per domain, lists of bools), ``noise_std``
    (the fitted sigma_n), ``labels``, ``counts``, ``sharing``, ``text`` and ``learner_memory``:
    the learner's own bookkeeping (stored masks and used latents per *inferred* domain, where a
    used set that was never estimated falls back to the mask), kept for reference only.
    """
    n = learner.config.latent_dim
    gen = torch.Generator(device=learner.device).manual_seed(int(seed) + 7919)
    active, in_use, sigmas, assigned = {}, {}, {}, {}
    for name, (images, dom, mask) in views.items():
        mask = np.asarray(mask, dtype=bool).reshape(-1)
        used, sigma = decoder_dependence(learner, np.asarray(images)[:num_images], dom, mask, generator=gen)
        active[name], in_use[name] = mask, used
        sigmas[name], assigned[name] = sigma, int(dom)
    out: dict[str, Any] = {"definition": LATENTS_IN_USE_DEFINITION, "latent_dim": n, "num_in_use": 0}
    if in_use:
        table = latent_usage_table({d: u.astype(int) for d, u in in_use.items()})
        out.update(
            num_in_use=table.num_in_use,
            domains=table.domains,
            assigned_domain=assigned,
            active={d: m.tolist() for d, m in active.items()},
            in_use={d: u.tolist() for d, u in in_use.items()},
            noise_std={d: [round(float(v), 4) for v in s] for d, s in sigmas.items()},
            labels=table.labels,
            counts=table.counts,
            sharing=table.sharing,
            text=table.to_text(),
        )
    else:
        out.update(domains=[], labels={}, counts={}, sharing=["unused"] * n, text="")
    out["learner_memory"] = _latent_usage(learner)
    return out


_CATEGORICAL_FACTORS = ("class", "style")


def _disentanglement(
    z: np.ndarray,
    factors: np.ndarray,
    seed: int,
    z_test: np.ndarray | None = None,
    factors_test: np.ndarray | None = None,
    dci_method: str = "gradient_boosting",
) -> dict[str, Any]:
    from vase_rl.envs import FACTOR_NAMES

    keep = [j for j in range(factors.shape[1]) if np.unique(factors[:, j]).size > 1]
    names = [FACTOR_NAMES[j] for j in keep]
    if not keep:
        return {}
    # identity factors are categorical (integer codes); the others are ordinal and scored as
    # continuous, whatever their number of grid values
    discrete = [n in _CATEGORICAL_FACTORS for n in names]

    def columns(f: np.ndarray) -> np.ndarray:
        cols = []
        for j, disc in zip(keep, discrete):
            if disc:  # codes shared by the training and the test set
                values = np.unique(factors[:, j])
                cols.append(np.searchsorted(values, f[:, j]).astype(np.float64))
            else:
                cols.append(f[:, j].astype(np.float64))
        return np.stack(cols, axis=1)

    v = columns(factors)
    out: dict[str, Any] = {
        "factors": names,
        "num_samples": int(z.shape[0]),
        "standard_sample_size": bool(z.shape[0] >= STANDARD_NUM_SAMPLES),
    }
    if z.shape[0] < STANDARD_NUM_SAMPLES:
        out["note"] = (
            f"MIG/DCI on {z.shape[0]} samples, fewer than disentanglement_lib's {STANDARD_NUM_SAMPLES}: "
            "the histogram MI estimate is biased upwards; not comparable to published scores"
        )
    try:
        m = mig_scores(z, v, discrete_factors=discrete)
        out["mig"] = m["mig"]
        out["mig_per_factor"] = dict(zip(names, m["per_factor"].tolist()))
    except ValueError as err:
        out["mig_error"] = str(err)
    try:
        test = {} if z_test is None else {"test_latents": z_test, "test_factors": columns(factors_test)}
        d = dci_scores(z, v, discrete_factors=discrete, random_state=seed, method=dci_method, **test)
        out["dci_disentanglement"] = d["disentanglement"]
        out["dci_completeness"] = d["completeness"]
        out["dci_informativeness"] = d["informativeness"]
        out["dci_method"] = d["method"]
        out["dci_num_train"], out["dci_num_test"] = d["num_train"], d["num_test"]
    except ValueError as err:
        out["dci_error"] = str(err)
    return out


def _latent_usage(learner: VASE) -> dict[str, Any]:
    """The learner's own bookkeeping per inferred domain: stored mask AND stored used latents,
    the mask alone where the used latents were never estimated (``used_estimated`` False). Not
    the latents-in-use measure (:func:`measure_latent_usage`); the traversal plot labels with it."""
    doms = learner.domains
    n = learner.config.latent_dim
    if not doms:
        return {
            "latent_dim": n,
            "num_active_and_marked_used": 0,
            "domains": [],
            "labels": {},
            "counts": {},
            "sharing": ["unused"] * n,
        }
    masks = {d["domain_id"]: d["latent_mask"] for d in doms}
    used = {d["domain_id"]: (d["used_latents"] if d["used_latents"] is not None else d["latent_mask"]) for d in doms}
    table = latent_usage_table(masks, used)
    return {
        "latent_dim": n,
        "num_active_and_marked_used": table.num_in_use,
        "domains": table.domains,
        "labels": {str(d): table.labels[d] for d in table.domains},
        "counts": {str(d): table.counts[d] for d in table.domains},
        "sharing": table.sharing,
        "used_estimated": {str(d["domain_id"]): d["used_latents"] is not None for d in doms},
        "text": table.to_text(),
    }


def summarise_run(
    settings: dict,
    config: VASEConfig,
    stream,
    history: dict,
    tracker: ProbeTracker,
    learner: VASE,
    final: dict,
    elapsed: float,
) -> dict[str, Any]:
    """The results dict of a finished run (see :func:`run_experiment`)."""
    segments = [Segment(s.name, s.start, s.stop) for s in stream.segments]
    out: dict[str, Any] = {
        "experiment": settings,
        "config": config.to_dict(),
        "segments": [[s.domain, s.start, s.stop] for s in segments],
        "domain_names": list(stream.domain_names),
        "num_steps": len(stream),
        "wall_time_s": round(float(elapsed), 2),
        "switches": {
            "S": config.domain_inference,
            "D": config.dreaming,
            "A": config.atypicality_mask,
            "objective": config.objective,
        },
    }
    for task in (OBJECT_TASK, POSITION_TASK):
        if task in tracker.tasks():
            out[task] = _task_summary(tracker, task, segments, higher=(task == OBJECT_TASK))
    true = np.asarray(history["true_domain"])
    pred = np.asarray(history["domain"])
    tol = settings["boundary_tolerance"]
    b = boundary_scores(pred, true, tolerance=tol)
    out["domain_inference"] = {
        "enabled": config.domain_inference,
        "tolerance": tol,
        "boundary": {
            k: b[k]
            for k in (
                "precision",
                "recall",
                "f1",
                "mean_delay",
                "mean_delay_matched",
                "delays",
                "num_true",
                "num_pred",
                "num_matched",
                "missed",
                "false_alarms",
            )
        },
        "agreement": domain_agreement(pred, true),
        "reidentification": reidentification(pred, true),
        "num_domains": learner.num_domains,
        "final_assignment": {n: r["assigned_domain"] for n, r in final["per_domain"].items()},
    }
    out["latent_usage"] = final["latent_usage"]
    out["disentanglement"] = {
        n: {k: v for k, v in r.items() if k != "assigned_domain"} for n, r in final["per_domain"].items()
    }
    tail = max(1, min(50, len(history["recon"])))
    recon = [v for v in history["recon"][-tail:] if v is not None]
    out["final_recon"] = float(np.mean(recon)) if recon else None
    out["final_kl"] = float(np.mean([v for v in history["kl"][-tail:] if v is not None] or [np.nan]))
    return out


def matrix_measures(R: Any, domains: Sequence[Any]) -> dict[str, float]:
    """ACC, BWT and Chaudhry forgetting of an accuracy matrix whose stage i trained ``domains[i]``
    (a domain that comes back has several columns; each measure counts it once, see
    :mod:`vase_rl.evaluation.forgetting`). Measures that are undefined (fewer than 2 stages,
    missing entries, no domain left to transfer back) are left out."""
    out: dict[str, float] = {}
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] < 2 or not np.isfinite(R).all():
        return out
    for key, fn in (
        ("average_accuracy", average_accuracy),
        ("backward_transfer", backward_transfer),
        ("chaudhry_forgetting", chaudhry_forgetting),
    ):
        with contextlib.suppress(ValueError):
            out[key] = fn(R, domains=list(domains))
    return out


def _task_summary(tracker: ProbeTracker, task: str, segments: list[Segment], higher: bool) -> dict[str, Any]:
    s: dict[str, Any] = {"metric": "accuracy" if higher else "mse"}
    probed = {d for (t, d) in tracker.probes if t == task}
    segs = [g for g in segments if g.domain in probed]
    if not segs:
        return s
    steps, curves = tracker.curves(task)
    try:
        s["best"] = tracker.max_score(task, segments)
        # paper_forgetting: best during - worst after (accuracy); worst after - best during (mse)
        s["forgetting"] = tracker.forgetting(task, segments)
        s["forgetting_per_domain"] = paper_forgetting_per_domain(
            curves, segments, steps=steps, higher_is_better=higher, skip_missing=True
        )
    except ValueError:
        s["forgetting"] = None
    s["change"] = None if s.get("forgetting") is None else (-s["forgetting"] if higher else s["forgetting"])
    R = tracker.accuracy_matrix(task, segments)
    s["matrix"] = R
    s["matrix_segments"] = [g.domain for g in segments]
    if higher:
        keep = [i for i, g in enumerate(segments) if g.domain in probed]
        s.update(matrix_measures(R[np.ix_(keep, keep)], [segments[i].domain for i in keep]))
    if any(r["task"] == task and r["refit"] for r in tracker.records):
        rsteps, rcurves = tracker.curves(task, refit=True)
        try:
            s["refit_forgetting"] = paper_forgetting(
                rcurves, segments, steps=rsteps, higher_is_better=higher, skip_missing=True
            )
            s["refit_best"] = paper_max_accuracy(
                rcurves, segments, steps=rsteps, higher_is_better=higher, skip_missing=True
            )
        except ValueError:
            s["refit_forgetting"] = None
        s["refit_matrix"] = accuracy_matrix(rcurves, segments, steps=rsteps, skip_missing=True)
        final = {d: float(c[np.isfinite(c)][-1]) for d, c in rcurves.items() if np.isfinite(c).any()}
        s["refit_final"] = final
    return s


# ---------------------------------------------------------------------------------------------
# reading runs back


def load_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The JSON files of a run folder as one dict (``experiment``, ``config``, ``history``,
    ``probes``, ``domain_log``, ``results``; missing files are absent)."""
    d = Path(run_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"no run folder at {d}")
    out: dict[str, Any] = {"path": str(d)}
    for key, name in RUN_FILES.items():
        p = d / name
        if p.suffix == ".json" and p.is_file():
            out[key] = json.loads(p.read_text())
    if "experiment" not in out:
        raise FileNotFoundError(
            f"{d} is not a run folder (no {RUN_FILES['experiment']}); create one with `vase-rl train --out DIR`"
        )
    return out
