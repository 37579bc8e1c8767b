"""Domain inference on constructed batches: the pure statistics against hand values, and both rules
of DomainMemory (the evidence test and the paper's Algorithm 1) on scripted batch statistics."""

import math

import pytest
import torch

from vase_rl.domains import (
    BatchScore,
    DomainMemory,
    algorithm1_vote,
    cusum_false_alarm_run_length,
    mask_disagreement,
    standardised_deficit,
)

T, F = True, False


def _t(values):
    return torch.tensor(values, dtype=torch.bool)


class View:
    """A scripted batch: per-domain scores and the batch's atypicality. With ``per_image``, each
    domain's 64 per-image fractions are its mean plus the same image-difficulty offsets."""

    def __init__(self, fractions, alpha=(0.0, 0.0), var=0.01, losses=None, candidate=0, masks=None, per_image=False):
        self.alpha = torch.tensor(alpha, dtype=torch.float32)
        self.fractions, self.var, self.losses = fractions, var, losses or {}
        self._candidate, self.masks, self.asked = candidate, masks or {}, []
        self.per_image = per_image

    def score(self, domain):
        self.asked.append(domain)
        frac = self.fractions.get(domain, self.fractions.get("other", 0.0))
        mask = self.masks.get(domain, _t([T] * len(self.alpha)))
        images = None
        if self.per_image:
            offsets = torch.linspace(-1.0, 1.0, 64) * math.sqrt(3 * self.var)  # variance var, mean 0
            images = frac + offsets + 0.003 * torch.sin(torch.arange(64.0) * (domain + 1))
        return BatchScore(frac, self.var, 64, self.losses.get(domain, 100.0 * (1 - frac) + 10), mask, images)

    def candidate(self):
        return self._candidate


# --- pure functions -----------------------------------------------------------------------------
def test_standardised_deficit_hand_values():
    # ref 0.8, batch 0.6, per-image var 0.04 over 64 images -> se^2 = 0.04/64 + 0 + 0.01^2
    se = math.sqrt(0.04 / 64 + 0.01**2)
    assert standardised_deficit(0.8, 0.04, 0.0, 0.6, 0.01, 64, 0.01) == pytest.approx(0.2 / se)
    # the larger per-image spread (the batch's own) is used, so a few odd images cannot over-convince
    se_b = math.sqrt(0.09 / 64 + 0.0004 + 0.01**2)
    assert standardised_deficit(0.8, 0.04, 0.0004, 0.6, 0.09, 64, 0.01) == pytest.approx(0.2 / se_b)
    assert standardised_deficit(0.5, 0.01, 0.0, 0.6, 0.01, 64, 0.01) < 0  # better than the reference


def test_cusum_run_length_matches_siegmund():
    b = 8 + 1.166
    assert cusum_false_alarm_run_length(1.0, 8.0) == pytest.approx((math.exp(2 * b) - 2 * b - 1) / 2)
    assert cusum_false_alarm_run_length(1.0, 8.0) > 1e7  # one false alarm per ~45 million updates
    assert cusum_false_alarm_run_length(0.5, 4.0) < cusum_false_alarm_run_length(0.5, 8.0)
    with pytest.raises(ValueError):
        cusum_false_alarm_run_length(0.0, 8.0)


def test_vote_new_on_high_loss():
    new, reason, _ = algorithm1_vote(200.0, 100.0, 1.5, _t([T, T]), _t([T, T]), _t([T, T]))
    assert new and reason == "loss"
    new, reason, _ = algorithm1_vote(149.0, 100.0, 1.5, _t([T, T]), _t([T, T]), _t([T, T]))
    assert not new and reason == "reuse"


def test_vote_new_on_mask_disagreement_over_used_latents_only():
    batch, stored = _t([T, F, T, F]), _t([T, T, T, T])
    new, reason, dis = algorithm1_vote(10.0, 10.0, 1.5, batch, stored, _t([T, T, F, F]))
    assert new and reason == "mask" and dis == 1
    new, reason, dis = algorithm1_vote(10.0, 10.0, 1.5, batch, stored, _t([T, F, T, F]))
    assert not new and dis == 0
    assert mask_disagreement(batch, stored, None) == 2  # unknown usage: all latents count


def test_no_reference_means_no_loss_rejection():
    new, _, _ = algorithm1_vote(1e9, None, 1.5, _t([T]), _t([T]), None)
    assert not new


