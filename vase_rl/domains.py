"""Domain inference of VASE (``VASE_SPEC.md`` §6, eq. 6 and Algorithm 1).

- ``algorithm1_vote`` is the pure decision for one batch: given the candidate domain s_hat
  (the classifier's argmax), the batch's reconstruction loss under s_hat, s_hat's reference loss
  and masks, vote "new" when L > kappa * L_ref or when the batch's mask differs from s_hat's mask
  on the latents s_hat uses; otherwise vote to reuse s_hat.
- ``DomainMemory`` owns the per-domain state (mask when last seen, used latents, reference
  loss, counters) and turns votes into decisions with the noise controls the paper leaves
  implicit: a warm-up after a domain is allocated (it cannot be rejected while it has no
  reference), a patience (allocate only after P consecutive "new" votes; P = 1 is the paper),
  and the ``max_domains`` fallback (reuse s_hat, record it, never crash). Every decision is logged.

Reference losses are running means updated only while their domain is current, so a domain's
reference is frozen from the moment the stream leaves it.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

__all__ = ["DomainRecord", "Decision", "DomainMemory", "algorithm1_vote", "mask_disagreement"]


def mask_disagreement(batch_mask: torch.Tensor, domain_mask: torch.Tensor, used: torch.Tensor | None) -> int:
    """Number of latents used by the domain on which the batch's mask differs from the domain's.
    ``used=None`` (not estimated yet) compares all latents."""
    diff = batch_mask.bool() ^ domain_mask.bool()
    if used is not None:
        diff = diff & used.bool()
    return int(diff.sum())


def algorithm1_vote(
    candidate_loss: float,
    reference_loss: float | None,
    kappa: float,
    batch_mask: torch.Tensor,
    domain_mask: torch.Tensor,
    used: torch.Tensor | None,
) -> tuple[bool, str, int]:
    """One batch of Algorithm 1. Returns ``(new, reason, disagreement)`` with reason one of
    ``"loss"``, ``"mask"``, ``"reuse"``. A domain without a reference (``None``) is never
    rejected on loss."""
    disagreement = mask_disagreement(batch_mask, domain_mask, used)
    if reference_loss is not None and candidate_loss > kappa * reference_loss:
        return True, "loss", disagreement
    if disagreement > 0:
        return True, "mask", disagreement
    return False, "reuse", disagreement


@dataclass
class DomainRecord:
    """Plain-data memory of one domain."""

    domain_id: int
    latent_mask: list[bool]
    used_latents: list[bool] | None = None
    used_noise_std: list[float] | None = None
    reference_recon_loss: float | None = None
    num_updates: int = 0
    created_at: int = 0
    last_seen: int = 0


@dataclass
class Decision:
    """One logged decision of domain inference."""

    step: int
    current: int
    candidate: int
    candidate_loss: float
    reference_loss: float | None
    mask_disagreement: int
    vote: str  # "loss", "mask", "reuse", "warmup", "first"
    chosen: int
    event: str  # "stay", "switch", "new", "pending", "max_domains"


@dataclass
class DomainMemory:
    """Per-domain state and the decision policy around :func:`algorithm1_vote`."""

    max_domains: int
    kappa: float
    patience: int = 1
    warmup: int = 0
    momentum: float = 0.05
    records: list[DomainRecord] = field(default_factory=list)
    current: int | None = None
    pending_new_votes: int = 0
    log: list[Decision] = field(default_factory=list)
    fallback_count: int = 0
    log_stay_every: int = 25  # "stay"/"warmup" decisions are logged every n updates; all others always
    fallback_to_current: bool = False  # see decide(); False is the paper's Algorithm 1

    # --- basic bookkeeping -------------------------------------------------------------
    @property
    def num_domains(self) -> int:
        return len(self.records)

    def allocate(self, mask: list[bool], step: int) -> int:
        if self.num_domains >= self.max_domains:
            raise RuntimeError("all domain slots are in use")  # guarded by decide()
        rec = DomainRecord(
            domain_id=self.num_domains, latent_mask=list(map(bool, mask)), created_at=step, last_seen=step
        )
        self.records.append(rec)
        self.current = rec.domain_id
        self.pending_new_votes = 0
        return rec.domain_id

    def in_warmup(self, domain: int) -> bool:
        rec = self.records[domain]
        return rec.num_updates < self.warmup or rec.reference_recon_loss is None

    def record_update(
        self, domain: int, recon_loss: float, mask: list[bool], step: int, update_reference: bool
    ) -> None:
        """Book-keeping after an optimiser step trained ``domain``."""
        rec = self.records[domain]
        rec.num_updates += 1
        rec.last_seen = step
        rec.latent_mask = list(map(bool, mask))
        if update_reference and recon_loss == recon_loss:  # skip NaN
            if rec.reference_recon_loss is None:
                rec.reference_recon_loss = float(recon_loss)
            else:
                rec.reference_recon_loss += self.momentum * (float(recon_loss) - rec.reference_recon_loss)

    def set_used(self, domain: int, used: list[bool], noise_std: list[float]) -> None:
        self.records[domain].used_latents = list(map(bool, used))
        self.records[domain].used_noise_std = [float(v) for v in noise_std]

    # --- the decision ------------------------------------------------------------------
    def decide(
        self,
        step: int,
        candidate: int,
        candidate_loss: float,
        batch_mask_for_candidate: torch.Tensor,
        new_domain_mask: torch.Tensor | None = None,
        current_loss: float | None = None,
        current_batch_mask: torch.Tensor | None = None,
    ) -> tuple[int, str]:
        """Turn this batch's Algorithm-1 vote into a domain id. Returns ``(domain, event)``
        with event "stay", "switch", "new", "pending" or "max_domains". A new domain starts with
        ``new_domain_mask`` (the mask in force; defaults to the candidate's batch mask). With
        ``fallback_to_current``, a rejected candidate other than the current domain leads to a new
        domain only if the current domain (``current_loss``, ``current_batch_mask``) rejects the
        batch as well."""
        assert self.current is not None, "allocate the first domain before deciding"
        cur = self.current
        rec = self.records[candidate]
        if self.in_warmup(cur):
            # a young domain cannot be rejected: its classifier logit and reference loss are
            # still being learnt, so Algorithm 1 would only reject it against older domains
            self.pending_new_votes = 0
            self._log(
                Decision(step, cur, candidate, candidate_loss, rec.reference_recon_loss, 0, "warmup", cur, "stay")
            )
            return cur, "stay"
        new, reason, dis = self._vote(candidate, candidate_loss, batch_mask_for_candidate)
        if new and candidate != cur and self.fallback_to_current and current_loss is not None:
            # the classifier's candidate rejects the batch, but the domain being trained may
            # still explain it: then there is no evidence of a new domain
            cur_new, _, cur_dis = self._vote(cur, current_loss, current_batch_mask)
            if not cur_new:
                self.pending_new_votes = 0
                self._log(
                    Decision(
                        step, cur, candidate, candidate_loss, rec.reference_recon_loss, dis, "current_fits", cur, "stay"
                    ),
                    force=True,
                )
                return cur, "stay"
        if not new:
            self.pending_new_votes = 0
            event = "stay" if candidate == cur else "switch"
            self.current = candidate
            self._log(
                Decision(step, cur, candidate, candidate_loss, rec.reference_recon_loss, dis, reason, candidate, event)
            )
            return candidate, event
        self.pending_new_votes += 1
        if self.pending_new_votes < self.patience:
            self.log.append(
                Decision(step, cur, candidate, candidate_loss, rec.reference_recon_loss, dis, reason, cur, "pending")
            )
            return cur, "pending"
        if self.num_domains >= self.max_domains:
            self.fallback_count += 1
            if self.fallback_count == 1:
                warnings.warn(
                    f"VASE domain inference wanted a new domain at update {step} but all {self.max_domains} "
                    "slots are used; reusing the classifier's best match (raise max_domains to allow more)",
                    RuntimeWarning,
                    stacklevel=3,
                )
            self.pending_new_votes = 0
            self.current = candidate
            self.log.append(
                Decision(
                    step,
                    cur,
                    candidate,
                    candidate_loss,
                    rec.reference_recon_loss,
                    dis,
                    reason,
                    candidate,
                    "max_domains",
                )
            )
            return candidate, "max_domains"
        start_mask = batch_mask_for_candidate if new_domain_mask is None else new_domain_mask
        new_id = self.allocate(start_mask.bool().tolist(), step)
        self.log.append(
            Decision(step, cur, candidate, candidate_loss, rec.reference_recon_loss, dis, reason, new_id, "new")
        )
        return new_id, "new"

    def _vote(self, domain: int, loss: float, batch_mask: torch.Tensor) -> tuple[bool, str, int]:
        rec = self.records[domain]
        dom_mask = torch.tensor(rec.latent_mask, dtype=torch.bool, device=batch_mask.device)
        # a latent masked for the domain is fed prior noise, so its decoder cannot be using it:
        # the used set is always read within the domain's current mask
        used = None
        if rec.used_latents is not None:
            used = torch.tensor(rec.used_latents, dtype=torch.bool, device=batch_mask.device) & dom_mask
        return algorithm1_vote(loss, rec.reference_recon_loss, self.kappa, batch_mask, dom_mask, used)

    def _log(self, decision: Decision, force: bool = False) -> None:
        if force or decision.event != "stay" or decision.step % self.log_stay_every == 0:
            self.log.append(decision)

    # --- plain data --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "records": [asdict(r) for r in self.records],
            "current": self.current,
            "pending_new_votes": self.pending_new_votes,
            "log": [asdict(d) for d in self.log],
            "fallback_count": self.fallback_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records = [DomainRecord(**r) for r in state["records"]]
        self.current = state["current"]
        self.pending_new_votes = int(state["pending_new_votes"])
        self.log = [Decision(**d) for d in state["log"]]
        self.fallback_count = int(state.get("fallback_count", 0))
