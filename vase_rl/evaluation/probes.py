"""Latent probes: small supervised read-outs trained on a frozen view of the representation.

The VASE paper (Achille et al. 2018, appendix A.5) measures how much task-relevant
information the latents z ~ q(z|x) hold by training, alongside the representation and at every
step, one classifier per domain (object identity) and a position regressor: an MLP with two
hidden layers of 256 ReLU units, Adam with learning rate 6e-4, batch 64, whose training never
updates the representation. :class:`LatentProbe` is that read-out; :class:`ProbeTracker` runs
one probe per (task, domain), records its score over time and hands the curves to
:mod:`vase_rl.evaluation.forgetting`.

A continuously trained probe drifts: after the stream leaves a domain it keeps training on
the current latents of that domain's data, so its score mixes "the representation lost the
information" with "the probe lost its fit". ``refit=True`` evaluations train a fresh probe on
the representation as it is at that moment and report that probe's held-out score instead,
which isolates representation drift.

This module only sees latents (numpy arrays or tensors); it never calls a learner, and every
input tensor is detached, so no gradient can reach whatever produced it.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Hashable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from vase_rl.evaluation.forgetting import accuracy_matrix as _accuracy_matrix
from vase_rl.evaluation.forgetting import paper_forgetting as _paper_forgetting
from vase_rl.evaluation.forgetting import paper_max_accuracy as _paper_max_accuracy

__all__ = ["LatentProbe", "ProbeTracker"]


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Fix torch's CPU RNG for weight init without disturbing the caller's RNG state."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class LatentProbe:
    """An MLP read-out (2 x ``hidden`` ReLU) from latents to classes or regression targets.

    Args:
        latent_dim: size of the latent vectors.
        num_classes: number of classes for a classification probe (cross-entropy), or
        regression_dim: number of outputs for a regression probe (mean squared error);
            give exactly one of the two.
        hidden: width of both hidden layers (paper: 256).
        lr: Adam learning rate (paper: 6e-4).
        batch_size: minibatch size used by :meth:`fit` (paper: 64).
        seed: seeds weight init and :meth:`fit`'s minibatch sampling; ``None`` uses the
            global RNGs.
        device: torch device of the probe.

    Inputs may be numpy arrays or tensors on any device; they are detached and copied, never
    modified.
    """

    def __init__(
        self,
        latent_dim: int,
        num_classes: int | None = None,
        *,
        regression_dim: int | None = None,
        hidden: int = 256,
        lr: float = 6e-4,
        batch_size: int = 64,
        seed: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if (num_classes is None) == (regression_dim is None):
            raise ValueError("give exactly one of num_classes (classification) or regression_dim (regression)")
        if latent_dim < 1 or hidden < 1 or batch_size < 1:
            raise ValueError("latent_dim, hidden and batch_size must be positive")
        if num_classes is not None and num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if regression_dim is not None and regression_dim < 1:
            raise ValueError(f"regression_dim must be >= 1, got {regression_dim}")
        self.config = {
            "latent_dim": int(latent_dim),
            "num_classes": None if num_classes is None else int(num_classes),
            "regression_dim": None if regression_dim is None else int(regression_dim),
            "hidden": int(hidden),
            "lr": float(lr),
            "batch_size": int(batch_size),
            "seed": seed,
        }
        self.device = torch.device(device)
        out = num_classes if num_classes is not None else regression_dim
        with _seeded(seed):
            self.net = nn.Sequential(
                nn.Linear(latent_dim, hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Linear(hidden, out),
            ).to(self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        self._rng = np.random.default_rng(seed)
        self.num_updates = 0

    # ---------------------------------------------------------------- properties / conversion
    @property
    def is_classifier(self) -> bool:
        return self.config["num_classes"] is not None

    @property
    def metric(self) -> str:
        """``"accuracy"`` for classifiers, ``"mse"`` for regressors."""
        return "accuracy" if self.is_classifier else "mse"

    @property
    def higher_is_better(self) -> bool:
        return self.is_classifier

    def _x(self, latents: Any) -> torch.Tensor:
        if isinstance(latents, torch.Tensor):
            x = latents.detach().to(device=self.device, dtype=torch.float32)
        else:
            x = torch.as_tensor(np.asarray(latents, dtype=np.float32), device=self.device)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.config["latent_dim"]:
            raise ValueError(f"latents must have shape (batch, {self.config['latent_dim']}), got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("latents contain NaN or inf")
        return x

    def _y(self, targets: Any, n: int) -> torch.Tensor:
        if isinstance(targets, torch.Tensor):
            y = targets.detach().to(self.device)
        else:
            y = torch.as_tensor(np.asarray(targets), device=self.device)
        if self.is_classifier:
            y = y.reshape(-1)
            if y.is_floating_point() and not torch.equal(y, y.round()):
                raise ValueError("classification targets must be integer class ids")
            y = y.long()
            if y.numel() and (y.min() < 0 or y.max() >= self.config["num_classes"]):
                raise ValueError(f"class ids must lie in [0, {self.config['num_classes']})")
        else:
            y = y.to(torch.float32).reshape(y.shape[0] if y.ndim else 1, -1)
            if y.shape[1] != self.config["regression_dim"]:
                raise ValueError(
                    f"regression targets must have {self.config['regression_dim']} columns, got {y.shape[1]}"
                )
        if y.shape[0] != n:
            raise ValueError(f"got {n} latents but {y.shape[0]} targets")
        return y

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.is_classifier:
            return nn.functional.cross_entropy(out, y)
        return nn.functional.mse_loss(out, y)

    # ---------------------------------------------------------------- training
    def train_step(self, latents: Any, targets: Any) -> float:
        """One Adam update on the given batch (use batches of ``batch_size``); returns the loss."""
        x = self._x(latents)
        y = self._y(targets, x.shape[0])
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(self.net(x), y)
        loss.backward()
        self.optimizer.step()
        self.num_updates += 1
        return float(loss.detach())

    def fit(self, latents: Any, targets: Any, steps: int) -> list[float]:
        """``steps`` updates on random minibatches of ``batch_size`` drawn from the data
        (reshuffled every pass); returns the losses."""
        x = self._x(latents)
        y = self._y(targets, x.shape[0])
        n, bs = x.shape[0], min(self.config["batch_size"], x.shape[0])
        losses, order, pos = [], self._rng.permutation(n), 0
        for _ in range(int(steps)):
            if pos + bs > n:
                order, pos = self._rng.permutation(n), 0
            idx = torch.as_tensor(order[pos : pos + bs], device=self.device)
            pos += bs
            losses.append(self.train_step(x[idx], y[idx]))
        return losses

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def predict(self, latents: Any) -> torch.Tensor:
        """Logits (classifier) or predicted targets (regressor), shape (batch, outputs)."""
        self.net.eval()
        return self.net(self._x(latents))

    def accuracy(self, latents: Any, labels: Any) -> float:
        if not self.is_classifier:
            raise TypeError("accuracy() needs a classification probe")
        out = self.predict(latents)
        y = self._y(labels, out.shape[0])
        return float((out.argmax(dim=1) == y).float().mean())

    def mse(self, latents: Any, targets: Any) -> float:
        """Mean squared error averaged over samples and output dimensions."""
        if self.is_classifier:
            raise TypeError("mse() needs a regression probe")
        out = self.predict(latents)
        y = self._y(targets, out.shape[0])
        return float(((out - y) ** 2).mean())

    def score(self, latents: Any, targets: Any) -> float:
        """:meth:`accuracy` for classifiers, :meth:`mse` for regressors."""
        return self.accuracy(latents, targets) if self.is_classifier else self.mse(latents, targets)

    # ---------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        return {
            "config": dict(self.config),
            "net": copy.deepcopy(self.net.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "rng": self._rng.bit_generator.state,
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        cfg = state["config"]
        for key in ("latent_dim", "num_classes", "regression_dim", "hidden"):
            if cfg[key] != self.config[key]:
                raise ValueError(f"state was saved from a probe with {key}={cfg[key]}, this one has {self.config[key]}")
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._rng.bit_generator.state = state["rng"]
        self.num_updates = int(state["num_updates"])

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], device: str | torch.device = "cpu") -> LatentProbe:
        cfg = dict(state["config"])
        probe = cls(cfg.pop("latent_dim"), cfg.pop("num_classes"), device=device, **cfg)
        probe.load_state_dict(state)
        return probe

    def __repr__(self) -> str:
        kind = (
            f"num_classes={self.config['num_classes']}"
            if self.is_classifier
            else f"regression_dim={self.config['regression_dim']}"
        )
        return f"LatentProbe(latent_dim={self.config['latent_dim']}, {kind}, hidden={self.config['hidden']})"


Key = tuple  # (task, domain)
Batch = Mapping[Hashable, tuple[Any, Mapping[str, Any]]]  # domain -> (latents, {task: targets})


class ProbeTracker:
    """One :class:`LatentProbe` per (task, domain), trained online and scored over time.

    Data are passed per domain as ``{domain: (latents, {task: targets})}``: the latents of a
    batch of that domain's data under the *current* representation, and the targets of every
    task measured on it. ``train_step`` updates each probe whose domain and task appear;
    ``evaluate`` records a score per probe at a step. Scores go into ``records`` and can be
    read back as curves, an accuracy matrix or the paper's forgetting.

    Args:
        latent_dim: latent size.
        hidden, lr, batch_size: probe hyper-parameters (paper: 256, 6e-4, 64).
        seed: seeds every probe (each gets its own derived seed) and the refit splits.
        eval_every: evaluation interval used by :meth:`update`.
        refit: default for :meth:`evaluate`: score a freshly trained probe instead of the
            online one (see the module docstring).
        refit_steps: optimiser steps of a refit probe.
        device: torch device for the probes.
    """

    def __init__(
        self,
        latent_dim: int,
        *,
        hidden: int = 256,
        lr: float = 6e-4,
        batch_size: int = 64,
        seed: int = 0,
        eval_every: int = 1,
        refit: bool = False,
        refit_steps: int = 300,
        device: str | torch.device = "cpu",
    ) -> None:
        if eval_every < 1:
            raise ValueError("eval_every must be >= 1")
        self.latent_dim = int(latent_dim)
        self.hidden, self.lr, self.batch_size = int(hidden), float(lr), int(batch_size)
        self.seed, self.eval_every = int(seed), int(eval_every)
        self.refit, self.refit_steps = bool(refit), int(refit_steps)
        self.device = device
        self.probes: dict[Key, LatentProbe] = {}
        self.records: list[dict[str, Any]] = []  # step, task, domain, metric, value, refit
        self._rng = np.random.default_rng(seed)

    # ---------------------------------------------------------------- setup
    def add_probe(
        self, task: str, domain: Hashable, *, num_classes: int | None = None, regression_dim: int | None = None
    ) -> LatentProbe:
        """Create the probe for ``task`` on ``domain`` (e.g. ``("object_id", 0)``)."""
        key = (task, domain)
        if key in self.probes:
            raise ValueError(f"a probe for {key} already exists")
        self._check_task_kind(task, num_classes is not None)
        probe = LatentProbe(
            self.latent_dim,
            num_classes,
            regression_dim=regression_dim,
            hidden=self.hidden,
            lr=self.lr,
            batch_size=self.batch_size,
            seed=self.seed * 7919 + len(self.probes),
            device=self.device,
        )
        self.probes[key] = probe
        return probe

    def _check_task_kind(self, task: str, classifier: bool) -> None:
        for (t, _), p in self.probes.items():
            if t == task and p.is_classifier != classifier:
                raise ValueError(f"task {task!r} mixes classification and regression probes")

    def _spec(self, probe: LatentProbe) -> dict[str, Any]:
        c = probe.config
        return {"num_classes": c["num_classes"], "regression_dim": c["regression_dim"]}

    def _items(self, data: Batch):
        for (task, domain), probe in self.probes.items():
            if domain in data:
                latents, targets = data[domain]
                if task in targets:
                    yield (task, domain), probe, latents, targets[task]

    # ---------------------------------------------------------------- training / evaluation
    def train_step(self, data: Batch) -> dict[Key, float]:
        """One update of every probe with data; a batch larger than ``batch_size`` is
        subsampled. Returns the losses by (task, domain)."""
        losses = {}
        for key, probe, latents, targets in self._items(data):
            n = len(latents)
            if n > self.batch_size:
                idx = np.sort(self._rng.choice(n, self.batch_size, replace=False))
                latents, targets = _take(latents, idx), _take(targets, idx)
            losses[key] = probe.train_step(latents, targets)
        return losses

    def evaluate(
        self, step: int, data: Batch, *, refit: bool | None = None, refit_data: Batch | None = None
    ) -> dict[Key, float]:
        """Score every probe with data at ``step`` and record it.

        With ``refit`` (default: the tracker's setting), a fresh probe of the same shape is
        trained for ``refit_steps`` on ``refit_data`` (or, when absent, on a random half of
        ``data``, scoring on the other half) and its score is recorded with ``refit=True``.
        """
        refit = self.refit if refit is None else bool(refit)
        scores = {}
        for key, probe, latents, targets in self._items(data):
            if refit:
                if refit_data is not None and key[1] in refit_data and key[0] in refit_data[key[1]][1]:
                    fit_x, fit_y = refit_data[key[1]][0], refit_data[key[1]][1][key[0]]
                    ev_x, ev_y = latents, targets
                else:
                    n = len(latents)
                    if n < 4:
                        raise ValueError(f"refit without refit_data needs >= 4 samples, got {n} for {key}")
                    perm = self._rng.permutation(n)
                    fit_idx, ev_idx = np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])
                    fit_x, fit_y = _take(latents, fit_idx), _take(targets, fit_idx)
                    ev_x, ev_y = _take(latents, ev_idx), _take(targets, ev_idx)
                fresh = LatentProbe(
                    self.latent_dim,
                    hidden=self.hidden,
                    lr=self.lr,
                    batch_size=self.batch_size,
                    seed=int(self._rng.integers(2**31)),
                    device=self.device,
                    **self._spec(probe),
                )
                fresh.fit(fit_x, fit_y, self.refit_steps)
                value = fresh.score(ev_x, ev_y)
            else:
                value = probe.score(latents, targets)
            scores[key] = value
            self.records.append(
                {
                    "step": int(step),
                    "task": key[0],
                    "domain": key[1],
                    "metric": probe.metric,
                    "value": float(value),
                    "refit": refit,
                }
            )
        return scores

    def update(self, step: int, train_data: Batch, eval_data: Batch | None = None) -> dict[Key, float] | None:
        """Train every probe once; every ``eval_every`` steps also evaluate on ``eval_data``
        (default: the training batch). Returns the scores when it evaluated, else ``None``."""
        self.train_step(train_data)
        if step % self.eval_every == 0:
            return self.evaluate(step, train_data if eval_data is None else eval_data)
        return None

    # ---------------------------------------------------------------- read-outs
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(t for t, _ in self.probes))

    def _task_higher_is_better(self, task: str) -> bool:
        for (t, _), p in self.probes.items():
            if t == task:
                return p.higher_is_better
        raise KeyError(f"no probe for task {task!r}")

    def curves(self, task: str, refit: bool = False) -> tuple[np.ndarray, dict[Hashable, np.ndarray]]:
        """``(steps, {domain: values})`` of one task; NaN where a domain was not evaluated.
        Several records at one step keep the last."""
        self._task_higher_is_better(task)
        rows = [r for r in self.records if r["task"] == task and r["refit"] == refit]
        steps = np.array(sorted({r["step"] for r in rows}), dtype=np.int64)
        where = {s: i for i, s in enumerate(steps)}
        domains = [d for (t, d) in self.probes if t == task]
        out = {d: np.full(steps.size, np.nan) for d in domains}
        for r in rows:
            out[r["domain"]][where[r["step"]]] = r["value"]
        return steps, out

    def accuracy_matrix(self, task: str, segments: Any, refit: bool = False, reduce: str = "last") -> np.ndarray:
        """:func:`~vase_rl.evaluation.forgetting.accuracy_matrix` of this task's curves;
        ``segments`` are :class:`~vase_rl.evaluation.forgetting.Segment` s in step units;
        columns of domains without a probe for this task are NaN."""
        steps, curves = self.curves(task, refit)
        return _accuracy_matrix(curves, segments, steps=steps, reduce=reduce, skip_missing=True)

    def forgetting(self, task: str, segments: Any, refit: bool = False) -> float:
        """The VASE paper's forgetting of this task (an MSE rise for regression tasks);
        segments of domains without a probe for this task are skipped."""
        steps, curves = self.curves(task, refit)
        return _paper_forgetting(
            curves, segments, steps=steps, higher_is_better=self._task_higher_is_better(task), skip_missing=True
        )

    def max_score(self, task: str, segments: Any, refit: bool = False) -> float:
        """Mean over domains of the best score while training on it (paper tables' "max")."""
        steps, curves = self.curves(task, refit)
        return _paper_max_accuracy(
            curves, segments, steps=steps, higher_is_better=self._task_higher_is_better(task), skip_missing=True
        )

    # ---------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        return {
            "config": {
                "latent_dim": self.latent_dim,
                "hidden": self.hidden,
                "lr": self.lr,
                "batch_size": self.batch_size,
                "seed": self.seed,
                "eval_every": self.eval_every,
                "refit": self.refit,
                "refit_steps": self.refit_steps,
            },
            "probes": [(key, p.state_dict()) for key, p in self.probes.items()],
            "records": copy.deepcopy(self.records),
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore probes, records and RNG; probes missing here are recreated from the state."""
        for key, ps in state["probes"]:
            key = tuple(key)
            if key not in self.probes:
                self.probes[key] = LatentProbe.from_state_dict(ps, device=self.device)
            else:
                self.probes[key].load_state_dict(ps)
        self.records = copy.deepcopy(list(state["records"]))
        self._rng.bit_generator.state = state["rng"]


def _take(x: Any, idx: np.ndarray) -> Any:
    if isinstance(x, torch.Tensor):
        return x[torch.as_tensor(idx, device=x.device)]
    return np.asarray(x)[idx]
