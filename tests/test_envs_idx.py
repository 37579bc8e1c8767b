"""Real data from local IDX files: reading, errors that name the missing file, the family/stream/env API."""

import gzip
import warnings

import gymnasium as gym
import numpy as np
import pytest
import vase_rl.envs as E
from gymnasium.utils.env_checker import check_env


def _tiny_mnist(n=40, size=28, seed=0):
    """Tiny fake MNIST: class k is a bright bar at row 2 + 2k, so labels are recoverable from pixels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 20, size=(n, size, size)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 + 2 * k : 4 + 2 * k, 4:24] = 255
    return images, labels.astype(np.uint8)


@pytest.fixture()
def mnist_dir(tmp_path):
    images, labels = _tiny_mnist()
    E.save_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    E.save_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    E.save_idx(tmp_path / "t10k-images-idx3-ubyte", images[:10])
    E.save_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:10])
    return tmp_path


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    arr = (np.arange(2 * 3 * 4).reshape(2, 3, 4) * 3).astype(dtype)
    path = E.save_idx(tmp_path / f"a-idx3-ubyte{suffix}", arr)
    back = E.load_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_idx_header_is_standard(tmp_path):
    path = E.save_idx(tmp_path / "x.idx", np.zeros((5, 2, 3), np.uint8))
    raw = path.read_bytes()
    assert raw[:4] == bytes([0, 0, 0x08, 3])
    assert int.from_bytes(raw[4:8], "big") == 5 and int.from_bytes(raw[8:12], "big") == 2


def test_load_idx_dataset(mnist_dir):
    data = E.load_idx_dataset(mnist_dir / "train-images-idx3-ubyte.gz", mnist_dir / "train-labels-idx1-ubyte.gz")
    assert data.images.shape == (40, 28, 28) and data.images.dtype == np.uint8
    assert data.labels.dtype == np.int64 and list(data.labels[:3]) == [0, 1, 2]
    images_only = E.load_idx_dataset(mnist_dir / "t10k-images-idx3-ubyte")
    assert images_only.labels is None and images_only.images.shape == (10, 28, 28)


def test_missing_and_bad_files_raise_clear_errors(mnist_dir, tmp_path):
    missing = tmp_path / "nope" / "train-images-idx3-ubyte.gz"
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz") as err:
        E.load_idx_dataset(missing)
    assert "never downloads" in str(err.value)
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not an IDX file"):
        E.load_idx(tmp_path / "junk")
    with gzip.open(tmp_path / "short.gz", "wb") as fh:
        fh.write(bytes([0, 0, 8, 1]) + (100).to_bytes(4, "big") + b"\x00" * 10)
    with pytest.raises(ValueError, match="truncated"):
        E.load_idx(tmp_path / "short.gz")
    with pytest.raises(ValueError, match="labels"):
        E.load_idx_dataset(mnist_dir / "train-images-idx3-ubyte.gz", mnist_dir / "t10k-labels-idx1-ubyte")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        E.find_idx_files(empty)
    (empty / "train-images-idx3-ubyte").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        E.find_idx_files(empty)


def test_find_idx_files(mnist_dir):
    imgs, labels = E.find_idx_files(mnist_dir, "train")
    assert imgs.name == "train-images-idx3-ubyte.gz" and labels.name == "train-labels-idx1-ubyte.gz"
    imgs, labels = E.find_idx_files(mnist_dir, "test")
    assert imgs.name == "t10k-images-idx3-ubyte"


def test_idx_family_static_and_moving(mnist_dir):
    fam = E.IDXFamily.from_files(
        mnist_dir / "train-images-idx3-ubyte.gz", mnist_dir / "train-labels-idx1-ubyte.gz", image_size=32, name="tiny"
    )
    assert fam.num_classes == 10 and fam.factor_names[0] == "class"
    img, f = fam.sample(200, np.random.default_rng(0))
    assert img.shape == (200, 32, 32, 1) and img.dtype == np.uint8
    labels = fam.labels(f)
    np.testing.assert_array_equal(labels, fam.labels_array[f[:, 1].astype(int)])  # style = example index
    # the bar of class k sits at the row 2 + 2k (scaled 28 -> 32): the label matches the pixels
    rows = img[..., 0].mean(axis=2).argmax(axis=1)
    assert np.corrcoef(rows, labels)[0, 1] > 0.99
    moving = E.IDXFamily.from_files(
        mnist_dir / "train-images-idx3-ubyte.gz",
        mnist_dir / "train-labels-idx1-ubyte.gz",
        image_size=32,
        moving=True,
        inverted=True,
    )
    img, f = moving.sample(100, 1)
    assert f[:, 4].min() < 0.2 and f[:, 4].max() > 0.8
    plain = E.IDXFamily.from_files(mnist_dir / "train-images-idx3-ubyte.gz", image_size=32, moving=True)
    np.testing.assert_array_equal(img, 255 - plain.render(f))
    assert plain.num_classes == 1  # no labels: a single class


def test_registered_idx_domain_in_streams_and_envs(mnist_dir):
    E.register_idx_domain("tinymnist", mnist_dir, overwrite=True)
    assert "moving_tinymnist" in E.list_domains()
    stream = E.make_stream([("moving_garments", 2), ("tinymnist", 3), ("moving_tinymnist", 2)], batch_size=8)
    batches = list(stream)
    assert stream.boundaries == [2, 5]
    assert [b.domain_name for b in batches] == ["moving_garments"] * 2 + ["tinymnist"] * 3 + ["moving_tinymnist"] * 2
    assert batches[3].images.shape == (8, 32, 32, 1)
    env = gym.make("vase_rl/DomainSequence-v0", domains=["moving_tinymnist", "moving_digits"], switch_every=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped)
    _, info = env.reset(seed=0)
    assert info["domain_name"] == "moving_tinymnist"
    oracle = E.evaluate_policy_returns(env, "oracle", episodes=10)
    assert oracle["success_rate"] == 1.0
    with pytest.raises(ValueError, match="moving_tinymnist"):
        E.SpriteTaskEnv(domain="tinymnist")  # full-frame images cannot move


def test_bad_idx_arrays():
    with pytest.raises(ValueError, match="uint8"):
        E.IDXFamily(np.zeros((3, 5, 5), np.float32))
    with pytest.raises(ValueError, match="labels"):
        E.IDXFamily(np.zeros((3, 5, 5), np.uint8), labels=np.array([0, 1]))
    with pytest.raises(ValueError, match="sprite_size"):
        E.IDXFamily(np.zeros((3, 5, 5), np.uint8), sprite_size=1.5)