# --- the evidence rule ----------------------------------------------------------------------------
def _evidence(warmup=3, **kw):
    m = DomainMemory(max_domains=kw.pop("max_domains", 4), warmup=warmup, momentum=0.1, log_stay_every=1, **kw)
    m.allocate([T, T], step=0)
    for step in range(warmup):  # learn domain 0's reference: explained fraction ~0.8
        m.decide(step, View({0: 0.8}))
    return m


def test_evidence_stays_on_its_own_data_and_moves_its_reference():
    m = _evidence()
    for step in range(3, 30):
        verdict = m.decide(step, View({0: 0.8 + 0.002 * ((-1) ** step)}))
        assert (verdict.domain, verdict.event, verdict.train) == (0, "stay", True)
    assert m.evidence == 0.0 and m.records[0].score_mean == pytest.approx(0.8, abs=0.003)
    assert m.records[0].reference_batches == 30


def test_a_shifted_batch_is_held_then_a_new_domain_allocated_within_two_batches():
    m = _evidence()
    ref = m.records[0].score_mean
    first = m.decide(3, View({0: 0.3}))
    assert (first.event, first.train) == ("held", False)  # one batch can never raise an alarm
    assert m.records[0].score_mean == ref  # a held batch moves no reference
    assert first.evidence == pytest.approx(m.cap)
    second = m.decide(4, View({0: 0.3}))
    assert (second.domain, second.event, second.train) == (1, "new", True)
    assert m.num_domains == 2 and m.current == 1 and m.in_warmup(1)
    assert m.records[0].score_mean == ref  # frozen while the stream is elsewhere
    decision = m.log[-1]
    assert decision.event == "new" and decision.statistic > 5 and decision.episode[0][2] == 0


class DriftView(View):
    """A scripted batch whose learner also reports how much its recent own images lost."""

    def __init__(self, fractions, drift, **kw):
        super().__init__(fractions, **kw)
        self.drift = drift

    def model_drift(self):
        return self.drift


@pytest.mark.parametrize("drift, expected", [(0.0, "new"), (0.1, "new"), (0.3, "stay"), (0.5, "stay")])
def test_an_alarm_the_models_own_drift_explains_keeps_the_domain(drift, expected):
    # the held batches dropped 0.5 below the reference (0.8 -> 0.3): a new domain unless the
    # model's recent images of the current domain lost at least half of that drop themselves
    m = _evidence()
    first = m.decide(3, DriftView({0: 0.3}, drift))
    assert first.event == "held"
    second = m.decide(4, DriftView({0: 0.3}, drift))
    assert (second.event, second.train) == (expected, True)
    if expected == "stay":
        assert second.domain == 0 and m.num_domains == 1 and m.evidence == 0.0
        assert m.log[-1].vote == "model_drift" and m.log[-1].candidate_statistic == drift
        # the reference is re-based to the level the model has now: the same data builds no evidence
        assert m.records[0].score_mean == pytest.approx(0.3, abs=0.01)
        assert m.decide(5, DriftView({0: 0.3}, 0.0)).event == "stay"
    else:
        assert second.domain == 1 and m.num_domains == 2


def test_a_single_odd_batch_does_not_allocate():
    m = _evidence()
    assert m.decide(3, View({0: 0.0})).event == "held"
    for step in range(4, 12):
        assert m.decide(step, View({0: 0.8})).event in ("held", "stay")
    assert m.num_domains == 1 and m.evidence <= m.hold_level


def test_small_shifts_below_the_allowance_build_no_evidence():
    m = _evidence()
    scale = math.sqrt(0.01 / 64 + 0.01**2)
    for step in range(3, 200):  # a deficit of half the allowance, for ever
        m.decide(step, View({0: m.records[0].score_mean - 0.5 * scale}))
    assert m.num_domains == 1


def test_a_returning_domain_is_reidentified_by_the_same_statistic():
    m = _evidence()
    m.decide(3, View({0: 0.3, 1: 0.7}))
    m.decide(4, View({0: 0.3, 1: 0.7}))  # domain 1 allocated
    for step in range(5, 12):
        m.decide(step, View({1: 0.7, 0: 0.3}))  # domain 1 learns its reference
    assert m.current == 1 and not m.in_warmup(1)
    held = m.decide(12, View({1: 0.2, 0: 0.79}))
    assert held.event == "held"
    view = View({1: 0.2, 0: 0.79})
    back = m.decide(13, view)
    assert (back.domain, back.event) == (0, "switch") and 0 in view.asked
    assert m.num_domains == 2 and m.in_warmup(0)  # the returning domain re-learns its reference


