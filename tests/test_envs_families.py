"""Sprite families and domain names: factor interface, determinism, variants, errors."""

import numpy as np
import pytest
import vase_rl.envs as E
from vase_rl.envs.families import CLASS, HUE, ROTATION, SCALE, STYLE, X, Y

BASE = ["shapes", "digits", "letters", "garments"]


@pytest.mark.parametrize("name", BASE)
def test_factor_interface(name):
    fam = E.make_family(name, image_size=32, channels=1, seed=0, moving=True)
    assert fam.factor_names[0] == "class"
    assert fam.factor_names.index("x") == X and fam.factor_names.index("y") == Y
    assert fam.num_factors == len(fam.factor_names) == len(fam.factor_sizes) == 7
    assert fam.factors_num_values == list(fam.factor_sizes)
    assert fam.factor_sizes[CLASS] == fam.num_classes == len(fam.class_names)
    rng = np.random.default_rng(0)
    f = fam.sample_factors(500, rng)
    assert f.shape == (500, 7) and f.dtype == np.float32
    for j, (lo, hi) in enumerate(fam.factor_ranges):
        assert f[:, j].min() >= lo - 1e-6 and f[:, j].max() <= hi + 1e-6
    assert f[:, X].min() >= 0.0 and f[:, X].max() <= 1.0
    assert f[:, X].min() < 0.1 and f[:, X].max() > 0.9  # moving: the whole range is used
    imgs = fam.render(f)
    assert imgs.shape == (500, 32, 32, 1) and imgs.dtype == np.uint8
    assert imgs.reshape(500, -1).max(axis=1).min() > 100  # every image shows a sprite
    idx = fam.factors_to_indices(f)
    np.testing.assert_array_equal(fam.indices_to_factors(idx), f)


def test_known_factor_grids():
    shapes = E.make_family("shapes")
    assert shapes.class_names == ("square", "ellipse", "heart")
    assert shapes.factor_sizes[:4] == (3, 1, 6, 40)
    digits = E.make_family("digits")
    assert digits.class_names == tuple("0123456789")
    assert E.make_family("garments").num_classes == 10
    assert E.make_family("letters").num_classes == 10
    assert digits.factor_sizes[X] == digits.factor_sizes[Y] == 1  # static: centred
    assert digits.factor_ranges[X] == (0.5, 0.5)


def test_static_is_centred_and_moving_moves():
    static = E.make_family("digits")
    f = static.sample_factors(100, 1)
    assert np.all(f[:, X] == 0.5) and np.all(f[:, Y] == 0.5)
    moving = E.make_family("moving_shapes")
    base = moving.sample_factors(1, 0)
    left, right, top, bottom = (base.copy() for _ in range(4))
    left[:, X], right[:, X] = 0.0, 1.0
    top[:, Y], bottom[:, Y] = 0.0, 1.0

    def centroid(img):
        m = img[0, :, :, 0].astype(float)
        yy, xx = np.mgrid[: m.shape[0], : m.shape[1]]
        return (m * xx).sum() / m.sum(), (m * yy).sum() / m.sum()

    assert centroid(moving.render(left))[0] < 12 < centroid(moving.render(right))[0]
    assert centroid(moving.render(top))[1] < 12 < centroid(moving.render(bottom))[1]


@pytest.mark.parametrize("name", BASE)
def test_sampling_is_deterministic(name):
    fam = E.make_family(name, moving=True)
    a_img, a_f = fam.sample(64, np.random.default_rng(5))
    b_img, b_f = fam.sample(64, np.random.default_rng(5))
    c_img, _ = fam.sample(64, np.random.default_rng(6))
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_f, b_f)
    assert not np.array_equal(a_img, c_img)
    # render(factors) reproduces the sampled images exactly
    np.testing.assert_array_equal(fam.render(a_f), a_img)
    # a fresh family object (and a rebuilt bank) draws the same images
    E.clear_caches()
    np.testing.assert_array_equal(E.make_family(name, moving=True).render(a_f), a_img)


def test_family_seed_changes_writers_not_shapes():
    f = E.make_family("digits").sample_factors(32, 0)
    assert not np.array_equal(E.make_family("digits", seed=0).render(f), E.make_family("digits", seed=1).render(f))
    g = E.make_family("shapes").sample_factors(32, 0)
    np.testing.assert_array_equal(E.make_family("shapes", seed=0).render(g), E.make_family("shapes", seed=3).render(g))


@pytest.mark.parametrize("name", BASE)
def test_label_balance(name):
    fam = E.make_family(name)
    labels = fam.labels(fam.sample_factors(6000, np.random.default_rng(1)))
    counts = np.bincount(labels, minlength=fam.num_classes)
    expected = 6000 / fam.num_classes
    assert counts.min() > 0.85 * expected and counts.max() < 1.15 * expected


@pytest.mark.parametrize(
    "variant,channels",
    [
        ({}, 1),
        ({}, 3),
        ({"background": "texture"}, 1),
        ({"noise": 0.2, "background": "noise"}, 1),
        ({"colour": "random"}, 3),
    ],
)
def test_inverted_is_255_minus_original(variant, channels):
    plain = E.make_family("moving_letters", channels=channels, **variant)
    inv = E.make_family("inverted_moving_letters", channels=channels, **variant)
    assert inv.inverted and not plain.inverted
    f = plain.sample_factors(40, 3)
    a = plain.render(f, np.random.default_rng(9))
    b = inv.render(f, np.random.default_rng(9))
    np.testing.assert_array_equal(b, 255 - a)


