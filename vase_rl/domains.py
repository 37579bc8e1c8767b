"""Domain inference of VASE (``VASE_SPEC.md`` §6, eq. 6 and Algorithm 1), all in one place.

``DomainMemory`` owns every piece of inference state — per-domain statistics (mask, used latents,
reference scores, reference atypicality), the evidence accumulated against the current domain,
pending votes, the decision log — and turns one batch's statistics into a :class:`Verdict`:
which domain the batch belongs to, whether it may be trained on, and which mask to train with.
The learner computes the statistics (it owns the networks) and applies the verdict; it keeps no
inference state of its own.

Two rules, selected by ``rule`` (``VASEConfig.domain_test``):

``"evidence"`` (default; not in the paper, see docs/DESIGN_NOTES.md)
    Each domain keeps a reference of how well its decoder explains its own data: the running
    mean and variance of the per-image *explained fraction* (``objectives.explained_fraction``:
    1 = perfect reconstruction, 0 = no better than the image's mean intensity), which does not
    depend on how much ink a domain has. A batch's standardised deficit against a domain,

        t = (mean_ref - mean_batch) / sqrt(max(var_ref, var_batch) / n + drift_var + floor^2),

    is accumulated over batches by a one-sided CUSUM, S <- max(0, S + min(t, k + cap) - k)
    (Page 1954): a shift smaller than the allowance k never builds evidence, no single batch adds
    more than ``cap`` = 0.6 h (so an alarm needs at least two batches), and an alarm is raised at
    S >= h. The paper's mask test (a used, active latent turns atypical) adds ``cap`` per batch,
    counted only when the latent's atypicality jumps above lambda_1 and above its own running
    reference by more than the hysteresis band and five of its batch-to-batch spreads, so slow
    drift or the batch noise of a skewed marginal is not a new domain. While
    S > h / 4 the batch is *held*: it is not trained on and moves no reference. At an alarm, every
    stored domain is scored on the held batches with the same statistic. A stored domain fits
    when its mean deficit is below the fit level k + h / 2 (the per-batch level that would raise
    an alarm within two batches) or below a quarter of the alarming domain's mean deficit (a
    returning domain that was partly forgotten is still far closer than the domain that just
    failed); among those that fit, the one whose decoder explains the batch best (highest mean
    explained fraction) is re-identified, otherwise a new domain is allocated. A domain's references move only on its own accepted batches, so they are frozen
    while the stream is elsewhere; a new or returning domain re-learns its reference during a
    warm-up in which it cannot be rejected. With t ~ N(0, 1) under no change, Siegmund's
    approximation gives the in-control average run length
    ARL0 = (exp(2 k b) - 2 k b - 1) / (2 k^2), b = h + 1.166; for k = 1, h = 8: ~4.5e7 updates
    (:func:`cusum_false_alarm_run_length`).

``"ratio"`` (the paper's Algorithm 1)
    The classifier's candidate s_hat is rejected when its reconstruction loss exceeds kappa times
    its reference L̃ or when the batch's mask differs from s_hat's on s_hat's used latents; a new
    domain is allocated after ``patience`` consecutive rejections; batches pending allocation are
    held (``hold_while_pending``) and neither train nor change any stored state.

Both rules record every non-trivial decision (and every 25th "stay") in ``log``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch

from vase_rl.masking import hysteresis_mask

__all__ = [
    "RULES",
    "BatchScore",
    "BatchView",
    "Decision",
    "DomainMemory",
    "DomainRecord",
    "Verdict",
    "algorithm1_vote",
    "cusum_false_alarm_run_length",
    "mask_disagreement",
    "paired_advantage",
    "standardised_deficit",
]

RULES = ("evidence", "ratio")
_CAP_FRACTION = 0.6  # largest per-batch increment as a fraction of the threshold h
_HOLD_FRACTION = 0.25  # evidence above h / 4 holds the batch
_FIT_FRACTION = 0.5  # a stored domain fits when its mean deficit is below k + h / 2
_REIDENTIFY_RATIO = 0.25  # ... or below a quarter of the alarming domain's mean deficit (forgetting)
_DRIFT_SHARE = 0.5  # an alarm is the model's own drift when its recent images lost this share of the drop
_MASK_JUMP_SD = 5.0  # a mask jump must exceed the latent's running alpha by this many of its spreads


# ---------------------------------------------------------------------------------------------
# pure functions
# ---------------------------------------------------------------------------------------------
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
    """One batch of the paper's Algorithm 1. Returns ``(new, reason, disagreement)`` with reason
    ``"loss"``, ``"mask"`` or ``"reuse"``. A domain without a reference is never rejected on loss."""
    disagreement = mask_disagreement(batch_mask, domain_mask, used)
    if reference_loss is not None and candidate_loss > kappa * reference_loss:
        return True, "loss", disagreement
    if disagreement > 0:
        return True, "mask", disagreement
    return False, "reuse", disagreement


def standardised_deficit(
    ref_mean: float, ref_var: float, drift_var: float, batch_mean: float, batch_var: float, n: int, floor: float
) -> float:
    """How many standard errors a batch's mean score lies *below* a domain's reference.

    The standard error combines the per-image spread (the larger of the reference's and the
    batch's own, so a batch with a few odd images is not over-confident), the reference's
    batch-to-batch drift beyond sampling noise (the model changes between batches), and a floor
    (the smallest difference in explained fraction worth calling a change)."""
    scale = math.sqrt(max(ref_var, batch_var) / max(n, 1) + max(drift_var, 0.0) + floor * floor)
    return (ref_mean - batch_mean) / scale


def paired_advantage(better: torch.Tensor, worse: torch.Tensor, floor: float) -> float:
    """How many standard errors the per-image explained fractions of one decoder exceed another's on
    the same images: mean(d) / sqrt(var(d) / n + floor^2) with d = better - worse. Pairing removes
    the images' own difficulty, which both decoders share."""
    diff = (better - worse).double()
    n = diff.numel()
    var = float(diff.var()) if n > 1 else 0.0
    return float(diff.mean()) / math.sqrt(var / max(n, 1) + floor * floor)


def cusum_false_alarm_run_length(allowance: float, threshold: float) -> float:
    """Siegmund's approximation of the in-control average run length of a one-sided CUSUM on
    N(0, 1) increments with allowance k and threshold h: (e^{2kb} - 2kb - 1) / (2k^2), b = h + 1.166."""
    if allowance <= 0:
        raise ValueError("the allowance must be positive")
    b = threshold + 1.166
    x = 2.0 * allowance * b
    return (math.exp(x) - x - 1.0) / (2.0 * allowance * allowance)


# ---------------------------------------------------------------------------------------------
# records and messages
# ---------------------------------------------------------------------------------------------
@dataclass
class BatchScore:
    """One batch seen through one domain's decoder (computed by the learner)."""

    fraction_mean: float  # mean explained fraction of the batch's images
    fraction_var: float  # their variance
    n: int
    recon_loss: float  # mean NLL minus the likelihood's constant (the paper's L)
    mask: torch.Tensor  # the batch's hysteresis mask continued from the domain's stored mask
    fractions: torch.Tensor | None = None  # per-image explained fractions (for paired comparisons)

    @property
    def finite(self) -> bool:
        return all(math.isfinite(v) for v in (self.fraction_mean, self.fraction_var, self.recon_loss))


class BatchView(Protocol):
    """What :meth:`DomainMemory.decide` may ask about the batch at hand."""

    alpha: torch.Tensor  # (N,) atypicality of the batch (eq. 4)

    def score(self, domain: int) -> BatchScore: ...

    def candidate(self) -> int: ...  # the classifier's s_hat among the known domains

    # optional: explained fraction the model has lost on a stored domain since it was left
    # def forgetting(self, domain: int) -> float: ...
    # optional: explained fraction the model has lost on recent accepted images of the current
    # domain (its own drift, not the data's)
    # def model_drift(self) -> float: ...


@dataclass
class DomainRecord:
    """Plain-data memory of one domain."""

    domain_id: int
    latent_mask: list[bool]
    used_latents: list[bool] | None = None
    used_noise_std: list[float] | None = None
    reference_recon_loss: float | None = None  # the paper's L̃: running mean of L
    score_mean: float | None = None  # running mean of the batch-mean explained fraction
    score_var: float | None = None  # running mean of the per-image variance of the explained fraction
    score_drift_var: float = 0.0  # running batch-to-batch variance beyond sampling noise
    atypicality_reference: list[float] | None = None  # running mean of alpha per latent
    atypicality_var: list[float] | None = None  # running variance of alpha per latent around it
    reference_batches: int = 0  # accepted batches since the reference (re)started
    probe_fraction: float | None = None  # how well the model rebuilt its own probe images when it left
    num_updates: int = 0
    created_at: int = 0
    last_seen: int = 0


@dataclass
class Decision:
    """One logged decision of domain inference."""

    step: int
    current: int
    candidate: int  # evidence rule: best other domain at an alarm (else current); ratio rule: s_hat
    candidate_loss: float  # L of the candidate (NLL minus constant)
    reference_loss: float | None  # the candidate's L̃
    mask_disagreement: int
    # evidence rule: "warmup", "fits", "evidence", "mask", "better_fit", "model_drift", "first";
    # ratio rule: "loss", "mask", "reuse", "current_fits"
    vote: str
    chosen: int
    event: str  # "stay", "held", "switch", "new", "pending", "max_domains"
    statistic: float | None = None  # evidence rule: standardised deficit t of the current domain
    evidence: float | None = None  # evidence rule: CUSUM after this batch
    # evidence rule: the candidate's mean deficit over the alarm (model_drift: the fraction the recent images lost)
    candidate_statistic: float | None = None
    # evidence rule, at an alarm: per domain [mean deficit (forgetting-corrected for stored domains),
    # mean explained fraction, batches with mask jumps, forgetting]
    episode: dict[int, list[float]] | None = None


@dataclass
class Verdict:
    """What the learner does with the batch."""

    domain: int  # the domain the batch belongs to (the mask in force follows it)
    event: str  # "stay", "held", "switch", "new", "pending", "max_domains"
    train: bool  # False: no optimiser step on this batch
    mask: torch.Tensor  # mask to train (or encode) with
    statistic: float | None = None
    evidence: float | None = None


@dataclass
class _EpisodeEntry:
    """One domain's scores over the held batches of an alarm episode."""

    total: float = 0.0  # sum of standardised deficits
    fraction_total: float = 0.0  # sum of batch-mean explained fractions
    var_total: float = 0.0  # sum of the batches' per-image variances
    n: int = 1  # images per batch
    count: int = 0
    mask_jumps: int = 0
    forgetting: float = 0.0  # explained fraction the model has lost on the domain since it was left

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.inf

    @property
    def fraction_mean(self) -> float:
        return self.fraction_total / self.count if self.count else -math.inf


# ---------------------------------------------------------------------------------------------
# the memory
# ---------------------------------------------------------------------------------------------
@dataclass
class DomainMemory:
    """Per-domain state and the decision for each batch (see the module docstring)."""

    max_domains: int
    kappa: float = 1.5
    rule: str = "evidence"
    patience: int = 1
    warmup: int = 0
    momentum: float = 0.05
    evidence_threshold: float = 8.0  # h
    evidence_allowance: float = 1.0  # k
    score_floor: float = 0.01
    mask_band: float = 0.24  # lambda_1 - lambda_0
    mask_high: float = 0.72  # lambda_1
    hold_while_pending: bool = True
    fallback_to_current: bool = False
    recheck_every: int = 5  # score every stored domain on every n-th batch (the switch test)
    records: list[DomainRecord] = field(default_factory=list)
    current: int | None = None
    pending_new_votes: int = 0
    evidence: float = 0.0
    episode: dict[int, _EpisodeEntry] = field(default_factory=dict)
    advantage: dict[int, float] = field(default_factory=dict)  # switch-test CUSUM per stored domain
    log: list[Decision] = field(default_factory=list)
    fallback_count: int = 0
    log_stay_every: int = 25  # "stay"/"warmup" decisions are logged every n updates; all others always

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown domain test {self.rule!r}; choose one of {RULES}")

    # --- basic bookkeeping -------------------------------------------------------------
    @property
    def num_domains(self) -> int:
        return len(self.records)

    @property
    def cap(self) -> float:
        return _CAP_FRACTION * self.evidence_threshold

    @property
    def hold_level(self) -> float:
        return _HOLD_FRACTION * self.evidence_threshold

    @property
    def fit_level(self) -> float:
        return self.evidence_allowance + _FIT_FRACTION * self.evidence_threshold

    def allocate(self, mask: list[bool], step: int) -> int:
        if self.num_domains >= self.max_domains:
            raise RuntimeError("all domain slots are in use")  # guarded by decide()
        rec = DomainRecord(
            domain_id=self.num_domains, latent_mask=list(map(bool, mask)), created_at=step, last_seen=step
        )
        self.records.append(rec)
        self._enter(rec.domain_id)
        return rec.domain_id

    def _enter(self, domain: int) -> None:
        """Make ``domain`` current with a fresh evidence count and a reference to re-learn."""
        self.current = domain
        self.pending_new_votes = 0
        self.evidence = 0.0
        self.episode = {}
        self.advantage = {}
        if self.rule == "evidence":
            self.records[domain].reference_batches = 0

    def in_warmup(self, domain: int) -> bool:
        rec = self.records[domain]
        if self.rule == "evidence":
            return rec.reference_batches < max(self.warmup, 1)
        return rec.num_updates < self.warmup or rec.reference_recon_loss is None

    def set_used(self, domain: int, used: list[bool], noise_std: list[float]) -> None:
        self.records[domain].used_latents = list(map(bool, used))
        self.records[domain].used_noise_std = [float(v) for v in noise_std]

    def count_update(self, domain: int, step: int) -> None:
        """An optimiser step trained ``domain`` (called by the learner after the step)."""
        rec = self.records[domain]
        rec.num_updates += 1
        rec.last_seen = step

    def _used_active(self, rec: DomainRecord, device: torch.device) -> torch.Tensor | None:
        # a latent masked for the domain is fed prior noise, so its decoder cannot be using it:
        # the used set is always read within the domain's current mask
        if rec.used_latents is None:
            return None
        mask = torch.tensor(rec.latent_mask, dtype=torch.bool, device=device)
        return torch.tensor(rec.used_latents, dtype=torch.bool, device=device) & mask

    # --- reference statistics ----------------------------------------------------------
    def _accept(self, domain: int, score: BatchScore, alpha: torch.Tensor) -> None:
        """The batch belongs to ``domain`` and trains it: its statistics move the references."""
        rec = self.records[domain]
        rec.latent_mask = score.mask.bool().tolist()
        if not score.finite:
            return
        n = rec.reference_batches
        rate = max(self.momentum, 1.0 / (n + 1))  # running mean first, then exponential
        if rec.reference_recon_loss is None:
            rec.reference_recon_loss = score.recon_loss
        else:
            rec.reference_recon_loss += self.momentum * (score.recon_loss - rec.reference_recon_loss)
        alpha_list = [float(a) for a in alpha.detach().float().cpu().tolist()]
        if self.rule == "evidence":
            if n == 0 or rec.score_mean is None or rec.score_var is None:
                rec.score_mean, rec.score_var, rec.score_drift_var = score.fraction_mean, score.fraction_var, 0.0
                rec.atypicality_reference, rec.atypicality_var = alpha_list, [0.0] * len(alpha_list)
            else:
                excess = (score.fraction_mean - rec.score_mean) ** 2 - score.fraction_var / max(score.n, 1)
                rec.score_drift_var += rate * (max(excess, 0.0) - rec.score_drift_var)
                rec.score_mean += rate * (score.fraction_mean - rec.score_mean)
                rec.score_var += rate * (score.fraction_var - rec.score_var)
                ref = rec.atypicality_reference or alpha_list
                var = rec.atypicality_var or [0.0] * len(alpha_list)
                rec.atypicality_var = [v + rate * ((a - r) ** 2 - v) for v, r, a in zip(var, ref, alpha_list)]
                rec.atypicality_reference = [r + rate * (a - r) for r, a in zip(ref, alpha_list)]
        rec.reference_batches = n + 1

    def deficit(self, domain: int, score: BatchScore) -> float:
        """Standardised deficit of ``score`` against ``domain``'s reference (inf without one)."""
        rec = self.records[domain]
        if rec.score_mean is None or rec.score_var is None or not score.finite:
            return math.inf
        return standardised_deficit(
            rec.score_mean,
            rec.score_var,
            rec.score_drift_var,
            score.fraction_mean,
            score.fraction_var,
            score.n,
            self.score_floor,
        )

    def batch_mask(self, domain: int, alpha: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """The mask ``domain`` would train a batch of atypicality ``alpha`` with (spec §4, eq. 5).

        The domain's stored mask continued by the hysteresis filter (active below lambda_0,
        inactive above lambda_1), except that a latent the domain's decoder uses is switched off
        only when its atypicality *jumps* (:meth:`mask_jump_latents`): switching off a used latent
        costs reconstruction, and the batch noise of a skewed marginal near lambda_1 must not do
        that. ``frozen`` returns the stored mask unchanged."""
        stored = torch.tensor(self.records[domain].latent_mask, dtype=torch.bool, device=alpha.device)
        if frozen:
            return stored
        mask = hysteresis_mask(alpha, stored, self.mask_high - self.mask_band, self.mask_high)
        used = self._used_active(self.records[domain], alpha.device)
        if used is not None and self.records[domain].atypicality_reference is not None:
            mask = mask | (used & ~self.mask_jump_latents(domain, alpha))
        return mask

    def mask_jump_latents(self, domain: int, alpha: torch.Tensor) -> torch.Tensor:
        """(N,) bool: used, active latents of ``domain`` whose atypicality jumped on this batch."""
        rec = self.records[domain]
        used = self._used_active(rec, alpha.device)
        if used is None or rec.atypicality_reference is None:
            return torch.zeros_like(alpha, dtype=torch.bool)
        ref = torch.tensor(rec.atypicality_reference, dtype=alpha.dtype, device=alpha.device)
        spread = torch.tensor(rec.atypicality_var or [0.0] * len(ref), dtype=alpha.dtype, device=alpha.device)
        margin = torch.clamp(_MASK_JUMP_SD * spread.clamp_min(0).sqrt(), min=self.mask_band)
        return (alpha > self.mask_high) & (alpha > ref + margin) & used

    def mask_jumps(self, domain: int, alpha: torch.Tensor) -> int:
        """Used, active latents of ``domain`` that turned atypical on this batch: alpha above
        lambda_1 and above its own running reference by more than the hysteresis band and more
        than ``_MASK_JUMP_SD`` of its batch-to-batch spread (a latent with a skewed marginal
        swings by a few tenths from batch to batch; a real change of data moves alpha by units)."""
        return int(self.mask_jump_latents(domain, alpha).sum())

    # --- the decision ------------------------------------------------------------------
    def decide(self, step: int, view: BatchView) -> Verdict:
        """This batch's verdict; updates the memory (references, evidence, log) accordingly."""
        assert self.current is not None, "allocate the first domain before deciding"
        if self.rule == "ratio":
            return self._decide_ratio(step, view)
        return self._decide_evidence(step, view)

    def _decide_evidence(self, step: int, view: BatchView) -> Verdict:
        cur = self.current
        rec = self.records[cur]
        score = view.score(cur)
        if not score.finite:  # nothing to learn from: hold it
            return self._held(step, cur, score, math.nan)
        if self.in_warmup(cur):
            self.evidence, self.episode = 0.0, {}
            self._accept(cur, score, view.alpha)
            self._log(Decision(step, cur, cur, score.recon_loss, rec.reference_recon_loss, 0, "warmup", cur, "stay"))
            return Verdict(cur, "stay", True, score.mask, None, 0.0)
        k, cap = self.evidence_allowance, self.cap
        t = self.deficit(cur, score)
        jumps = self.mask_jumps(cur, view.alpha)
        # a batch adds at most ``cap``: a mask jump counts as a maximal batch, never more
        increment = cap if jumps else min(t, k + cap) - k
        self.evidence = max(0.0, self.evidence + increment)
        if self.evidence <= self.hold_level:
            self.episode = {}
            switch = self._switch_test(step, view, cur, score)
            if switch is not None:
                return switch
            self._accept(cur, score, view.alpha)
            self._log(
                Decision(
                    step, cur, cur, score.recon_loss, rec.reference_recon_loss, jumps, "fits", cur, "stay",
                    statistic=t, evidence=self.evidence,
                )
            )  # fmt: skip
            return Verdict(cur, "stay", True, score.mask, t, self.evidence)
        # elevated evidence: score the batch under every domain, for the choice at an alarm
        self._add_to_episode(cur, score, t, jumps)
        for d in range(self.num_domains):
            if d != cur:
                other = view.score(d)
                self._add_to_episode(d, other, self.deficit(d, other), self.mask_jumps(d, view.alpha))
        if self.evidence < self.evidence_threshold:
            return self._held(step, cur, score, t, jumps)
        return self._resolve_alarm(step, view, t, jumps)

    def _switch_test(self, step: int, view: BatchView, cur: int, score: BatchScore) -> Verdict | None:
        """Does another stored domain explain the stream *better* than the current one?

        A returning domain can be explained by the current decoder about as well as the current
        domain's own data (an easier domain after a harder one), so the current domain's test
        never fires. Every ``recheck_every`` batches, and whenever the classifier proposes another
        domain, each stored domain's decoder is compared with the current one on the same images
        (:func:`paired_advantage`); a one-sided CUSUM per domain with the same k, cap and h as the
        domain test switches to the one that is consistently better."""
        if self.num_domains < 2 or score.fractions is None:
            return None
        candidate = view.candidate()
        if step % self.recheck_every and candidate == cur and not self.advantage:
            return None
        k, cap = self.evidence_allowance, self.cap
        checked = range(self.num_domains) if step % self.recheck_every == 0 else [candidate]
        best, best_value = None, -math.inf
        for d in checked:
            if d == cur:
                continue
            other = view.score(d)
            if other.fractions is None or not other.finite:
                continue
            a = paired_advantage(other.fractions, score.fractions, self.score_floor)
            self.advantage[d] = max(0.0, self.advantage.get(d, 0.0) + min(a, k + cap) - k)
            if self.advantage[d] >= self.evidence_threshold and self.advantage[d] > best_value:
                best, best_value = d, self.advantage[d]
        self.advantage = {d: v for d, v in self.advantage.items() if v > 0}
        if best is None:
            return None
        other = view.score(best)
        rec = self.records[best]
        self.log.append(
            Decision(
                step, cur, best, other.recon_loss, rec.reference_recon_loss, 0, "better_fit", best, "switch",
                statistic=self.deficit(cur, score), evidence=best_value, candidate_statistic=self.deficit(best, other),
            )
        )  # fmt: skip
        self._enter(best)
        self._accept(best, other, view.alpha)
        return Verdict(best, "switch", True, other.mask, None, 0.0)

    def _add_to_episode(self, domain: int, score: BatchScore, deficit: float, jumps: int) -> None:
        entry = self.episode.setdefault(domain, _EpisodeEntry())
        entry.total += deficit
        entry.fraction_total += score.fraction_mean
        entry.var_total += score.fraction_var
        entry.n = score.n
        entry.count += 1
        entry.mask_jumps += int(jumps > 0)

    def _held(self, step: int, cur: int, score: BatchScore, t: float, jumps: int = 0) -> Verdict:
        rec = self.records[cur]
        mask = torch.tensor(rec.latent_mask, dtype=torch.bool, device=score.mask.device)
        self.log.append(
            Decision(
                step, cur, cur, score.recon_loss, rec.reference_recon_loss, jumps, "evidence", cur, "held",
                statistic=t, evidence=self.evidence,
            )
        )  # fmt: skip
        return Verdict(cur, "held", False, mask, t, self.evidence)

    def _resolve_alarm(self, step: int, view: BatchView, t: float, jumps: int) -> Verdict:
        cur = self.current
        count = self.episode[cur].count
        drifted = self._model_drift(step, view, t, jumps)
        if drifted is not None:
            return drifted
        # the mask test is evidence against the current domain; it does not veto re-identifying a
        # stored one (the shared encoder drifts on a domain's data while the stream is elsewhere,
        # so a returning domain's used latents may look atypical at first): jumps only break ties
        others = {d: e for d, e in self.episode.items() if d != cur and e.count == count}
        # a stored domain is judged against its reference lowered by what the model has forgotten
        # of it since it was left (measured on probe images, see BatchView.forgetting)
        forgetting = getattr(view, "forgetting", None)
        for d, e in others.items():
            rec = self.records[d]
            if forgetting is not None and rec.score_mean is not None and rec.score_var is not None:
                lost = max(0.0, float(forgetting(d)))
                e.total = e.count * standardised_deficit(
                    rec.score_mean - lost, rec.score_var, rec.score_drift_var, e.fraction_mean,
                    e.var_total / e.count, e.n, self.score_floor,
                )  # fmt: skip
                e.forgetting = lost
        # among the stored domains whose mean deficit stays below the fit level, the one whose
        # decoder explains the batch best (a domain's deficit is relative to its own reference,
        # which an immature domain keeps low; the explained fraction compares decoders directly)
        fit = max(self.fit_level, _REIDENTIFY_RATIO * self.episode[cur].mean)
        fitting = [d for d in others if others[d].mean <= fit]
        best = max(fitting, key=lambda d: (others[d].mask_jumps == 0, others[d].fraction_mean)) if fitting else None
        if best is None and others:
            best = min(others, key=lambda d: others[d].mean)
        best_mean = others[best].mean if best is not None else None
        vote = "mask" if jumps and t < self.evidence_allowance else "evidence"
        evidence = self.evidence
        episode = {d: [e.mean, e.fraction_mean, e.mask_jumps, e.forgetting] for d, e in self.episode.items()}
        if best is not None and best_mean <= fit:
            chosen, event = best, "switch"
        elif self.num_domains < self.max_domains:
            score_cur = view.score(cur)
            used_anywhere = [False] * len(score_cur.mask)
            for r in self.records:
                if r.used_latents is not None:
                    used_anywhere = [a or (u and m) for a, u, m in zip(used_anywhere, r.used_latents, r.latent_mask)]
            # the new domain takes the latents that are typical on its data (the batch's mask
            # continued from the current domain's), plus every latent no domain's decoder uses:
            # spare capacity is free to claim even if its marginal is off on unfamiliar input
            start = [bool(m) or not u for m, u in zip(score_cur.mask.tolist(), used_anywhere)]
            chosen, event = self.allocate(start, step), "new"
        else:
            pool = {cur: self.episode[cur], **others}
            chosen, event = min(pool, key=lambda d: pool[d].mean), "max_domains"
            self.fallback_count += 1
            if self.fallback_count == 1:
                warnings.warn(
                    f"VASE domain inference found a new domain at update {step} but all {self.max_domains} "
                    "slots are used; reusing the domain that explains the batch best (raise max_domains to "
                    "allow more)",
                    RuntimeWarning,
                    stacklevel=4,
                )
        candidate = best if best is not None else cur
        cand_rec = self.records[candidate]
        self.log.append(
            Decision(
                step, cur, candidate, view.score(candidate).recon_loss, cand_rec.reference_recon_loss, jumps,
                vote, chosen, event, statistic=t, evidence=evidence, candidate_statistic=best_mean,
                episode=episode,
            )
        )  # fmt: skip
        if event != "new":
            self._enter(chosen)
        score = view.score(chosen)
        self._accept(chosen, score, view.alpha)
        return Verdict(chosen, event, True, score.mask, t, 0.0)

    def _model_drift(self, step: int, view: BatchView, t: float, jumps: int) -> Verdict | None:
        """Did the *model* change rather than the data? A training step can degrade the model on
        its own domain (a capacity push, a mask or snapshot change); while batches are held the
        model is frozen in that state, so the evidence grows on unchanged data. The learner keeps
        recent accepted images of the current domain with the score they had (``model_drift``):
        if they lost at least half of the drop the held batches show, the drop is the model's,
        the domain stays, its reference is re-based to the level it has now and training resumes.
        After a real change of data the model has trained on at most a batch or two of it, so the
        recent images keep their score and the alarm stands."""
        drift_of = getattr(view, "model_drift", None)
        cur = self.current
        rec, entry = self.records[cur], self.episode[cur]
        if drift_of is None or rec.score_mean is None or entry.count == 0:
            return None
        drop = rec.score_mean - entry.fraction_mean
        lost = float(drift_of())
        if not (drop > 0 and math.isfinite(lost) and lost >= _DRIFT_SHARE * drop):
            return None
        episode = {d: [e.mean, e.fraction_mean, e.mask_jumps, e.forgetting] for d, e in self.episode.items()}
        score = view.score(cur)
        self._log(
            Decision(
                step, cur, cur, score.recon_loss, rec.reference_recon_loss, jumps, "model_drift", cur, "stay",
                statistic=t, evidence=self.evidence, candidate_statistic=lost, episode=episode,
            ),
            force=True,
        )  # fmt: skip
        rec.score_mean = entry.fraction_mean
        self.evidence, self.episode, self.advantage = 0.0, {}, {}
        self._accept(cur, score, view.alpha)
        return Verdict(cur, "stay", True, score.mask, t, 0.0)

    def _decide_ratio(self, step: int, view: BatchView) -> Verdict:
        cur = self.current
        candidate = view.candidate()
        rec = self.records[candidate]
        score = view.score(candidate)
        if self.in_warmup(cur):
            # a young domain cannot be rejected: its classifier logit and reference loss are
            # still being learnt, so Algorithm 1 would only reject it against older domains
            self.pending_new_votes = 0
            s_cur = view.score(cur)
            self._accept(cur, s_cur, view.alpha)
            self._log(
                Decision(step, cur, candidate, s_cur.recon_loss, self.records[cur].reference_recon_loss, 0,
                         "warmup", cur, "stay")
            )  # fmt: skip
            return Verdict(cur, "stay", True, s_cur.mask, None, None)
        new, reason, dis = self._vote(candidate, score, view.alpha)
        if new and candidate != cur and self.fallback_to_current:
            # the classifier's candidate rejects the batch, but the domain being trained may
            # still explain it: then there is no evidence of a new domain
            s_cur = view.score(cur)
            cur_new, _, _ = self._vote(cur, s_cur, view.alpha)
            if not cur_new:
                self.pending_new_votes = 0
                self._accept(cur, s_cur, view.alpha)
                self._log(
                    Decision(step, cur, candidate, score.recon_loss, rec.reference_recon_loss, dis,
                             "current_fits", cur, "stay"),
                    force=True,
                )  # fmt: skip
                return Verdict(cur, "stay", True, s_cur.mask)
        if not new:
            self.pending_new_votes = 0
            event = "stay" if candidate == cur else "switch"
            self.current = candidate
            self._accept(candidate, score, view.alpha)
            self._log(Decision(step, cur, candidate, score.recon_loss, rec.reference_recon_loss, dis, reason,
                               candidate, event))  # fmt: skip
            return Verdict(candidate, event, True, score.mask)
        self.pending_new_votes += 1
        if self.pending_new_votes < self.patience:
            # pending: nothing stored changes (the mask vote must not erase itself), and the
            # batch trains the current domain only when hold_while_pending is off
            self.log.append(Decision(step, cur, candidate, score.recon_loss, rec.reference_recon_loss, dis, reason,
                                     cur, "pending"))  # fmt: skip
            cur_mask = torch.tensor(self.records[cur].latent_mask, dtype=torch.bool, device=score.mask.device)
            return Verdict(cur, "pending", not self.hold_while_pending, cur_mask)
        if self.num_domains >= self.max_domains:
            self.fallback_count += 1
            if self.fallback_count == 1:
                warnings.warn(
                    f"VASE domain inference wanted a new domain at update {step} but all {self.max_domains} "
                    "slots are used; reusing the classifier's best match (raise max_domains to allow more)",
                    RuntimeWarning,
                    stacklevel=4,
                )
            self.pending_new_votes = 0
            self.current = candidate
            self._accept(candidate, score, view.alpha)
            self.log.append(Decision(step, cur, candidate, score.recon_loss, rec.reference_recon_loss, dis, reason,
                                     candidate, "max_domains"))  # fmt: skip
            return Verdict(candidate, "max_domains", True, score.mask)
        start = view.score(cur).mask
        new_id = self.allocate(start.bool().tolist(), step)
        self.log.append(Decision(step, cur, candidate, score.recon_loss, rec.reference_recon_loss, dis, reason,
                                 new_id, "new"))  # fmt: skip
        score = view.score(new_id)
        self._accept(new_id, score, view.alpha)
        return Verdict(new_id, "new", True, score.mask)

    def _vote(self, domain: int, score: BatchScore, alpha: torch.Tensor) -> tuple[bool, str, int]:
        rec = self.records[domain]
        dom_mask = torch.tensor(rec.latent_mask, dtype=torch.bool, device=score.mask.device)
        used = self._used_active(rec, score.mask.device)
        return algorithm1_vote(score.recon_loss, rec.reference_recon_loss, self.kappa, score.mask, dom_mask, used)

    def _log(self, decision: Decision, force: bool = False) -> None:
        if force or decision.event != "stay" or decision.step % self.log_stay_every == 0:
            self.log.append(decision)

    # --- plain data --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "records": [asdict(r) for r in self.records],
            "current": self.current,
            "pending_new_votes": self.pending_new_votes,
            "evidence": self.evidence,
            "episode": {int(d): asdict(e) for d, e in self.episode.items()},
            "advantage": {int(d): float(v) for d, v in self.advantage.items()},
            "log": [asdict(d) for d in self.log],
            "fallback_count": self.fallback_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records = [DomainRecord(**r) for r in state["records"]]
        self.current = state["current"]
        self.pending_new_votes = int(state["pending_new_votes"])
        self.evidence = float(state.get("evidence", 0.0))
        self.episode = {int(d): _EpisodeEntry(**e) for d, e in state.get("episode", {}).items()}
        self.advantage = {int(d): float(v) for d, v in state.get("advantage", {}).items()}
        self.log = [Decision(**d) for d in state["log"]]
        self.fallback_count = int(state.get("fallback_count", 0))
