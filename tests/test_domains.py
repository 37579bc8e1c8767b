"""Algorithm 1 on constructed cases, and the decision policy around it."""

import pytest
import torch

from vase_rl.domains import DomainMemory, algorithm1_vote, mask_disagreement

T, F = True, False


def _t(values):
    return torch.tensor(values, dtype=torch.bool)


def test_vote_new_on_high_loss():
    new, reason, _ = algorithm1_vote(200.0, 100.0, 1.5, _t([T, T]), _t([T, T]), _t([T, T]))
    assert new and reason == "loss"
    new, reason, _ = algorithm1_vote(149.0, 100.0, 1.5, _t([T, T]), _t([T, T]), _t([T, T]))
    assert not new and reason == "reuse"


def test_vote_new_on_mask_disagreement_over_used_latents_only():
    batch, stored = _t([T, F, T, F]), _t([T, T, T, T])
    # latent 1 differs and is used -> new
    new, reason, dis = algorithm1_vote(10.0, 10.0, 1.5, batch, stored, _t([T, T, F, F]))
    assert new and reason == "mask" and dis == 1
    # the differing latents 1 and 3 are unused by the domain -> reuse
    new, reason, dis = algorithm1_vote(10.0, 10.0, 1.5, batch, stored, _t([T, F, T, F]))
    assert not new and dis == 0
    assert mask_disagreement(batch, stored, None) == 2  # unknown usage: all latents count


def test_no_reference_means_no_loss_rejection():
    new, _, _ = algorithm1_vote(1e9, None, 1.5, _t([T]), _t([T]), None)
    assert not new


def _memory(**kw):
    m = DomainMemory(
        max_domains=kw.pop("max_domains", 3),
        kappa=1.5,
        patience=kw.pop("patience", 1),
        warmup=kw.pop("warmup", 0),
        momentum=0.5,
        log_stay_every=1,
    )
    m.allocate([T, T], step=0)
    m.record_update(0, 100.0, [T, T], step=0, update_reference=True)
    return m


def test_memory_reuses_then_allocates_on_high_loss():
    m = _memory()
    assert m.decide(1, 0, 120.0, _t([T, T])) == (0, "stay")
    assert m.decide(2, 0, 500.0, _t([T, T])) == (1, "new")
    assert m.num_domains == 2 and m.current == 1
    assert m.log[-1].vote == "loss" and m.log[-1].chosen == 1


def test_memory_switches_back_to_known_domain():
    m = _memory()
    m.decide(1, 0, 500.0, _t([T, T]))
    m.record_update(1, 300.0, [T, T], step=1, update_reference=True)
    assert m.decide(2, 0, 110.0, _t([T, T])) == (0, "switch")


def test_patience_requires_consecutive_votes():
    m = _memory(patience=3)
    assert m.decide(1, 0, 500.0, _t([T, T]))[1] == "pending"
    assert m.decide(2, 0, 500.0, _t([T, T]))[1] == "pending"
    assert m.decide(3, 0, 100.0, _t([T, T]))[1] == "stay"  # streak broken
    for step in (4, 5):
        assert m.decide(step, 0, 500.0, _t([T, T]))[1] == "pending"
    assert m.decide(6, 0, 500.0, _t([T, T])) == (1, "new")


def test_warmup_domain_cannot_be_rejected():
    m = _memory(warmup=5)
    m.records[0].num_updates = 1  # young domain
    assert m.decide(1, 0, 1e6, _t([F, F])) == (0, "stay")
    assert m.log[-1].vote == "warmup"


def test_fallback_at_max_domains():
    m = _memory(max_domains=1)
    with pytest.warns(RuntimeWarning, match="slots"):
        chosen, event = m.decide(1, 0, 500.0, _t([T, T]))
    assert (chosen, event) == (0, "max_domains") and m.num_domains == 1 and m.fallback_count == 1


def test_reference_frozen_while_domain_not_current():
    m = _memory()
    m.decide(1, 0, 500.0, _t([T, T]))
    ref0 = m.records[0].reference_recon_loss
    for step in range(2, 10):
        m.record_update(1, 50.0, [T, T], step=step, update_reference=True)
    assert m.records[0].reference_recon_loss == ref0
    assert m.records[1].reference_recon_loss == pytest.approx(50.0)


def test_state_roundtrip():
    m = _memory()
    m.decide(1, 0, 500.0, _t([T, T]))
    m2 = DomainMemory(max_domains=3, kappa=1.5)
    m2.load_state_dict(m.state_dict())
    assert m2.state_dict() == m.state_dict()


def test_used_latents_are_read_within_the_domains_mask():
    # latent 1 was marked used, but the domain masked it later: its decoder only saw noise there,
    # so the batch activating latent 1 is no evidence of a new domain
    m = _memory()
    m.set_used(0, [T, T], [0.1, 0.1])
    m.records[0].latent_mask = [T, F]
    assert m.decide(1, 0, 100.0, _t([T, T])) == (0, "stay")
    assert m.decide(2, 0, 100.0, _t([F, F])) == (1, "new")  # a used, active latent turned atypical


def test_fallback_to_current_domain_before_allocating():
    m = _memory()
    m.decide(1, 0, 500.0, _t([T, T]))  # domain 1 allocated and current
    m.record_update(1, 50.0, [T, T], step=1, update_reference=True)
    # classifier proposes domain 0, which rejects the batch; domain 1 still explains it
    assert m.decide(2, 0, 500.0, _t([T, T]), current_loss=55.0, current_batch_mask=_t([T, T])) == (2, "new")
    m2 = _memory()
    m2.fallback_to_current = True
    m2.decide(1, 0, 500.0, _t([T, T]))
    m2.record_update(1, 50.0, [T, T], step=1, update_reference=True)
    assert m2.decide(2, 0, 500.0, _t([T, T]), current_loss=55.0, current_batch_mask=_t([T, T])) == (1, "stay")
    assert m2.log[-1].vote == "current_fits"
    # when the current domain rejects the batch too, a new domain is allocated
    assert m2.decide(3, 0, 500.0, _t([T, T]), current_loss=500.0, current_batch_mask=_t([T, T])) == (2, "new")