def test_channels_and_colour():
    grey3 = E.make_family("moving_garments", channels=3)
    img, _ = grey3.sample(16, 0)
    assert img.shape == (16, 32, 32, 3)
    assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])
    col = E.make_domain("coloured_moving_shapes", channels=3)
    img, f = col.sample(64, 0)
    assert col.factor_sizes[HUE] > 1 and len(np.unique(f[:, HUE])) > 1
    assert not np.array_equal(img[..., 0], img[..., 1])
    with pytest.raises(ValueError, match="channels=3"):
        E.make_domain("coloured_shapes", channels=1)


@pytest.mark.parametrize("size", [16, 48, 64])
def test_any_image_size(size):
    fam = E.make_family("moving_digits", image_size=size)
    img, _ = fam.sample(8, 0)
    assert img.shape == (8, size, size, 1)
    assert fam.observation_shape == (size, size, 1)


def test_backgrounds_and_noise():
    f = E.make_family("shapes").sample_factors(8, 0)
    plain = E.make_family("shapes").render(f)
    grey = E.make_family("shapes", background="grey").render(f)
    assert (plain == 0).mean() > 0.5 and (grey == 0).mean() == 0.0
    tex = E.make_family("shapes", background="texture")
    np.testing.assert_array_equal(tex.render(f), tex.render(f))  # fixed texture
    noisy = E.make_family("shapes", noise=0.1)
    n1, n2 = noisy.render(f, np.random.default_rng(0)), noisy.render(f, np.random.default_rng(0))
    np.testing.assert_array_equal(n1, n2)
    assert not np.array_equal(n1, plain)


def test_render_snaps_off_grid_values_and_wraps_rotation():
    fam = E.make_family("moving_shapes")
    f = fam.sample_factors(20, 0)
    g = f.copy()
    g[:, SCALE] += 0.01
    g[:, ROTATION] += 360.0
    np.testing.assert_array_equal(fam.render(g), fam.render(f))
    with pytest.raises(ValueError, match="shape"):
        fam.render(np.zeros((3, 5)))
    assert fam.render(np.zeros((0, 7))).shape == (0, 32, 32, 1)


def test_classes_are_distinguishable_from_pixels():
    """Nearest-class-mean on raw pixels: far above chance, yet not trivially perfect (variety)."""
    fam = E.make_family("digits")
    rng = np.random.default_rng(0)
    x, f = fam.sample(3000, rng)
    y = fam.labels(f)
    x = x.reshape(len(x), -1).astype(np.float32) / 255.0
    means = np.stack([x[:2000][y[:2000] == k].mean(0) for k in range(10)])
    pred = ((x[2000:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    acc = (pred == y[2000:]).mean()
    assert 0.4 < acc < 0.995, acc


def test_style_factor_varies_for_glyphs_only():
    assert E.make_family("digits").factor_sizes[STYLE] == 12
    assert E.make_family("shapes").factor_sizes[STYLE] == 1
    assert E.make_family("digits", num_styles=4).factor_sizes[STYLE] == 4


def test_disentanglement_lib_aliases():
    fam = E.make_family("moving_digits")
    rs = np.random.RandomState(0)
    f = fam.sample_factors(5, rs)
    obs = fam.sample_observations_from_factors(f, rs)
    assert obs.shape == (5, 32, 32, 1)
    assert fam.sample_observations(3, 0).shape == (3, 32, 32, 1)
    assert fam.factor_index("y") == Y
    with pytest.raises(ValueError, match="unknown factor"):
        fam.factor_index("colour")


def test_domain_names():
    for name in [
        "shapes",
        "moving_shapes",
        "digits",
        "moving_digits",
        "letters",
        "moving_letters",
        "garments",
        "moving_garments",
        "inverted_digits",
        "inverted_moving_shapes",
    ]:
        assert name in E.DOMAIN_NAMES
    assert set(E.DOMAIN_NAMES) <= set(E.list_domains())
    for name in E.DOMAIN_NAMES:
        fam = E.make_domain(name, image_size=16)
        assert fam.name == name
        assert fam.moving == ("moving_" in name) and fam.inverted == name.startswith("inverted_")
    assert E.parse_domain("moving_inverted_digits") == ("digits", {"moving": True, "inverted": True})
    assert E.parse_domain("noisy_textured_letters")[1] == {"noise": 0.1, "background": "texture"}


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: E.make_family("zebras"), "unknown sprite family 'zebras'"),
        (lambda: E.make_domain("moving_zebras"), "known families"),
        (lambda: E.make_family("digits", image_size=0), "image_size"),
        (lambda: E.make_family("digits", image_size=4), "image_size"),
        (lambda: E.make_family("digits", channels=2), "channels"),
        (lambda: E.make_family("digits", background="plaid"), "background"),
        (lambda: E.make_family("digits", noise=2.0), "noise"),
        (lambda: E.make_family("shapes", num_styles=3), "single style"),
        (lambda: E.make_domain(""), "non-empty"),
        (lambda: E.make_family("digits").sample_factors(-1), "n must be"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_register_family():
    def factory(image_size=32, channels=1, seed=0, name="blobs", **variant):
        return E.ProceduralFamily("shapes", image_size, channels, seed, name=name, **variant)

    E.register_family("testblobs", factory, overwrite=True)
    fam = E.make_domain("inverted_moving_testblobs")
    assert fam.inverted and fam.moving and fam.name == "inverted_moving_testblobs"
    assert "moving_testblobs" in E.list_domains()
    with pytest.raises(ValueError, match="already registered"):
        E.register_family("testblobs", factory)
    with pytest.raises(ValueError, match="prefix"):
        E.register_family("moving_things", factory)
