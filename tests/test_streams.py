"""Streams: structure (boundaries, ids, returns), ground truth, determinism, transitions, errors."""

import numpy as np
import pytest
import vase_rl.envs as E
from vase_rl.envs.families import X, Y

SEQ = [("moving_shapes", 3), ("digits", 4), ("moving_shapes", 2), ("inverted_moving_digits", 2)]


def test_stream_structure_and_boundaries():
    stream = E.make_stream(SEQ, batch_size=16, seed=0)
    batches = list(stream)
    assert len(stream) == len(batches) == 11
    assert stream.domain_names == ["moving_shapes", "digits", "inverted_moving_digits"]
    assert stream.boundaries == [3, 7, 9]
    assert [b.domain for b in batches] == [0, 0, 0, 1, 1, 1, 1, 0, 0, 2, 2]  # a return keeps its id
    assert [b.step for b in batches] == list(range(11))
    for b in batches:
        assert isinstance(b, E.StreamBatch)
        assert b[0] is b.images and b.images.shape == (16, 32, 32, 1) and b.images.dtype == np.uint8
        assert b.factors.shape == (16, 7) and b.factors.dtype == np.float32
        assert b.domain_name == stream.domain_names[b.domain]
        assert np.all(b.domain_ids == b.domain)
        assert stream.domain_at(b.step) == b.domain
    # the ground truth matches the domain: shapes have 3 classes, static digits are centred
    assert all(b.factors[:, 0].max() < 3 for b in batches[:3])
    assert all(np.all(b.factors[:, X] == 0.5) and np.all(b.factors[:, Y] == 0.5) for b in batches[3:7])
    assert batches[9].images.mean() > 128  # inverted: mostly white


def test_batches_match_their_factors():
    stream = E.make_stream(SEQ, batch_size=8, seed=3)
    for b in stream:
        fam = stream.families[b.domain_name]
        np.testing.assert_array_equal(fam.render(b.factors), b.images)


def test_steps_per_domain_and_repeats():
    stream = E.make_stream(["moving_shapes", "moving_shapes", ("letters", 2), "moving_shapes"], 4, steps_per_domain=3)
    assert len(stream) == 11
    assert stream.boundaries == [6, 8]  # no change between the first two segments
    assert [s.length for s in stream.segments] == [3, 3, 2, 3]
    assert E.make_stream("digits", 4, steps_per_domain=2).domain_names == ["digits"]


def test_determinism_and_random_access():
    a = list(E.make_stream(SEQ, 8, seed=7))
    b = list(E.make_stream(SEQ, 8, seed=7))
    c = list(E.make_stream(SEQ, 8, seed=8))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.images, y.images)
        np.testing.assert_array_equal(x.factors, y.factors)
    assert not np.array_equal(a[0].images, c[0].images)
    stream = E.make_stream(SEQ, 8, seed=7)
    np.testing.assert_array_equal(stream[5].images, a[5].images)
    np.testing.assert_array_equal(stream[-1].images, a[-1].images)
    np.testing.assert_array_equal(list(stream)[2].images, list(stream)[2].images)  # re-iterable
    with pytest.raises(IndexError):
        stream[11]


def test_family_seed_changes_the_sprites_not_the_sampling():
    a = E.make_stream([("digits", 1)], 16, seed=0, family_seed=0)[0]
    b = E.make_stream([("digits", 1)], 16, seed=0, family_seed=1)[0]
    np.testing.assert_array_equal(a.factors, b.factors)
    assert not np.array_equal(a.images, b.images)


def test_smooth_transitions():
    stream = E.make_stream([("moving_shapes", 10), ("moving_digits", 10)], batch_size=400, seed=0, transition_steps=4)
    assert stream.boundaries == [10]
    fractions = []
    for step in range(10, 16):
        b = stream[step]
        assert b.domain == 1 and b.domain_name == "moving_digits"  # the nominal domain switches at the boundary
        fractions.append(float(np.mean(b.domain_ids == 1)))
        shapes = b.domain_ids == 0
        assert np.all(b.factors[shapes, 0] < 3)
        np.testing.assert_array_equal(stream.families["moving_shapes"].render(b.factors[shapes]), b.images[shapes])
        np.testing.assert_array_equal(stream.families["moving_digits"].render(b.factors[~shapes]), b.images[~shapes])
    expected = [k / 5 for k in range(1, 5)] + [1.0, 1.0]
    np.testing.assert_allclose(fractions, expected, atol=0.08)
    assert np.all(stream[9].domain_ids == 0)


def test_sizes_channels_and_family_objects():
    fam = E.make_family("moving_garments", image_size=64, channels=3)
    stream = E.make_stream([fam, ("moving_digits", 2)], 4, steps_per_domain=2, image_size=64, channels=3)
    b = stream[0]
    assert b.images.shape == (4, 64, 64, 3) and b.domain_name == "moving_garments"
    assert stream.families["moving_garments"] is fam
    with pytest.raises(ValueError, match="renders 32x32x1"):
        E.make_stream([E.make_family("digits")], 4, image_size=64)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(sequence=[], batch_size=4), "sequence is empty"),
        (dict(sequence=None, batch_size=4), "sequence is empty"),
        (dict(sequence=["moving_zebras"], batch_size=4), "unknown sprite family 'zebras'"),
        (dict(sequence=["digits"], batch_size=0), "batch_size"),
        (dict(sequence=["digits"], batch_size=4, image_size=0), "image_size"),
        (dict(sequence=["digits"], batch_size=4, steps_per_domain=0), "steps_per_domain"),
        (dict(sequence=[("digits", 0)], batch_size=4), "positive integer"),
        (dict(sequence=[("digits", 3, 4)], batch_size=4), r"\(name, steps\) pair"),
        (dict(sequence=[42], batch_size=4), "domain name or a SpriteFamily"),
        (dict(sequence=[("digits", 5), ("shapes", 2)], batch_size=4, transition_steps=2), "transition_steps"),
        (dict(sequence=["digits"], batch_size=4, transition_steps=-1), "transition_steps"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        E.make_stream(**kwargs)


def test_repr_mentions_segments():
    text = repr(E.make_stream(SEQ, 4))
    assert "moving_shapes[0:3]" in text and "digits[3:7]" in text