def test_among_fitting_domains_the_best_explaining_one_is_chosen():
    m = _evidence(max_domains=5)
    for ref in (0.4, 0.9):  # two more domains with their references (0.4: an immature one)
        m.allocate([T, T], step=0)
        m.records[-1].score_mean, m.records[-1].score_var, m.records[-1].reference_batches = ref, 0.01, 50
    assert m.current == 2
    # domain 1 scores far above its low reference (deficit < 0); domain 0 at its reference: both
    # fit, and domain 0's decoder explains the batch better
    fractions = {2: 0.1, 0: 0.8, 1: 0.6}
    m.decide(400, View(fractions))
    verdict = m.decide(401, View(fractions))
    assert (verdict.domain, verdict.event) == (0, "switch")
    assert m.log[-1].episode[1][0] < m.log[-1].episode[0][0]  # not the smallest deficit


def test_a_returning_domain_the_current_decoder_also_explains_is_found_by_the_switch_test():
    # an easier domain after a harder one: the current decoder explains the returning domain as
    # well as its own data (no alarm), but the returning domain's decoder explains it better
    m = _evidence(max_domains=4, recheck_every=5)
    m.allocate([T, T], step=0)
    m.records[1].score_mean, m.records[1].score_var, m.records[1].reference_batches = 0.7, 0.01, 50
    events = []
    for step in range(100, 140):
        view = View({1: 0.7, 0: 0.76}, per_image=True)  # domain 0 explains these images 0.06 better
        verdict = m.decide(step, view)
        events.append(verdict.event)
        if verdict.event == "switch":
            break
    assert events[-1] == "switch" and m.current == 0 and "held" not in events
    assert len(events) <= 15  # found within three checks (every 5th batch)
    assert m.log[-1].vote == "better_fit"


def test_the_switch_test_stays_when_the_current_decoder_is_best():
    m = _evidence(max_domains=4, recheck_every=1)
    m.allocate([T, T], step=0)
    m.records[1].score_mean, m.records[1].score_var, m.records[1].reference_batches = 0.7, 0.01, 50
    for step in range(100, 400):
        assert m.decide(step, View({1: 0.7, 0: 0.69}, per_image=True)).event == "stay"
    assert m.current == 1 and not m.advantage


def test_max_domains_falls_back_to_the_best_domain_with_one_warning():
    m = _evidence(max_domains=1)
    m.decide(3, View({0: 0.3}))
    with pytest.warns(RuntimeWarning, match="slots"):
        verdict = m.decide(4, View({0: 0.3}))
    assert (verdict.domain, verdict.event) == (0, "max_domains") and m.fallback_count == 1


def test_a_mask_jump_of_a_used_latent_counts_as_evidence_but_batch_noise_does_not():
    m = _evidence(warmup=3)
    m.set_used(0, [T, F], [0.1, 5.0])
    for step in range(3, 40):  # latent 0's atypicality swings 0.3 +- 0.1 from batch to batch
        m.decide(step, View({0: 0.8}, alpha=(0.3 + 0.1 * (-1) ** step, 0.0)))
    assert m.num_domains == 1
    assert m.mask_jumps(0, torch.tensor([0.45, 0.0])) == 0  # noise of its own size
    assert m.mask_jumps(0, torch.tensor([0.3, 9.0])) == 0  # latent 1 is unused
    assert m.mask_jumps(0, torch.tensor([3.0, 0.0])) == 1  # a jump by units
    # a used latent is not switched off by batch noise above lambda_1, only by a jump
    assert m.batch_mask(0, torch.tensor([0.8, 0.0])).tolist() == [T, T]
    assert m.batch_mask(0, torch.tensor([3.0, 0.0])).tolist() == [F, T]
    assert m.batch_mask(0, torch.tensor([0.0, 0.9])).tolist() == [T, F]  # unused: plain hysteresis
    held = m.decide(40, View({0: 0.8}, alpha=(3.0, 0.0)))
    assert held.event == "held" and held.evidence == pytest.approx(m.cap)
    verdict = m.decide(41, View({0: 0.8}, alpha=(3.0, 0.0)))
    assert verdict.event == "new" and m.log[-1].vote == "mask"


