"""VASE: the continual learner that owns all state (``VASE_SPEC.md`` §1-9).

One update on a batch x of the current data (eq. 9):

1. encode: mu, log sigma^2, hidden = q_phi(x); sample z from the unmasked posterior;
2. atypicality alpha of the batch (eq. 4) and the hysteresis mask (eq. 5);
3. domain inference (Algorithm 1, eq. 6): classifier candidate s_hat, reconstruction loss
   under s_hat vs kappa x its reference, mask disagreement on s_hat's used latents;
4. masked posterior (eq. 2) -> decoder conditioned on the chosen domain -> reconstruction NLL;
5. gamma * |KL_active - C|^2 with the capacity schedule (eq. 3), or plain KL (entangled);
6. dreaming (eq. 7): snapshot dreams of past domains, W2 encoder and KL decoder proximity;
7. domain-classifier cross-entropy on real and dreamed data (gradient stopped into the encoder).

A single Adam optimiser trains encoder, decoder and classifier; the classifier's loss cannot
reach the encoder because it sees a detached hidden layer.

Non-finite losses: the update is skipped (no parameter or optimiser change, the update count
and capacity schedule do not advance), counted in ``skipped_updates`` and warned about; after
``max_consecutive_nonfinite`` skips in a row (or at the first one with ``nonfinite="raise"``) a
``FloatingPointError`` with the per-term diagnostics is raised.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vase_rl.batches import as_image_batch, extract_images
from vase_rl.config import VASEConfig
from vase_rl.domains import BatchScore, DomainMemory, Verdict
from vase_rl.dreaming import Snapshot, decoder_proximity, encoder_proximity, pixel_means
from vase_rl.masking import (
    apply_mask,
    atypicality,
    estimate_used_latents,
    tolerated_noise_curvature,
)
from vase_rl.networks import Decoder, DomainClassifier, Encoder
from vase_rl.objectives import (
    capacity_at,
    capacity_penalty,
    explained_fraction,
    gaussian_kl_to_standard,
    marginal_information_split,
    nll_normaliser,
    perfect_nll,
    reconstruction_nll,
    trivial_nll,
)
from vase_rl.window import FrameWindow

__all__ = ["VASE", "resolve_device", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"]

CHECKPOINT_FORMAT = "vase_rl.VASE"
CHECKPOINT_VERSION = 1


def resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but CUDA is not available; use device='cpu' or 'auto'")
    return dev


class VASE:
    """The VASE continual learner.

    >>> learner = VASE(VASEConfig.preset("cpu32"), seed=0)
    >>> stats = learner.update(images)          # (B, 1, 32, 32) float or (B, 32, 32, 1) uint8
    >>> z = learner.encode(images)              # (B, latent_dim) float32, masked posterior mean
    """

    def __init__(
        self, config: VASEConfig | None = None, seed: int | None = None, device: str | torch.device = "auto"
    ) -> None:
        if config is None:
            config = VASEConfig()
        if not isinstance(config, VASEConfig):
            raise TypeError(
                f"config must be a VASEConfig, got {type(config).__name__}; build one with "
                "VASEConfig.preset('cpu32') or VASEConfig(...)"
            )
        self.config = config
        self.device = resolve_device(device)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        self.seed = int(seed)
        self._amp_enabled = self._resolve_precision()

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.encoder = Encoder(config).to(self.device)
            self.decoder = Decoder(config).to(self.device)
            self.classifier = DomainClassifier(config).to(self.device)
        if self.execution["channels_last"]:
            self.encoder.to(memory_format=torch.channels_last)
            self.decoder.to(memory_format=torch.channels_last)
        # one Adam optimiser, two parameter groups: the classifier has its own (larger) rate so it
        # can follow a newly allocated domain within the domain's warm-up
        self.optimizer = torch.optim.Adam(
            [
                {"params": [*self.encoder.parameters(), *self.decoder.parameters()], "lr": config.learning_rate},
                {"params": list(self.classifier.parameters()), "lr": config.classifier_learning_rate},
            ]
        )
        self.snapshot: Snapshot | None = Snapshot(self.encoder, self.decoder) if config.dreaming else None
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)

        self.memory = DomainMemory(
            max_domains=config.max_domains if config.domain_inference else 1,
            kappa=config.kappa,
            rule=config.domain_test,
            patience=config.patience,
            warmup=config.domain_warmup,
            momentum=config.reference_momentum,
            evidence_threshold=config.evidence_threshold,
            evidence_allowance=config.evidence_allowance,
            score_floor=config.score_floor,
            recheck_every=config.recheck_every,
            mask_band=config.mask_threshold_high - config.mask_threshold_low,
            mask_high=config.mask_threshold_high,
            hold_while_pending=config.hold_while_pending,
            fallback_to_current=config.fallback_to_current,
        )
        self._mask = torch.ones(config.latent_dim, dtype=torch.bool, device=self.device)
        self.num_updates = 0
        self._grad_norm_avg: float | None = None  # running average of the clipped gradient norm
        self._probes: dict[int, torch.Tensor] = {}  # per left domain: the model's own images of it
        # recent accepted images of the current domain and their explained fraction then (domain,
        # images, fraction): what the model lost on them is its own drift (DomainMemory._model_drift)
        self._recent_probe: tuple[int, torch.Tensor, float] | None = None
        self.skipped_updates = 0
        self._consecutive_nonfinite = 0
        self.last_atypicality: np.ndarray | None = None
        self.last_kl_per_latent: np.ndarray | None = None
        self._eye = torch.eye(config.max_domains, device=self.device)
        # Algorithm 1's loss scale: NLL minus the likelihood's constant (0 for Bernoulli)
        self._nll_offset = nll_normaliser(config.likelihood, config.gaussian_std, math.prod(config.image_shape))
        self._compiled_encoder: Callable | None = None
        self.training = True
        # recent frames for observe()/update() without a batch (vase_rl/window.py)
        self.window = FrameWindow(config.window_size)
        # imagination-driven exploration (spec §10): a plugin the learner owns and saves
        self.imagination = None
        if config.imagination:
            from vase_rl.imagination import Imagination

            self.imagination = Imagination(config, self)

    # ------------------------------------------------------------------------------------
    # read-only state
    # ------------------------------------------------------------------------------------
    @property
    def current_domain(self) -> int:
        """The domain the learner is training (0 before the first update)."""
        return 0 if self.memory.current is None else int(self.memory.current)

    @property
    def num_domains(self) -> int:
        return self.memory.num_domains

    @property
    def latent_mask(self) -> np.ndarray:
        """The mask in force (bool, latent_dim): True = active latent."""
        return self._mask.detach().cpu().numpy().copy()

    @property
    def used_latents(self) -> np.ndarray | None:
        """Used latents of the current domain (None until first estimated)."""
        if self.memory.current is None:
            return None
        used = self.memory.records[self.memory.current].used_latents
        return None if used is None else np.asarray(used, dtype=bool)

    @property
    def domains(self) -> list[dict[str, Any]]:
        """Per-domain memory as plain data (mask, used latents, reference loss, counters)."""
        return [asdict(r) for r in self.memory.records]

    @property
    def domain_log(self) -> list[dict[str, Any]]:
        """Logged domain-inference decisions as plain dicts."""
        return [asdict(d) for d in self.memory.log]

    @property
    def capacity(self) -> float:
        cfg = self.config
        return capacity_at(self.num_updates, cfg.capacity_max, cfg.capacity_increment)

    # ------------------------------------------------------------------------------------
    # helpers
    # ------------------------------------------------------------------------------------
    def _parameters(self) -> list[torch.nn.Parameter]:
        return [*self.encoder.parameters(), *self.decoder.parameters(), *self.classifier.parameters()]

    def _resolve_precision(self, saved: dict[str, Any] | None = None) -> bool:
        """Resolve precision / channels_last / compile_inference for this device (``"auto"`` by
        capability and measurement, vase_rl/precision.py) into ``self.execution`` (plain data);
        ``saved``: a checkpoint's record, kept when it was made for the same device kind.
        Returns whether bf16 autocast is on."""
        from vase_rl.precision import resolve_execution, restore_execution

        execution = resolve_execution(self.config, self.device, stacklevel=4)
        if saved is not None:
            execution = restore_execution(saved, execution)
            layout = torch.channels_last if execution["channels_last"] else torch.contiguous_format
            self.encoder.to(memory_format=layout)
            self.decoder.to(memory_format=layout)
        self.execution: dict[str, Any] = execution
        self._compiled_encoder = None  # rebuilt for the resolved precision on the next encode()
        return execution["precision"] == "bf16"

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self._amp_enabled:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _prep(self, batch: Any) -> torch.Tensor:
        x = as_image_batch(batch, self.config.image_shape, self.device)
        if self.execution["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _encode_net(self, encoder: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with self._autocast():
            mu, logvar, hidden = encoder(x)
        return mu.float(), logvar.float(), hidden

    def _decode_net(self, decoder: torch.nn.Module, z: torch.Tensor, domains: torch.Tensor | int) -> torch.Tensor:
        if isinstance(domains, int):
            onehot = self._eye[domains].expand(z.shape[0], -1)
        else:
            onehot = self._eye[domains]
        with self._autocast():
            return decoder(z, onehot).float()

    def _nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return reconstruction_nll(params, x, self.config.likelihood, self.config.gaussian_std)

    def _domain_mask(self, domain: int) -> torch.Tensor:
        return torch.tensor(self.memory.records[domain].latent_mask, dtype=torch.bool, device=self.device)

    def _randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=self.device, generator=self.generator)

    def _check_domain(self, domain: int | None) -> int:
        if domain is None:
            return self.current_domain
        domain = int(domain)
        limit = max(self.num_domains, 1)
        if not 0 <= domain < limit:
            raise ValueError(
                f"domain {domain} does not exist; this learner has {self.num_domains} domain(s) (ids 0..{limit - 1})"
            )
        return domain

    # ------------------------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------------------------
    def observe(self, frames: Any) -> int:
        """Add frames (a batch, checked like :meth:`update`'s) to the window of recent frames that
        :meth:`update` draws from when called without a batch. Returns the frames held."""
        self.window.append(self._prep(frames))
        return len(self.window)

    def sample_window(self, n: int | None = None) -> torch.Tensor:
        """``n`` (default ``config.batch_size``) frames drawn without replacement from the window,
        with the learner's random stream."""
        return self.window.sample(self.config.batch_size if n is None else int(n), self.generator)

    def update(self, batch: Any = None) -> dict[str, Any]:
        """One optimisation step on a batch of current data, including domain inference. With no
        batch, the batch is drawn from the frames given to :meth:`observe`.

        Returns the step's scalars: ``loss``, ``recon``, ``kl``, ``capacity``, ``domain``,
        ``num_domains``, ``event``, ``held``, ``statistic`` / ``evidence`` (domain test),
        ``active_latents``, ``used_latents``, dreaming terms, ..."""
        cfg = self.config
        x = self._prep(self.sample_window() if batch is None else batch)
        if x.shape[0] < 2:
            raise ValueError(
                f"update needs at least 2 images per batch (atypicality fits a Gaussian to the batch); got {x.shape[0]}"
            )
        x_real = x
        if self.imagination is not None and cfg.imagination_fraction > 0 and self.num_domains > 0:
            n_imagined = max(1, int(round(x.shape[0] * cfg.imagination_fraction)))
            x = torch.cat([x, self.imagination.imagine(x[:n_imagined]).detach()], dim=0)
        self.encoder.train()
        self.decoder.train()
        self.classifier.train()
        step = self.num_updates
        capacity = capacity_at(step, cfg.capacity_max, cfg.capacity_increment)

        mu, logvar, hidden = self._encode_net(self.encoder, x)
        z_post = mu + (0.5 * logvar).exp() * self._randn(*mu.shape)
        alpha = atypicality(z_post[: x_real.shape[0]].detach())
        prior_noise = self._randn(*mu.shape)
        logits = self.classifier(hidden.detach().float()) if cfg.domain_inference else None

        view = _BatchView(self, self.memory, x, x_real.shape[0], z_post, prior_noise, alpha, logits)
        if self.memory.current is None:
            self.memory.allocate([True] * cfg.latent_dim, step)
        previous = self.memory.current
        if cfg.domain_inference and step % cfg.infer_every == 0:
            verdict = self.memory.decide(step, view)
        else:
            verdict = view.stay()
        if self.memory.current != previous:  # the stream left ``previous``: remember what it could do
            self._capture_probe(previous)
        self._capture_recent(verdict, x_real, step)
        chosen = verdict.domain
        mask_used = verdict.mask.to(self.device)
        nll_used = view.nll(chosen, mask_used)
        recon = nll_used.mean()
        active = mask_used.to(mu.dtype)
        kl_latent = gaussian_kl_to_standard(mu, logvar) * active
        kl_example = kl_latent.sum(1)
        information, marginal = marginal_information_split(mu, logvar)
        information, marginal = (information * active).sum(), (marginal * active).sum()
        # what the capacity budgets: the KL (the paper) or the information part of it
        budgeted = kl_example.detach().mean() if cfg.capacity_measure == "kl" else information.detach()
        capacity_target = capacity
        if cfg.capacity_per_active:  # masked latents are exactly the prior and hold no capacity
            capacity_target = capacity * float(mask_used.float().mean())
        if cfg.capacity_lead is not None:  # the target never runs ahead of the budgeted KL by more than the lead
            capacity_target = min(capacity_target, float(budgeted) + cfg.capacity_lead)
        stats: dict[str, Any] = {
            "step": self.num_updates,
            "recon": float(recon.detach()),
            "kl": float(kl_example.detach().mean()),
            "information": float(information.detach()),
            "marginal_kl": float(marginal.detach()),
            "capacity": capacity,
            "capacity_target": capacity_target,
            "domain": chosen,
            "event": verdict.event,
            "statistic": verdict.statistic,
            "evidence": verdict.evidence,
            "num_domains": self.num_domains,
            "atypicality_max": float(alpha.max()),
            "skipped": False,
            "held": not verdict.train,
        }
        self.last_atypicality = alpha.detach().cpu().numpy()
        self.last_kl_per_latent = kl_latent.detach()[: x_real.shape[0]].mean(0).cpu().numpy()
        if not verdict.train:
            if not math.isfinite(stats["recon"]):  # a broken model is an error, never a quiet hold
                return self._skip_nonfinite(step, {"recon": recon}, chosen, verdict.event)
            # held: a batch under suspicion of coming from another domain trains nothing and
            # moves no reference (docs/DESIGN_NOTES.md); the mask in force stays the domain's
            self._mask = mask_used.detach().clone()
            record = self.memory.records[chosen]
            stats.update(
                loss=float("nan"),
                regulariser=float("nan"),
                active_latents=int(self._mask.sum()),
                used_latents=-1 if record.used_latents is None else int(sum(record.used_latents)),
            )
            return stats

        if cfg.objective == "entangled":
            regulariser = kl_example.mean()
        elif cfg.capacity_measure == "information":  # gamma (I - C)^2 + M: the mismatch keeps its ELBO weight
            regulariser = cfg.gamma * (information - capacity_target) ** 2 + marginal
        else:
            regulariser = capacity_penalty(kl_example, capacity_target, cfg.gamma, cfg.capacity_reduction)
        loss = recon + regulariser
        terms: dict[str, torch.Tensor] = {"recon": recon, "regulariser": regulariser}
        if cfg.atypicality_mask and cfg.masked_prior_weight > 0 and not bool(mask_used.all()):
            masked = (~mask_used).to(mu.dtype)
            terms["masked_prior"] = (gaussian_kl_to_standard(mu, logvar) * masked).sum(1).mean()
            loss = loss + cfg.masked_prior_weight * terms["masked_prior"]
        if logits is not None and self.num_domains > 1:  # nothing to classify with one domain
            target = torch.full((x.shape[0],), chosen, dtype=torch.long, device=self.device)
            terms["classifier"] = F.cross_entropy(logits, target)
            loss = loss + cfg.classifier_weight * terms["classifier"]
        if self._dreaming_active():
            dream = self._dream_terms(chosen, cfg.dream_batch_size)
            terms.update(dream)
            loss = (
                loss
                + cfg.dream_encoder_weight * dream["dream_encoder"]
                + cfg.dream_decoder_weight * dream["dream_decoder"]
            )
            if "dream_classifier" in dream:
                loss = loss + cfg.classifier_weight * dream["dream_classifier"]

        loss_value = float(loss.detach())
        if not np.isfinite(loss_value):
            return self._skip_nonfinite(step, terms, chosen, verdict.event)
        self._consecutive_nonfinite = 0
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        stats["grad_norm"], stats["grad_clipped"] = self._clip_gradients()
        self.optimizer.step()

        # ---- book-keeping ------------------------------------------------------------------
        self._mask = mask_used.detach().clone()
        self.memory.count_update(chosen, step)
        record = self.memory.records[chosen]
        self.num_updates += 1
        if self.snapshot is not None and self.num_updates % cfg.snapshot_every == 0:
            self.snapshot.sync(self.encoder, self.decoder, self.num_updates)
        # used latents: first estimated when the domain's warm-up ends (so the mask test has them
        # as soon as the domain can be rejected), then refreshed on a schedule
        if (
            cfg.domain_inference
            and cfg.atypicality_mask
            and (record.num_updates % cfg.used_refresh_every == 0 or record.num_updates == cfg.domain_warmup)
        ):
            self._refresh_used_latents(x_real, chosen)
        imagination_stats: dict[str, float] = {}
        if self.imagination is not None and self.num_updates % cfg.imagination_every == 0:
            imagination_stats = self.imagination.train_step(x_real)

        stats.update(
            step=self.num_updates,
            loss=loss_value,
            regulariser=float(regulariser.detach()),
            num_domains=self.num_domains,
            active_latents=int(self._mask.sum()),
            used_latents=-1 if record.used_latents is None else int(sum(record.used_latents)),
        )
        for key in ("classifier", "dream_encoder", "dream_decoder", "dream_classifier", "masked_prior"):
            if key in terms:
                stats[key] = float(terms[key].detach())
        for key, value in imagination_stats.items():
            stats[f"imagination_{key}"] = float(value)
        return stats

    # ---- probes: how much of a stored domain has the model forgotten? ---------------------------
    @torch.no_grad()
    def _probe_fraction(self, domain: int, images: torch.Tensor) -> float:
        """Mean explained fraction of ``images`` rebuilt through ``domain``'s mask and decoder
        (posterior means, masked latents at the prior mean: deterministic)."""
        cfg = self.config
        mu, _, _ = self._encode_net(self.encoder, images)
        z = apply_mask(mu, self._domain_mask(domain), None)
        nll = self._nll(self._decode_net(self.decoder, z, domain), images)
        return float(explained_fraction(nll, images, cfg.likelihood, cfg.gaussian_std).mean())

    @torch.no_grad()
    def _capture_probe(self, domain: int, n: int = 32) -> None:
        """When the stream leaves ``domain``: the model draws ``n`` images of it from the prior
        (its own dreams, not data) and records how well it rebuilds them. Later, the drop of that
        score estimates what the model has forgotten of the domain, and domain inference lowers the
        domain's reference by it before judging a return (docs/DESIGN_NOTES.md)."""
        z = self._randn(n, self.config.latent_dim)
        images = pixel_means(self._decode_net(self.decoder, z, domain), self.config.likelihood)
        if self.execution["channels_last"]:
            images = images.contiguous(memory_format=torch.channels_last)
        self._probes[domain] = images.detach()
        self.memory.records[domain].probe_fraction = self._probe_fraction(domain, images)

    @torch.no_grad()
    def _capture_recent(self, verdict: Any, x_real: torch.Tensor, step: int, n: int = 32) -> None:
        """Keep recent images of the current domain from a batch accepted with no evidence of a
        change (every ``recheck_every`` updates), with the explained fraction they have now."""
        cfg = self.config
        if not (cfg.domain_inference and cfg.domain_test == "evidence"):
            return
        if not (verdict.train and verdict.event == "stay" and self.memory.evidence == 0.0):
            return
        recent = self._recent_probe
        if recent is not None and recent[0] == verdict.domain and step % cfg.recheck_every:
            return
        images = x_real[:n].detach().clone()
        self._recent_probe = (int(verdict.domain), images, self._probe_fraction(int(verdict.domain), images))

    def model_drift(self) -> float:
        """Explained fraction the model has lost on recent accepted images of the current domain
        since they were kept (0 when there are none): a drop of the current domain's scores that
        these images share is the model's, not the data's."""
        recent = self._recent_probe
        if recent is None or recent[0] != self.memory.current:
            return 0.0
        domain, images, then = recent
        return max(0.0, then - self._probe_fraction(domain, images))

    def forgetting(self, domain: int) -> float:
        """Explained fraction the model has lost on ``domain``'s probe images since the stream
        left it (0 for the current domain or one never left)."""
        domain = self._check_domain(domain)
        rec = self.memory.records[domain]
        if domain not in self._probes or rec.probe_fraction is None:
            return 0.0
        return max(0.0, rec.probe_fraction - self._probe_fraction(domain, self._probes[domain]))

    def _clip_gradients(self) -> tuple[float, bool]:
        """Clip the networks' gradient norm at ``grad_clip`` times its running average.

        A batch from an unfamiliar domain can have a reconstruction NLL hundreds of times the
        usual (inverted digits: ~17,000 vs ~80 nats); Adam's second moments remember the small
        gradients, so its first steps on the new domain are many times the learning rate and
        overwrite the shared layers within ten updates, before dreaming can act
        (docs/DESIGN_NOTES.md). The average follows the clipped norms, so one shock cannot
        raise the limit."""
        params = [p for p in (*self.encoder.parameters(), *self.decoder.parameters()) if p.grad is not None]
        norm = float(torch.nn.utils.clip_grad_norm_(params, float("inf")))
        limit = None
        if self.config.grad_clip is not None and self._grad_norm_avg is not None and self.num_updates >= 20:
            limit = self.config.grad_clip * self._grad_norm_avg
        clipped = limit is not None and norm > limit
        if clipped:
            for p in params:
                p.grad.mul_(limit / norm)
        seen = min(norm, limit) if limit is not None else norm
        if math.isfinite(seen):
            avg = self._grad_norm_avg
            self._grad_norm_avg = seen if avg is None else avg + 0.02 * (seen - avg)
        return norm, clipped

    def batch_mask(self, alpha: torch.Tensor, domain: int, memory: DomainMemory | None = None) -> torch.Tensor:
        """The mask ``domain`` would train a batch of atypicality ``alpha`` with (spec §4): its
        stored mask continued by the hysteresis filter; all latents with the mask switched off.
        While the learner itself is young (its first ``domain_warmup`` updates) the mask stays as
        allocated: a young model's posterior marginals swing far from the prior while it learns,
        and a masked latent gets no gradient that could bring it back. Later domains are masked
        from their first batch, so a latent atypical on a new domain's data is never learnt by
        its decoder only to be masked when a warm-up ends (docs/DESIGN_NOTES.md)."""
        if not self.config.atypicality_mask:
            return torch.ones(self.config.latent_dim, dtype=torch.bool, device=self.device)
        memory = self.memory if memory is None else memory
        return memory.batch_mask(domain, alpha, frozen=self.num_updates < self.config.domain_warmup)

    @torch.no_grad()
    def infer_domain(self, batch: Any) -> dict[str, Any]:
        """What domain inference would decide for ``batch`` now, with no side effects: no training,
        no change to the domain memory, mask, log or random stream.

        Returns ``domain``/``event`` (what :meth:`update` would train on: "stay", "held",
        "switch", "new" with the id it would get, "pending", "max_domains"), ``vote``,
        ``statistic`` and ``evidence`` (the evidence rule's standardised deficit and CUSUM),
        ``candidate`` (the classifier's s_hat), ``probabilities`` (its mean softmax over the known
        domains), ``candidate_loss`` and ``reference_loss`` (the paper's L and L̃ of the logged
        candidate) and ``mask_disagreement``. The posterior sample uses the learner's random
        stream, restored afterwards."""
        x = self._prep(batch)
        if self.num_domains == 0 or not self.config.domain_inference:
            first = self.num_domains == 0
            return {
                "candidate": None,
                "probabilities": np.zeros(0, dtype=np.float32),
                "candidate_loss": None,
                "reference_loss": None,
                "mask_disagreement": 0,
                "vote": "first" if first else "off",
                "statistic": None,
                "evidence": None,
                "domain": 0,
                "event": "new" if first else "stay",
            }
        saved = self.generator.get_state()
        preview = copy.deepcopy(self.memory)
        preview.log, preview.log_stay_every = [], 1
        try:
            mu, logvar, hidden = self._encode_net(self.encoder, x)
            z_post = mu + (0.5 * logvar).exp() * self._randn(*mu.shape)
            alpha = atypicality(z_post)
            prior_noise = self._randn(*mu.shape)
            logits = self.classifier(hidden.float())
            view = _BatchView(self, preview, x, x.shape[0], z_post, prior_noise, alpha, logits)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                verdict = preview.decide(self.num_updates, view)
        finally:
            self.generator.set_state(saved)
        decision = preview.log[-1]  # every decision of the preview is logged
        probs = view.probabilities()
        return {
            "candidate": int(probs.argmax()),
            "probabilities": probs.cpu().numpy(),
            "candidate_loss": decision.candidate_loss,
            "reference_loss": decision.reference_loss,
            "mask_disagreement": decision.mask_disagreement,
            "vote": decision.vote,
            "statistic": verdict.statistic,
            "evidence": verdict.evidence,
            "domain": verdict.domain,
            "event": verdict.event,
        }

    def _dreaming_active(self) -> bool:
        """Dreams need a trained snapshot and a past to dream of: another domain, or, with domain
        inference off, the one domain all data belongs to (eq. 7 with s' the only domain: the
        snapshot is distilled on its own dreams). With domain inference on and a single domain so
        far there is no past domain; dreaming it would only pull the domain being learnt back
        towards its own older copy (measured: recon 139 vs 76 nats after 550 updates, cpu32)."""
        if not (self.config.dreaming and self.snapshot is not None and self.snapshot.synced_at > 0):
            return False
        return self.num_domains > 1 or (not self.config.domain_inference and self.num_domains == 1)

    def _dream_terms(self, chosen: int, n: int) -> dict[str, torch.Tensor]:
        """Dreaming losses (eq. 7) for ``n`` dreams of past domains: every domain but ``chosen``,
        or the only domain when there is one (see :meth:`_dreaming_active`)."""
        cfg = self.config
        past = [d for d in range(self.num_domains) if d != chosen] or [chosen]
        past_t = torch.tensor(past, device=self.device)
        idx = torch.randint(len(past), (n,), device=self.device, generator=self.generator)
        dream_domains = past_t[idx]
        z = self._randn(n, cfg.latent_dim)
        with torch.no_grad():
            params_old = self._decode_net(self.snapshot.decoder, z, dream_domains)
            x_dream = pixel_means(params_old, cfg.likelihood)
            if self.execution["channels_last"]:
                x_dream = x_dream.contiguous(memory_format=torch.channels_last)
            mu_old, logvar_old, _ = self._encode_net(self.snapshot.encoder, x_dream)
        mu, logvar, hidden = self._encode_net(self.encoder, x_dream)
        params_new = self._decode_net(self.decoder, z, dream_domains)
        out = {
            "dream_encoder": encoder_proximity(mu, logvar, mu_old, logvar_old, cfg.dream_reduction),
            "dream_decoder": decoder_proximity(
                params_old, params_new, cfg.likelihood, cfg.gaussian_std, cfg.dream_reduction
            ),
        }
        if cfg.domain_inference and self.num_domains > 1:
            out["dream_classifier"] = F.cross_entropy(self.classifier(hidden.detach().float()), dream_domains)
        return out

    def dreaming_losses(self, n: int = 32, domain: int | None = None) -> dict[str, float]:
        """The dreaming proximities right now (no update, RNG of a fresh generator seeded from the
        learner's seed, so inspection never perturbs training). Empty with dreaming off."""
        chosen = self._check_domain(domain)
        if not self._dreaming_active():
            return {}
        saved = self.generator.get_state()
        try:
            self.generator.manual_seed(self.seed + 1)
            with torch.no_grad():
                terms = self._dream_terms(chosen, n)
        finally:
            self.generator.set_state(saved)
        return {k: float(v) for k, v in terms.items()}

    def sync_snapshot(self) -> None:
        """Copy the current encoder/decoder into the dreaming snapshot now."""
        if self.snapshot is None:
            raise RuntimeError("this learner has dreaming switched off (config.dreaming=False); it has no snapshot")
        self.snapshot.sync(self.encoder, self.decoder, self.num_updates)

    def _skip_nonfinite(self, step: int, terms: dict[str, torch.Tensor], chosen: int, event: str) -> dict[str, Any]:
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_updates += 1
        self._consecutive_nonfinite += 1
        diag = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        message = (
            f"non-finite VASE loss at update {step} ({diag}); capacity={self.capacity:.3g}, "
            f"lr={self.config.learning_rate:g}. The update was skipped: weights and optimiser are unchanged."
        )
        if self.config.nonfinite == "raise" or self._consecutive_nonfinite >= self.config.max_consecutive_nonfinite:
            raise FloatingPointError(
                message + f" ({self._consecutive_nonfinite} in a row; lower learning_rate or gamma)"
            )
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        return {
            "step": self.num_updates,
            "loss": float("nan"),
            "domain": chosen,
            "event": event,
            "num_domains": self.num_domains,
            "skipped": True,
        }

    def _refresh_used_latents(self, x: torch.Tensor, domain: int) -> None:
        """Re-estimate which latents the decoder of ``domain`` uses (spec §5), on part of ``x``,
        at the posterior means (masked latents at the prior mean)."""
        cfg = self.config
        xs = x[: cfg.used_estimation_batch]
        mask = self._domain_mask(domain)
        with torch.no_grad():
            mu, _, _ = self._encode_net(self.encoder, xs)
            z = apply_mask(mu, mask, None)
        if cfg.used_estimator == "curvature":
            onehot = self._eye[domain].expand(z.shape[0], -1)

            def decode(zz: torch.Tensor) -> torch.Tensor:  # fp32, eval: a pure function of z
                return self.decoder(zz, onehot)

            used, sigma = tolerated_noise_curvature(
                decode, z, cfg.likelihood, cfg.gaussian_std, threshold=cfg.used_noise_threshold
            )
        else:

            def nll(zz: torch.Tensor) -> torch.Tensor:
                return self._nll(self._decode_net(self.decoder, zz, domain), xs)

            used, sigma = estimate_used_latents(
                nll,
                z,
                steps=cfg.used_estimation_steps,
                lr=cfg.used_estimation_lr,
                threshold=cfg.used_noise_threshold,
                generator=self.generator,
            )
        self.memory.set_used(domain, (used & mask).tolist(), sigma.tolist())

    def refresh_used_latents(self, batch: Any, domain: int | None = None) -> np.ndarray:
        """Estimate the used latents of ``domain`` (default: current) on ``batch`` now."""
        if self.num_domains == 0:
            raise RuntimeError("no domain exists yet; call update() first")
        domain = self._check_domain(domain)
        self._refresh_used_latents(self._prep(batch), domain)
        return np.asarray(self.memory.records[domain].used_latents, dtype=bool)

    def fit(
        self,
        stream: Iterable[Any],
        steps: int | None = None,
        progress: bool = False,
        callback: Callable[[dict[str, Any]], Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Run ``update`` on the batches of ``stream`` (at most ``steps`` of them).

        Stream items may be arrays/tensors, ``(images, ...)`` tuples, dicts with ``"images"`` or
        objects with ``.images`` (e.g. ``vase_rl.envs.StreamBatch``). ``callback(stats)``
        returning ``False`` stops early. Returns the list of per-update stats."""
        if steps is not None and steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        bar = _progress_bar(progress, steps)
        history: list[dict[str, Any]] = []
        try:
            for i, item in enumerate(stream):
                if steps is not None and i >= steps:
                    break
                stats = self.update(extract_images(item))
                history.append(stats)
                if bar is not None:
                    bar.update(1)
                    if i % 20 == 0 and not stats.get("skipped"):
                        bar.set_postfix(
                            loss=f"{stats['loss']:.1f}",
                            kl=f"{stats['kl']:.1f}",
                            dom=stats["domain"],
                            n_dom=stats["num_domains"],
                        )
                if callback is not None and callback(stats) is False:
                    break
        finally:
            if bar is not None:
                bar.close()
        return history

    # ------------------------------------------------------------------------------------
    # inference (no side effects)
    # ------------------------------------------------------------------------------------
    def _eval_mode(self) -> None:
        self.encoder.eval()
        self.decoder.eval()
        self.classifier.eval()

    @torch.no_grad()
    def encode_tensor(self, x: torch.Tensor, domain: int | None = None) -> torch.Tensor:
        """Masked posterior means for a prepared (B, C, H, W) float tensor on the learner's device."""
        self._eval_mode()
        encoder = self._compiled()
        mu, _, _ = self._encode_net(encoder, x)
        mask = self._mask if domain is None or self.num_domains == 0 else self._domain_mask(self._check_domain(domain))
        return apply_mask(mu, mask, None)

    def encode(self, batch: Any, domain: int | None = None) -> np.ndarray:
        """(B, latent_dim) float32: posterior means with masked latents set to the prior mean 0.
        The mask is the one in force, or the stored mask of ``domain``."""
        return self.encode_tensor(self._prep(batch), domain).float().cpu().numpy().astype(np.float32, copy=False)

    @torch.no_grad()
    def posterior(self, batch: Any) -> tuple[np.ndarray, np.ndarray]:
        """Unmasked posterior (mu, log sigma^2), each (B, latent_dim)."""
        self._eval_mode()
        mu, logvar, _ = self._encode_net(self.encoder, self._prep(batch))
        return mu.cpu().numpy(), logvar.cpu().numpy()

    @torch.no_grad()
    def predict_domain(self, batch: Any) -> np.ndarray:
        """Per-image classifier guess of the domain among those seen (no inference side effects)."""
        self._eval_mode()
        _, _, hidden = self._encode_net(self.encoder, self._prep(batch))
        n = max(self.num_domains, 1)
        return self.classifier(hidden.float())[:, :n].argmax(1).cpu().numpy()

    @torch.no_grad()
    def decode(self, z: Any, domain: int | None = None) -> np.ndarray:
        """Images (B, C, H, W) in [0, 1] decoded from latents ``z`` (B, latent_dim) as ``domain``."""
        self._eval_mode()
        zt = torch.as_tensor(
            np.asarray(z) if not isinstance(z, torch.Tensor) else z, dtype=torch.float32, device=self.device
        )
        if zt.ndim != 2 or zt.shape[1] != self.config.latent_dim:
            raise ValueError(f"z must have shape (B, {self.config.latent_dim}), got {tuple(zt.shape)}")
        if not bool(torch.isfinite(zt).all()):
            raise ValueError("z contains NaN/inf")
        params = self._decode_net(self.decoder, zt, self._check_domain(domain))
        return pixel_means(params, self.config.likelihood).cpu().numpy()

    @torch.no_grad()
    def explained_fraction(self, batch: Any, domain: int | None = None) -> float:
        """How well ``domain`` (default: current) rebuilds ``batch`` from its masked posterior
        means, as the mean explained fraction (``objectives.explained_fraction``): 1 for a perfect
        reconstruction, 0 for no better than each image's mean intensity, negative for worse."""
        if self.num_domains == 0:
            raise ValueError("this learner has no domain yet: call update() on some images first")
        self._eval_mode()
        return self._probe_fraction(self._check_domain(domain), self._prep(batch))

    def reconstruct(self, batch: Any, domain: int | None = None) -> np.ndarray:
        """Decode the masked posterior means of ``batch`` as ``domain`` (default: current)."""
        return self.decode(self.encode(batch, domain), domain)

    def _compiled(self) -> Callable:
        """The encoder that ``encode`` runs (vase_rl/precision.py ``InferenceEncoder``): this
        learner's own, or under bf16 a bf16-weight copy kept in sync with it; compiled when
        ``execution["compile_inference"]``."""
        if self._compiled_encoder is None:
            from vase_rl.precision import InferenceEncoder

            self._compiled_encoder = InferenceEncoder(
                self.encoder, bf16=self._amp_enabled, compile=self.execution["compile_inference"]
            )
        return self._compiled_encoder

    # ------------------------------------------------------------------------------------
    # persistence
    # ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        from vase_rl import __version__

        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "vase_rl_version": __version__,
            "config": self.config.to_dict(),
            "seed": self.seed,
            "encoder": self.encoder.state_dict(),
            "decoder": self.decoder.state_dict(),
            "classifier": self.classifier.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "snapshot": None
            if self.snapshot is None
            else {
                "encoder": self.snapshot.encoder.state_dict(),
                "decoder": self.snapshot.decoder.state_dict(),
                "synced_at": self.snapshot.synced_at,
            },
            "memory": self.memory.state_dict(),
            "mask": self._mask.tolist(),
            "num_updates": self.num_updates,
            "grad_norm_avg": self._grad_norm_avg,
            "probes": {int(d): t.detach().cpu().contiguous() for d, t in self._probes.items()},
            "recent_probe": None
            if self._recent_probe is None
            else (self._recent_probe[0], self._recent_probe[1].detach().cpu().contiguous(), self._recent_probe[2]),
            "skipped_updates": self.skipped_updates,
            "imagination": None if self.imagination is None else self.imagination.state_dict(),
            "window": self.window.state_dict(),
            "rng_device": self.device.type,
            "rng": self.generator.get_state(),
            "execution": dict(self.execution),  # the resolved precision/layout (vase_rl/precision.py)
        }

    def save(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """Write the whole state to ``path`` (atomically) and the config beside it as
        ``<path>.config.json`` for people to read.

        ``extra``: plain data (numbers, strings, lists, dicts, tensors) stored next to the
        learner, e.g. a wrapper's settings or a run's progress; :meth:`load` ignores it and
        :meth:`read_extra` returns it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        if extra is not None:
            if not isinstance(extra, dict):
                raise TypeError(f"extra must be a dict of plain data, got {type(extra).__name__}")
            state["extra"] = extra
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        self.config.save(path.with_name(path.name + ".config.json"))
        return path

    @staticmethod
    def _read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no VASE checkpoint at {path}")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"{path} is not a readable vase_rl checkpoint (corrupt or another format): {err}") from err

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "auto") -> VASE:
        """Restore a learner saved with :meth:`save`; it continues exactly as the original."""
        return cls.from_state_dict(cls._read_checkpoint(path), device=device, source=str(path))

    @classmethod
    def read_extra(cls, path: str | os.PathLike) -> dict[str, Any]:
        """The ``extra`` dict stored by :meth:`save` (empty if none)."""
        state = cls._read_checkpoint(path)
        extra = state.get("extra") if isinstance(state, dict) else None
        return dict(extra) if isinstance(extra, dict) else {}

    @classmethod
    def from_state_dict(cls, state: Any, device: str | torch.device = "auto", source: str = "state") -> VASE:
        """Rebuild a learner from :meth:`state_dict` output. Top-level keys this version does not
        know (``extra`` and any others) are ignored, so callers may store their own data beside
        the learner's."""
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{source} is not a vase_rl VASE checkpoint (missing format marker)")
        version = state.get("format_version")
        if version != CHECKPOINT_VERSION:
            raise ValueError(
                f"{source} has checkpoint format version {version}; this vase_rl reads version "
                f"{CHECKPOINT_VERSION} (upgrade/downgrade vase_rl to load it)"
            )
        try:
            config = VASEConfig.from_dict(dict(state["config"]))
            learner = cls(config, seed=int(state["seed"]), device=device)
            learner.encoder.load_state_dict(state["encoder"])
            learner.decoder.load_state_dict(state["decoder"])
            learner.classifier.load_state_dict(state["classifier"])
            learner.optimizer.load_state_dict(state["optimizer"])
            if learner.snapshot is not None:
                if state["snapshot"] is None:
                    raise ValueError("checkpoint has no dreaming snapshot but its config enables dreaming")
                learner.snapshot.encoder.load_state_dict(state["snapshot"]["encoder"])
                learner.snapshot.decoder.load_state_dict(state["snapshot"]["decoder"])
                learner.snapshot.synced_at = int(state["snapshot"]["synced_at"])
            if learner.imagination is not None:
                if state.get("imagination") is None:
                    raise ValueError("checkpoint has no imagination state but its config enables imagination")
                learner.imagination.load_state_dict(state["imagination"])
            learner.memory.load_state_dict(state["memory"])
            if state.get("window") is not None:
                learner.window.load_state_dict(state["window"], learner.device)
            learner._mask = torch.tensor(state["mask"], dtype=torch.bool, device=learner.device)
            learner.num_updates = int(state["num_updates"])
            learner._grad_norm_avg = state.get("grad_norm_avg")
            learner._probes = {int(d): t.to(learner.device) for d, t in (state.get("probes") or {}).items()}
            recent = state.get("recent_probe")
            learner._recent_probe = (
                None if recent is None else (int(recent[0]), recent[1].to(learner.device), float(recent[2]))
            )
            learner.skipped_updates = int(state["skipped_updates"])
            learner._amp_enabled = learner._resolve_precision(state.get("execution"))
        except (KeyError, RuntimeError, TypeError) as err:
            raise ValueError(f"{source} is an incompatible or damaged vase_rl checkpoint: {err}") from err
        if state.get("rng_device") == learner.device.type:
            learner.generator.set_state(state["rng"])
        else:
            warnings.warn(
                f"checkpoint RNG was saved on {state.get('rng_device')} and is loaded on "
                f"{learner.device.type}; the random stream is re-seeded, so runs will not be bit-identical",
                RuntimeWarning,
                stacklevel=2,
            )
            learner.generator.manual_seed(learner.seed + learner.num_updates)
        return learner

    def __repr__(self) -> str:
        return (
            f"VASE(preset={self.config.preset_name!r}, image_shape={self.config.image_shape}, "
            f"latent_dim={self.config.latent_dim}, updates={self.num_updates}, domains={self.num_domains}, "
            f"device={self.device.type})"
        )


def _progress_bar(progress: bool, total: int | None):
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        warnings.warn(
            "progress=True needs tqdm (pip install tqdm); continuing without a progress bar",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return tqdm(total=total, desc="VASE", unit="upd")


class _BatchView:
    """One batch as :meth:`DomainMemory.decide` sees it: the batch's atypicality and, computed on
    demand and cached, its mask and reconstruction under any domain (one decoder pass each, on
    the posterior sample the training step uses). Scores use the real images only (not
    imagined ones); the per-example NLLs keep their graph so the chosen one is trained on."""

    def __init__(
        self,
        learner: VASE,
        memory: DomainMemory,
        x: torch.Tensor,
        n_real: int,
        z_post: torch.Tensor,
        prior_noise: torch.Tensor,
        alpha: torch.Tensor,
        logits: torch.Tensor | None,
    ) -> None:
        self.learner, self.memory = learner, memory
        self.x, self.n_real, self.z_post, self.prior_noise = x, n_real, z_post, prior_noise
        self.alpha = alpha
        self.logits = logits
        self._nll: dict[tuple[int, tuple[bool, ...]], torch.Tensor] = {}
        self._scores: dict[int, BatchScore] = {}
        self._reference_nll: tuple[torch.Tensor, torch.Tensor] | None = None
        self._forgetting: dict[int, float] = {}
        self._model_drift: float | None = None

    def nll(self, domain: int, mask: torch.Tensor) -> torch.Tensor:
        """Per-example NLL of the batch decoded as ``domain`` with ``mask`` (cached)."""
        key = (int(domain), tuple(mask.bool().tolist()))
        if key not in self._nll:
            lrn = self.learner
            z = apply_mask(self.z_post, mask, self.prior_noise)
            self._nll[key] = lrn._nll(lrn._decode_net(lrn.decoder, z, int(domain)), self.x)
        return self._nll[key]

    def score(self, domain: int) -> BatchScore:
        if domain not in self._scores:
            lrn, cfg = self.learner, self.learner.config
            mask = lrn.batch_mask(self.alpha, domain, self.memory) if domain < self.memory.num_domains else lrn._mask
            nll = self.nll(domain, mask)[: self.n_real].detach()
            x = self.x[: self.n_real]
            if self._reference_nll is None:  # the same images for every domain: compute once
                self._reference_nll = (
                    perfect_nll(x, cfg.likelihood, cfg.gaussian_std),
                    trivial_nll(x, cfg.likelihood, cfg.gaussian_std),
                )
            perfect, trivial = self._reference_nll
            frac = explained_fraction(nll, x, cfg.likelihood, cfg.gaussian_std, perfect=perfect, trivial=trivial)
            self._scores[domain] = BatchScore(
                fraction_mean=float(frac.mean()),
                fraction_var=float(frac.var()) if frac.numel() > 1 else 0.0,
                n=int(frac.numel()),
                recon_loss=float(nll.mean()) - lrn._nll_offset,
                mask=mask,
                fractions=frac,
            )
        return self._scores[domain]

    def model_drift(self) -> float:
        if self._model_drift is None:
            self._model_drift = self.learner.model_drift()
        return self._model_drift

    def forgetting(self, domain: int) -> float:
        if domain not in self._forgetting:
            self._forgetting[domain] = self.learner.forgetting(domain)
        return self._forgetting[domain]

    def probabilities(self) -> torch.Tensor:
        n = max(self.memory.num_domains, 1)
        if self.logits is None:
            return torch.ones(1, device=self.x.device)
        return self.logits[: self.n_real, :n].detach().float().softmax(1).mean(0)

    def candidate(self) -> int:
        return int(self.probabilities().argmax())

    def stay(self) -> Verdict:
        """The verdict without domain inference: the current domain, its batch mask."""
        cur = self.memory.current
        score = self.score(cur)
        self.memory.records[cur].latent_mask = score.mask.bool().tolist()
        return Verdict(cur, "stay", True, score.mask)
