"""Imagination-driven exploration (vase_rl.imagination; VASE_SPEC.md §10, paper appendix A.3.1)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from torch import nn

from vase_rl import VASE, VASEConfig
from vase_rl.imagination import (
    Imagination,
    ImaginationExplorer,
    TranslationPolicy,
    latent_error,
    random_translation,
    translate_images,
    translation_sensitivity,
)

S = 32


# ------------------------------------------------------------------------------------------
# a fixed encoder whose first two latents are the image's centroid (position), the rest 0
# ------------------------------------------------------------------------------------------
class CentroidEncoder(nn.Module):
    """mu = ((cx - c) / scale, (cy - c) / scale, 0, ...), tiny posterior variance."""

    def __init__(self, latent_dim: int = 4, size: int = S, scale: float = 4.0) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1))  # a weight that must never move
        self.register_buffer("grid", torch.arange(size, dtype=torch.float32))
        self.latent_dim, self.centre, self.scale = latent_dim, (size - 1) / 2, scale

    def forward(self, x):
        mass = x.sum((1, 2, 3)) + 1e-6
        cx = (x.sum((1, 2)) * self.grid).sum(-1) / mass
        cy = (x.sum((1, 3)) * self.grid).sum(-1) / mass
        pos = torch.stack([cx, cy], 1).sub(self.centre).div(self.scale) * self.gain
        mu = torch.cat([pos, torch.zeros(x.shape[0], self.latent_dim - 2)], 1)
        return mu, torch.full_like(mu, -12.0), mu


def stub_learner(latent_dim: int = 4, mask=None, max_shift: float = 0.5, seed: int = 0, **cfg):
    config = VASEConfig.preset("cpu32", latent_dim=latent_dim, imagination=True, imagination_max_shift=max_shift, **cfg)
    learner = types.SimpleNamespace(
        config=config,
        device=torch.device("cpu"),
        seed=seed,
        encoder=CentroidEncoder(latent_dim),
        generator=torch.Generator().manual_seed(seed),
        latent_mask=np.ones(latent_dim, bool) if mask is None else np.asarray(mask, bool),
    )
    learner.imagination = Imagination(config, learner)
    return learner


def blobs(n: int, rng: np.random.Generator, spread: float = 6.0) -> torch.Tensor:
    yy, xx = np.mgrid[:S, :S]
    c = rng.uniform(S / 2 - spread, S / 2 + spread, size=(n, 2))
    img = np.exp(-((xx - c[:, 0, None, None]) ** 2 + (yy - c[:, 1, None, None]) ** 2) / (2 * 1.5**2))
    return torch.tensor(img[:, None], dtype=torch.float32)


def targets(n: int, latent_dim: int = 4, seed: int = 5) -> torch.Tensor:
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed)).clamp(-2, 2)


# ------------------------------------------------------------------------------------------
# the spatial transformer
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("padding", ["zeros", "background"])
def test_whole_pixel_translation_matches_shifted_array(padding):
    x = torch.rand(3, 2, S, S, generator=torch.Generator().manual_seed(0))
    shifts = [(3, -2), (-5, 4), (0, 7)]
    out = translate_images(x, torch.tensor(shifts, dtype=torch.float32), padding=padding)
    for i, (dx, dy) in enumerate(shifts):
        ref = np.roll(x[i].numpy(), (dy, dx), axis=(1, 2))  # content moves right by dx, down by dy
        m = 8  # interior: away from the wrapped / exposed borders
        np.testing.assert_allclose(out[i, :, m:-m, m:-m].numpy(), ref[:, m:-m, m:-m], atol=1e-6, rtol=0)


def test_translation_fills_exposed_area_with_background():
    x = torch.zeros(2, 1, S, S)
    x[1] = 1.0  # an "inverted" frame: white background
    x[:, :, 10:14, 10:14] = 0.5
    shift = torch.tensor([[6.0, 0.0], [6.0, 0.0]])
    zeros = translate_images(x, shift, padding="zeros")
    bg = translate_images(x, shift, padding="background")
    assert torch.equal(zeros[1, :, :, :6], torch.zeros(1, S, 6))
    assert torch.allclose(bg[1, :, :, :6], torch.ones(1, S, 6))
    assert torch.allclose(bg[0, :, 10:14, 16:20], torch.full((1, 4, 4), 0.5))
    with pytest.raises(ValueError, match="padding"):
        translate_images(x, shift, padding="wrap")
    with pytest.raises(ValueError, match="shift"):
        translate_images(x, shift[:1])


def test_gradients_reach_tx_and_ty():
    x = blobs(2, np.random.default_rng(0))
    shift = torch.tensor([[1.3, -0.6], [-2.4, 2.2]], requires_grad=True)
    out = translate_images(x, shift)
    # a loss that depends on where the content is: its centroid, weighted by pixel coordinates
    grid = torch.arange(S, dtype=torch.float32)
    cx = (out.sum((1, 2)) * grid).sum(-1) / out.sum((1, 2, 3))
    cy = (out.sum((1, 3)) * grid).sum(-1) / out.sum((1, 2, 3))
    (cx + cy).sum().backward()
    g = shift.grad
    assert g is not None and torch.isfinite(g).all()
    assert (g.abs() > 1e-3).all(), g


def test_policy_architecture_and_bound():
    pol = TranslationPolicy((1, S, S), latent_dim=6, hidden=32, max_shift=0.25)
    convs = [m for m in pol.convs if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4
    assert all(c.out_channels == 16 and c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)
    linears = [m for m in pol.head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16 * 2 * 2 + 6, 32), (32, 2)]
    x = torch.rand(5, 1, S, S)
    shift = pol.shift_pixels(x, torch.randn(5, 6) * 1e4)  # huge z*: tanh keeps it in range
    assert shift.shape == (5, 2) and (shift.abs() <= 0.25 * S + 1e-5).all()
    with pytest.raises(ValueError, match="z_star"):
        pol(x, torch.randn(5, 5))
    # small images: fewer halvings, never a 0x0 map
    assert TranslationPolicy((1, 8, 8), 4).shift_pixels(torch.rand(2, 1, 8, 8), torch.randn(2, 4)).shape == (2, 2)


def test_random_translation_bounds_and_seed():
    x = torch.rand(16, 1, S, S)
    out1, s1 = random_translation(x, 0.2, torch.Generator().manual_seed(3))
    out2, s2 = random_translation(x, 0.2, torch.Generator().manual_seed(3))
    assert torch.equal(out1, out2) and torch.equal(s1, s2)
    assert (s1.abs() <= 0.2 * S).all() and s1.abs().max() > 0.1 * S


def test_latent_error_masks():
    z, zs = np.zeros((2, 3), np.float32), np.array([[1, 2, 3], [0, 0, 1]], np.float32)
    assert latent_error(z, zs).tolist() == [14.0, 1.0]
    assert latent_error(z, zs, np.array([True, False, True])).tolist() == [10.0, 1.0]
    assert latent_error(z, zs, [1]).tolist() == [4.0, 0.0]
    assert isinstance(latent_error(torch.zeros(2, 3), torch.ones(2, 3)), torch.Tensor)
    with pytest.raises(TypeError):
        latent_error(z, zs, np.ones(3))


# ------------------------------------------------------------------------------------------
# L_agent
# ------------------------------------------------------------------------------------------
def test_policy_learns_to_move_a_blob_to_an_imagined_position():
    torch.manual_seed(0)
    learner = stub_learner(mask=[True, True, False, False])
    im = learner.imagination
    x_eval, z_eval = blobs(256, np.random.default_rng(1)), targets(256)
    before = im.evaluate(x_eval, z_eval)
    assert before["ratio"] == pytest.approx(1.0, abs=0.05)  # the fresh policy barely moves anything
    rng = np.random.default_rng(0)
    for _ in range(150):
        stats = im.train_step(blobs(32, rng))
    after = im.evaluate(x_eval, z_eval)
    assert after["policy"] < before["identity"] / 20, (before, after)
    assert stats["error"] < stats["error_identity"] / 10
    assert stats["scored_latents"] == 2 and im.num_updates == 150


def test_agent_loss_never_changes_the_encoder(tiny_config, rng):
    from conftest import squares

    learner = VASE(tiny_config.replace(imagination=True), seed=0, device="cpu")
    learner.update(squares(rng, 16))
    enc = {k: v.clone() for k, v in learner.encoder.state_dict().items()}
    dec = {k: v.clone() for k, v in learner.decoder.state_dict().items()}
    pol = {k: v.clone() for k, v in learner.imagination.policy.state_dict().items()}
    for p in [*learner.encoder.parameters(), *learner.decoder.parameters()]:
        p.grad = None
    first = next(learner.encoder.parameters())
    first.grad = torch.full_like(first, 0.5)  # an existing gradient must be left exactly as it is
    x = torch.from_numpy(squares(rng, 16)).permute(0, 3, 1, 2).float() / 255
    for _ in range(5):
        learner.imagination.train_step(x)
    assert torch.equal(first.grad, torch.full_like(first, 0.5))
    assert all(p.grad is None for p in list(learner.encoder.parameters())[1:])
    assert all(p.grad is None for p in learner.decoder.parameters())
    assert all(torch.equal(v, enc[k]) for k, v in learner.encoder.state_dict().items())
    assert all(torch.equal(v, dec[k]) for k, v in learner.decoder.state_dict().items())
    assert any(not torch.equal(v, pol[k]) for k, v in learner.imagination.policy.state_dict().items())
    # and the policy's optimiser holds only policy parameters
    opt_params = {id(p) for g in learner.imagination.optimizer.param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in learner.imagination.policy.parameters()}


def test_centroid_encoder_gain_unchanged_by_training():
    learner = stub_learner()
    for _ in range(3):
        learner.imagination.train_step(blobs(8, np.random.default_rng(0)))
    assert learner.encoder.gain.grad is None and learner.encoder.gain.item() == 1.0


def test_active_only_scores_only_active_latents():
    x, z = blobs(8, np.random.default_rng(0)), targets(8)
    only = stub_learner(mask=[True, False, False, False])
    loss, parts = only.imagination.agent_loss(x, z)
    mu = parts["mu"].detach()
    assert loss.item() == pytest.approx(float(((z[:, 0] - mu[:, 0]) ** 2).mean()), rel=1e-3)
    everything = stub_learner(mask=[True, False, False, False], imagination_active_only=False)
    assert everything.imagination.score_mask().all()
    loss_all, parts = everything.imagination.agent_loss(x, z)
    assert loss_all.item() == pytest.approx(float(((z - parts["mu"].detach()) ** 2).sum(1).mean()), rel=1e-3)
    assert only.imagination.train_step(x)["scored_latents"] == 1


def test_saturated_policy_is_pulled_back_into_range():
    learner = stub_learner(mask=[True, True, False, False])
    im = learner.imagination
    with torch.no_grad():
        im.policy.head[-1].bias.fill_(6.0)  # tanh(6): every translation at the bound, no gradient
    x = blobs(16, np.random.default_rng(0))
    first = im.train_step(x)["saturation"]
    for _ in range(40):
        last = im.train_step(x)["saturation"]
    assert first > 1.0 and last < first / 10


def test_translation_sensitivity_finds_position_latents():
    learner = stub_learner(latent_dim=5)
    sens = translation_sensitivity(learner, blobs(32, np.random.default_rng(0)).numpy())
    assert sens.shape == (5,)
    assert set(np.argsort(-sens)[:2]) == {0, 1} and sens[2:].max() < 1e-6 < sens[:2].min()


# ------------------------------------------------------------------------------------------
# the learner's plugin: augmentation, stats, reproducibility, save/load
# ------------------------------------------------------------------------------------------
def _batches(rng, n, k=16):
    from conftest import squares

    return [squares(rng, k) for _ in range(n)]


def test_learner_appends_imagined_images_and_logs(tiny_config, rng, monkeypatch):
    cfg = tiny_config.replace(imagination=True, imagination_fraction=0.5, imagination_every=2)
    learner = VASE(cfg, seed=0, device="cpu")
    seen = []
    original = learner.imagination.imagine
    monkeypatch.setattr(learner.imagination, "imagine", lambda x: seen.append(x.shape[0]) or original(x))
    history = [learner.update(b) for b in _batches(rng, 4)]
    assert seen == [8, 8, 8]  # from the second update on (a domain exists), 0.5 x 16 images
    assert [("imagination_loss" in h) for h in history] == [False, True, False, True]
    assert {
        "imagination_loss",
        "imagination_error",
        "imagination_error_identity",
        "imagination_shift",
        "imagination_scored_latents",
    } <= set(history[1])
    assert learner.imagination.num_updates == 2 and learner.imagination.num_imagined == 24


def test_imagined_images_are_translations_of_the_input(tiny_config, rng):
    learner = VASE(tiny_config.replace(imagination=True, imagination_max_shift=0.25), seed=0, device="cpu")
    learner.update(_batches(rng, 1)[0])
    x = torch.from_numpy(_batches(rng, 1)[0]).permute(0, 3, 1, 2).float() / 255
    z = torch.randn(16, tiny_config.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        shift = learner.imagination.policy.shift_pixels(x, z)
    out = learner.imagination.imagine(x, z)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.allclose(out, translate_images(x, shift).clamp(0, 1))
    assert (shift.abs() <= 0.25 * 16 + 1e-5).all()


def test_imagination_is_reproducible_from_the_seed(tiny_config, rng):
    cfg = tiny_config.replace(imagination=True)
    batches = _batches(rng, 3)
    runs = []
    for _ in range(2):
        learner = VASE(cfg, seed=7, device="cpu")
        runs.append([learner.update(b) for b in batches])
    assert runs[0] == runs[1]


def test_imagination_state_survives_save_and_load(tiny_config, rng, tmp_path):
    cfg = tiny_config.replace(imagination=True, imagination_fraction=0.5)
    learner = VASE(cfg, seed=3, device="cpu")
    batches = _batches(rng, 6)
    for b in batches[:4]:
        learner.update(b)
    learner.imagination.saturation_weight = 0.5
    path = learner.save(tmp_path / "vase.pt")
    state = torch.load(path, weights_only=True)  # plain tensors and python types only
    assert state["imagination"]["num_updates"] == 4
    restored = VASE.load(path, device="cpu")
    a, b = learner.imagination, restored.imagination
    assert b.num_updates == 4 and b.num_imagined == a.num_imagined and b.padding == a.padding
    assert b.saturation_weight == 0.5
    for k, v in a.policy.state_dict().items():
        assert torch.equal(v, b.policy.state_dict()[k])
    assert b.optimizer.state_dict()["state"].keys() == a.optimizer.state_dict()["state"].keys()
    # and the restored learner continues exactly as the original
    assert [learner.update(x) for x in batches[4:]] == [restored.update(x) for x in batches[4:]]
    for k, v in a.policy.state_dict().items():
        assert torch.equal(v, b.policy.state_dict()[k])


def test_load_rejects_foreign_state():
    learner = stub_learner()
    with pytest.raises(ValueError, match="version"):
        learner.imagination.load_state_dict({"version": 99})


# ------------------------------------------------------------------------------------------
# acting for real
# ------------------------------------------------------------------------------------------
def test_explorer_converts_translations_into_env_actions():
    from vase_rl.envs import SpriteTaskEnv

    env = SpriteTaskEnv(domain="shapes", continuous=True)
    scale = ImaginationExplorer.env_pixels_per_action(env)
    span = env.family.image_size - env.family.patch_size
    assert scale.tolist() == [span * env.max_shift] * 2
    learner = stub_learner()
    explorer = ImaginationExplorer(learner)
    obs, info = env.reset(seed=0)
    z = np.array([1.0, -1.0, 0.0, 0.0], np.float32)
    action = explorer.act(obs, z, env)
    expected = np.clip(explorer.translation(obs, z) / scale, -1, 1)
    np.testing.assert_allclose(action, expected, rtol=1e-6)
    assert action.dtype == np.float32 and env.action_space.contains(action)
    with pytest.raises(ValueError, match="imagination"):
        ImaginationExplorer(types.SimpleNamespace(imagination=None))


@pytest.mark.slow
def test_explorer_realises_imagined_positions_in_the_sprite_env():
    """Train the policy against the centroid encoder on sprite images, then let it act in the
    continuous sprite env: the real latent gets much closer to z* than not moving or random moves."""
    from vase_rl.envs import SpriteTaskEnv, make_family

    torch.manual_seed(0)
    learner = stub_learner(mask=[True, True, False, False], max_shift=0.4)
    fam = make_family("moving_shapes", image_size=S, channels=1, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(300):
        images = torch.from_numpy(fam.sample(64, rng)[0]).permute(0, 3, 1, 2).float() / 255
        learner.imagination.train_step(images)
    env = SpriteTaskEnv(domain="shapes", continuous=True, goal_radius=1e-3)
    explorer = ImaginationExplorer(learner)
    goal_rng = np.random.default_rng(1)
    start, final, rand = [], [], []
    for ep in range(12):
        obs, _ = env.reset(seed=ep)
        z_star = explorer.imagine_goal(obs, [0, 1], goal_rng, scale=0.7)  # keep goals on the screen
        res = explorer.realise(env, z_star, obs=obs, steps=6)
        assert len(res["errors"]) == 7 and len(res["positions"]) == 6
        start.append(res["initial_error"])
        final.append(res["final_error"])
        obs, _ = env.reset(seed=ep)
        for _ in range(6):
            obs, *_ = env.step(goal_rng.uniform(-1, 1, 2).astype(np.float32))
        rand.append(float(latent_error(explorer.encode(obs)[None], z_star[None], [0, 1])[0]))
    assert np.mean(final) < np.mean(start) / 4, (np.mean(start), np.mean(final))
    assert np.mean(final) < np.mean(rand) / 4, (np.mean(rand), np.mean(final))