def test_evidence_state_round_trips():
    m = _evidence()
    m.decide(3, View({0: 0.3}))
    m2 = DomainMemory(max_domains=4)
    m2.load_state_dict(m.state_dict())
    assert m2.state_dict() == m.state_dict()
    assert m.decide(4, View({0: 0.3})).event == m2.decide(4, View({0: 0.3})).event == "new"


# --- the paper's rule -----------------------------------------------------------------------------
def _ratio(**kw):
    m = DomainMemory(max_domains=kw.pop("max_domains", 3), kappa=1.5, rule="ratio", momentum=0.5,
                     log_stay_every=1, **kw)  # fmt: skip
    m.allocate([T, T], step=0)
    m.decide(0, View({0: 0.8}, losses={0: 100.0}))  # reference 100
    return m


def test_ratio_reuses_then_allocates_on_high_loss():
    m = _ratio()
    assert m.decide(1, View({0: 0.8}, losses={0: 120.0})).event == "stay"
    verdict = m.decide(2, View({0: 0.8}, losses={0: 500.0}))
    assert (verdict.domain, verdict.event) == (1, "new") and m.log[-1].vote == "loss"


def test_ratio_switches_back_to_a_known_domain():
    m = _ratio()
    m.decide(1, View({0: 0.8}, losses={0: 500.0, 1: 300.0}))
    verdict = m.decide(2, View({0: 0.8}, losses={0: 110.0}, candidate=0))
    assert (verdict.domain, verdict.event) == (0, "switch")


def test_ratio_patience_requires_consecutive_votes():
    m = _ratio(patience=3)
    high, low = View({0: 0.8}, losses={0: 500.0}), View({0: 0.8}, losses={0: 100.0})
    assert m.decide(1, high).event == "pending"
    assert m.decide(2, high).event == "pending"
    assert m.decide(3, low).event == "stay"  # streak broken
    assert [m.decide(s, high).event for s in (4, 5, 6)] == ["pending", "pending", "new"]


def test_a_pending_mask_vote_survives_until_the_patience_runs_out():
    """A held batch must not overwrite the stored mask: the vote would erase itself."""
    m = _ratio(patience=3)
    m.set_used(0, [T, T], [0.1, 0.1])
    flipped = {0: _t([T, F])}  # latent 1 turns atypical: a used, active latent leaves the mask
    events = [m.decide(s, View({0: 0.8}, losses={0: 100.0}, masks=flipped)).event for s in (1, 2, 3)]
    assert events == ["pending", "pending", "new"]
    assert m.records[0].latent_mask == [T, T]  # domain 0 kept the mask it had


def test_ratio_warmup_domain_cannot_be_rejected():
    m = DomainMemory(max_domains=3, kappa=1.5, rule="ratio", warmup=5, log_stay_every=1)
    m.allocate([T, T], step=0)
    assert m.decide(0, View({0: 0.8}, losses={0: 1e6})).event == "stay"
    assert m.log[-1].vote == "warmup"


def test_ratio_fallback_to_current_before_allocating():
    for fallback, expected in ((False, "new"), (True, "stay")):
        m = _ratio(fallback_to_current=fallback)
        m.decide(1, View({0: 0.8}, losses={0: 500.0, 1: 50.0}))  # domain 1 allocated, reference 50
        # the classifier proposes domain 0, which rejects the batch; domain 1 still explains it
        verdict = m.decide(2, View({0: 0.8}, losses={0: 500.0, 1: 55.0}, candidate=0))
        assert verdict.event == expected


def test_ratio_reference_frozen_while_domain_not_current():
    m = _ratio()
    m.decide(1, View({0: 0.8}, losses={0: 500.0, 1: 60.0}))
    ref0 = m.records[0].reference_recon_loss
    for step in range(2, 10):
        m.decide(step, View({0: 0.8}, losses={1: 50.0, 0: 500.0}, candidate=1))
    assert m.records[0].reference_recon_loss == ref0
    assert m.records[1].reference_recon_loss == pytest.approx(50.0, abs=1.0)


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="domain test"):
        DomainMemory(max_domains=2, rule="magic")
