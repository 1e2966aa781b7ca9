"""Tests for commenv.datasets (fast: tiny files written to tmp_path, embedded digits)."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from commenv import datasets as ds
from commenv.datasets import DATASETS, DatasetSplits, Split, load_dataset

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """No COMMENV_DATA, an empty HOME (so ~/.cache/commenv is empty) for every test."""
    monkeypatch.delenv("COMMENV_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))


# --------------------------------------------------------------------------------------------
# Helpers writing real-format files
# --------------------------------------------------------------------------------------------


def _write(path: Path, data: bytes, gz: bool) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x0000 08 <ndim>, big-endian uint32 dims, data."""
    magic = {1: 2049, 3: 2051}.get(arr.ndim, 0x0800 | arr.ndim)
    header = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def make_idx_dir(directory: Path, n_train: int = 12, n_test: int = 6, gz: bool = False, seed=0):
    """Write tiny MNIST-format files; returns the arrays written."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, arr in arrays.items():
        _write(directory / stem, idx_bytes(arr), gz)
    return arrays


def _cifar_arrays(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n)


def make_cifar_bin(directory: Path, n: int = 4, seed: int = 0) -> dict[str, tuple]:
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for stem in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x, y = _cifar_arrays(rng, n)
        records = np.concatenate([y[:, None].astype(np.uint8), x], axis=1)
        (directory / f"{stem}.bin").write_bytes(records.tobytes())
        out[stem] = (x, y)
    return out


class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes str/bytes as Python-2 ``str`` (BINSTRING), like the real CIFAR-10 batches."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def _save_py2_str(self, obj):
        if isinstance(obj, str):
            obj = obj.encode("latin-1")
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def cifar_pickle(obj: object, protocol: int | str) -> bytes:
    if protocol == "py2":
        buf = io.BytesIO()
        Py2Pickler(buf, protocol=2).dump(obj)
        # numpy 1.x / Python 2 name of the array reconstructor
        return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    return pickle.dumps(obj, protocol=protocol)


def make_cifar_py(directory: Path, n: int = 4, seed: int = 0, protocol: int | str = 2):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for stem in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x, y = _cifar_arrays(rng, n)
        batch = {
            b"batch_label": b"batch " + stem.encode(),
            b"labels": [int(v) for v in y],
            b"data": x,
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        }
        (directory / stem).write_bytes(cifar_pickle(batch, protocol))
        out[stem] = (x, y)
    return out


def _as_uint8(x: torch.Tensor, scale: float = 255.0) -> np.ndarray:
    return torch.round(x * scale).to(torch.uint8).numpy()


def _rows(split: Split, scale: float) -> list[bytes]:
    pix = _as_uint8(split.flat(), scale)
    return [p.tobytes() + bytes([int(c)]) for p, c in zip(pix, split.y.numpy(), strict=True)]


# --------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------


def test_digits_shapes_range_labels():
    d = load_dataset("digits")
    assert isinstance(d, DatasetSplits)
    assert d.name == "digits" and d.num_classes == 10
    assert d.image_shape == (1, 8, 8) and d.num_features == 64
    assert len(d.train) + len(d.val) + len(d.test) == 1797
    assert len(d.test) == pytest.approx(0.2 * 1797, abs=10)
    assert len(d.val) == round((1797 - len(d.test)) / 6)
    for s in (d.train, d.val, d.test):
        assert s.x.dtype == torch.float32 and s.y.dtype == torch.int64
        assert s.x.device.type == "cpu"
        assert s.x.shape[1:] == (1, 8, 8) and s.x.shape[0] == len(s)
        assert float(s.x.min()) >= 0.0 and float(s.x.max()) <= 1.0
        assert set(s.y.tolist()) == set(range(10))  # every class in every split
        flat = s.flat()
        assert flat.shape == (len(s), 64) and flat.data_ptr() == s.x.data_ptr()
    assert float(d.train.x.max()) == 1.0
    # pixels are k/16
    assert torch.equal(d.train.x * 16, torch.round(d.train.x * 16))


def test_digits_cover_all_rows_exactly_once():
    with gzip.open(ds._DIGITS_FILE, "rt") as f:
        table = np.loadtxt(f, delimiter=",").astype(np.uint8)
    expected = sorted(r[:64].tobytes() + bytes([r[64]]) for r in table)
    d = load_dataset("digits", seed=3)
    got = sorted(_rows(d.train, 16) + _rows(d.val, 16) + _rows(d.test, 16))
    assert got == expected


def test_split_indices_disjoint_and_covering():
    y = np.repeat(np.arange(10), 30)
    gen = torch.Generator().manual_seed(0)
    rest, held = ds._stratified_holdout(y, 0.2, gen)
    assert np.intersect1d(rest, held).size == 0
    assert np.array_equal(np.sort(np.concatenate([rest, held])), np.arange(len(y)))
    assert np.array_equal(np.bincount(y[held]), np.full(10, 6))  # stratified
    train, val = ds._val_split(len(rest), 1 / 6, seed=5)
    assert np.intersect1d(train, val).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(rest)))
    assert len(val) == round(len(rest) / 6)


def test_digits_deterministic_bit_for_bit():
    a = load_dataset("digits", seed=7)
    ds._clear_cache()  # recompute from scratch, not just the cached object
    b = load_dataset("digits", seed=7)
    assert a is not b
    for sa, sb in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y)


def test_seed_changes_split():
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=1)
    assert len(a.val) == len(b.val)
    assert not torch.equal(a.val.x, b.val.x)
    assert not torch.equal(a.train.x, b.train.x)
    # the digits test split is fixed (comparable test scores across seeds)
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.test.y, b.test.y)


def test_cache_returns_shared_object():
    a = load_dataset("digits", seed=11)
    b = load_dataset("digits", seed=11)
    assert a is b


def test_val_fraction():
    d = load_dataset("digits", val_fraction=0.5)
    n = len(d.train) + len(d.val)
    assert len(d.val) == round(n * 0.5)
    assert len(load_dataset("digits", val_fraction=0.0).val) == 0
    for bad in (-0.1, 1.0, 2):
        with pytest.raises(ValueError, match="val_fraction"):
            load_dataset("digits", val_fraction=bad)


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError) as err:
        load_dataset("imagenet")
    for name in DATASETS:
        assert name in str(err.value)
    assert DATASETS == ("digits", "fashion-mnist", "mnist", "cifar10", "synthetic")


def test_split_validates_shapes():
    with pytest.raises(ValueError):
        Split(x=torch.zeros(3, 64), y=torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError):
        Split(x=torch.zeros(3, 1, 8, 8), y=torch.zeros(4, dtype=torch.int64))


def test_import_does_not_import_torchvision():
    code = "import sys, commenv.datasets; assert 'torchvision' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --------------------------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST)
# --------------------------------------------------------------------------------------------


def _check_idx_loaded(d: DatasetSplits, arrays: dict[str, np.ndarray]) -> None:
    assert d.image_shape == (1, 28, 28) and d.num_classes == 10
    train_x = arrays["train-images-idx3-ubyte"]
    train_y = arrays["train-labels-idx1-ubyte"]
    assert len(d.train) + len(d.val) == len(train_y)
    assert len(d.val) == round(len(train_y) / 6)
    np.testing.assert_array_equal(_as_uint8(d.test.x)[:, 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(d.test.y.numpy(), arrays["t10k-labels-idx1-ubyte"])
    expected = sorted(x.tobytes() + bytes([y]) for x, y in zip(train_x, train_y, strict=True))
    assert sorted(_rows(d.train, 255) + _rows(d.val, 255)) == expected


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_round_trip_root(tmp_path, gz, name):
    arrays = make_idx_dir(tmp_path / "data", gz=gz)
    d = load_dataset(name, root=tmp_path / "data")
    assert d.name == name
    _check_idx_loaded(d, arrays)


def test_idx_root_subdir_and_torchvision_layout(tmp_path):
    arrays = make_idx_dir(tmp_path / "a" / "mnist")
    _check_idx_loaded(load_dataset("mnist", root=str(tmp_path / "a")), arrays)
    arrays = make_idx_dir(tmp_path / "b" / "FashionMNIST" / "raw", gz=True)
    _check_idx_loaded(load_dataset("fashion-mnist", root=tmp_path / "b"), arrays)


@pytest.mark.parametrize("sub", [True, False])
def test_idx_via_commenv_data(tmp_path, monkeypatch, sub):
    target = tmp_path / "mnist" if sub else tmp_path
    arrays = make_idx_dir(target, gz=True, seed=4)
    monkeypatch.setenv("COMMENV_DATA", str(tmp_path))
    _check_idx_loaded(load_dataset("mnist"), arrays)


def test_idx_seed_determinism(tmp_path):
    make_idx_dir(tmp_path, n_train=60)
    a, b = load_dataset("mnist", root=tmp_path), load_dataset("mnist", root=tmp_path, seed=1)
    ds._clear_cache()
    a2 = load_dataset("mnist", root=tmp_path)
    assert torch.equal(a.val.x, a2.val.x) and torch.equal(a.train.y, a2.train.y)
    assert not torch.equal(a.val.x, b.val.x)


@pytest.mark.parametrize(
    "corrupt",
    ["truncated", "trailing", "bad_magic", "bad_dtype", "bad_ndim", "tiny", "bad_gzip", "count"],
)
def test_corrupt_idx_raises_value_error(tmp_path, corrupt):
    make_idx_dir(tmp_path, gz=corrupt == "bad_gzip")
    stem = "train-images-idx3-ubyte"
    path = tmp_path / stem
    good = idx_bytes(np.zeros((12, 28, 28), np.uint8))
    if corrupt == "truncated":
        path.write_bytes(good[:-10])
    elif corrupt == "trailing":
        path.write_bytes(good + b"\0")
    elif corrupt == "bad_magic":
        path.write_bytes(b"\x12\x34" + good[2:])
    elif corrupt == "bad_dtype":
        path.write_bytes(good[:2] + b"\x0d" + good[3:])
    elif corrupt == "bad_ndim":
        path.write_bytes(idx_bytes(np.zeros((12, 784), np.uint8)))
    elif corrupt == "tiny":
        path.write_bytes(b"\0\0")
    elif corrupt == "count":
        path.write_bytes(idx_bytes(np.zeros((11, 28, 28), np.uint8)))
    elif corrupt == "bad_gzip":
        path = tmp_path / f"{stem}.gz"
        path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match=stem):
        load_dataset("mnist", root=tmp_path)


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_parse_idx_round_trip_property(shape, seed):
    arr = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    out = ds._parse_idx(idx_bytes(arr), len(shape), "mem")
    assert out.shape == tuple(shape)
    np.testing.assert_array_equal(out, arr)
    if arr.size:
        with pytest.raises(ValueError, match="mem"):
            ds._parse_idx(idx_bytes(arr)[:-1], len(shape), "mem")


# --------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------


def _check_cifar(d: DatasetSplits, batches: dict[str, tuple]) -> None:
    assert d.name == "cifar10" and d.image_shape == (3, 32, 32) and d.num_classes == 10
    assert d.num_features == 3072
    x_test, y_test = batches["test_batch"]
    np.testing.assert_array_equal(_as_uint8(d.test.flat()), x_test)
    np.testing.assert_array_equal(d.test.y.numpy(), y_test)
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    expected = sorted(
        x.tobytes() + bytes([y]) for xs, ys in train for x, y in zip(xs, ys, strict=True)
    )
    assert sorted(_rows(d.train, 255) + _rows(d.val, 255)) == expected
    assert len(d.val) == round(len(expected) / 6)
    # channel-first layout: first 1024 bytes of a record are the red plane
    np.testing.assert_array_equal(_as_uint8(d.test.x[0, 0]).ravel(), x_test[0, :1024])


@pytest.mark.parametrize("layout", ["root", "subdir", "env"])
def test_cifar_binary_round_trip(tmp_path, monkeypatch, layout):
    if layout == "root":
        batches = make_cifar_bin(tmp_path)
        d = load_dataset("cifar10", root=tmp_path)
    elif layout == "subdir":
        batches = make_cifar_bin(tmp_path / "cifar-10-batches-bin")
        d = load_dataset("cifar10", root=tmp_path)
    else:
        batches = make_cifar_bin(tmp_path / "cifar10" / "cifar-10-batches-bin")
        monkeypatch.setenv("COMMENV_DATA", str(tmp_path))
        d = load_dataset("cifar10")
    _check_cifar(d, batches)


def test_cifar_binary_corrupt(tmp_path):
    make_cifar_bin(tmp_path)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="data_batch_3.bin"):
        load_dataset("cifar10", root=tmp_path)


@pytest.mark.parametrize("protocol", [2, "py2", 4, 5])
def test_cifar_python_round_trip(tmp_path, protocol):
    batches = make_cifar_py(tmp_path / "cifar-10-batches-py", protocol=protocol)
    _check_cifar(load_dataset("cifar10", root=tmp_path), batches)


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_refused(tmp_path):
    marker = tmp_path / "pwned"
    directory = tmp_path / "cifar-10-batches-py"
    make_cifar_py(directory)
    payload = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": _Evil(marker)}
    (directory / "data_batch_2").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="system"):
        load_dataset("cifar10", root=tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"cbuiltins\neval\n(S'1+1'\ntR.",
        b"cos\nsystem\n(S'true'\ntR.",
        b"csubprocess\nPopen\n(S'true'\ntR.",
        b"cnumpy\nload\n(S'x'\ntR.",
        pickle.dumps(bytes(3), protocol=2).replace(b"latin1", b"base64"),
    ],
)
def test_restricted_unpickler_refuses_globals(payload):
    with pytest.raises(pickle.UnpicklingError):
        ds._restricted_load(payload)


def test_cifar_python_wrong_content(tmp_path):
    directory = tmp_path / "cifar-10-batches-py"
    make_cifar_py(directory)
    (directory / "test_batch").write_bytes(pickle.dumps({b"data": [1, 2], b"labels": []}))
    with pytest.raises(ValueError, match="test_batch"):
        load_dataset("cifar10", root=tmp_path)


# --------------------------------------------------------------------------------------------
# Missing files and download
# --------------------------------------------------------------------------------------------


@pytest.fixture
def no_system_dirs(monkeypatch, tmp_path):
    monkeypatch.setattr(ds, "_SYSTEM_DIRS", {"fashion-mnist": (tmp_path / "no-such-dir",)})


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_missing_files_message(tmp_path, monkeypatch, no_system_dirs, name):
    monkeypatch.setenv("COMMENV_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(name)
    msg = str(err.value)
    assert str(tmp_path / "env") in msg
    assert "root=" in msg and "COMMENV_DATA" in msg and "download=True" in msg
    assert "torchvision" in msg
    if name == "fashion-mnist":
        assert "apt-get install dataset-fashion-mnist" in msg
        assert str(tmp_path / "no-such-dir") in msg
    # a root the user names is the only place searched: the message lists it alone
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(name, root=tmp_path / "mine")
    msg = str(err.value)
    assert str(tmp_path / "mine") in msg and str(tmp_path / "env") not in msg
    assert str(tmp_path / "no-such-dir") not in msg


def test_a_named_root_without_the_files_never_falls_back(tmp_path, monkeypatch, no_system_dirs):
    make_idx_dir(tmp_path / "env" / "mnist")
    monkeypatch.setenv("COMMENV_DATA", str(tmp_path / "env"))
    assert len(load_dataset("mnist").train.y) > 0  # found through COMMENV_DATA
    (tmp_path / "mine").mkdir()
    with pytest.raises(FileNotFoundError, match="mine"):
        load_dataset("mnist", root=tmp_path / "mine")


def test_incomplete_idx_dir_is_missing(tmp_path, no_system_dirs):
    make_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError):
        load_dataset("mnist", root=tmp_path)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_download_without_torchvision(tmp_path, monkeypatch, name):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(RuntimeError, match=r"commenv\[vision\]") as err:
        load_dataset(name, root=tmp_path, download=True)
    assert "COMMENV_DATA" in str(err.value)


def test_download_with_broken_torchvision(tmp_path, monkeypatch, no_system_dirs):
    """The CUDA wheel next to a CPU torch fails with OSError, not ImportError."""

    class BrokenFinder:
        @staticmethod
        def find_spec(fullname, path=None, target=None):
            if fullname.split(".")[0] == "torchvision":
                raise OSError("libcudart.so.12: cannot open shared object file")
            return None

    for mod in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(sys, "meta_path", [BrokenFinder(), *sys.meta_path])
    with pytest.raises(RuntimeError, match="--no-deps keeps that torch"):
        load_dataset("fashion-mnist", root=tmp_path, download=True)


def test_download_not_needed_when_files_present(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    arrays = make_idx_dir(tmp_path)
    _check_idx_loaded(load_dataset("mnist", root=tmp_path, download=True), arrays)


# --------------------------------------------------------------------------------------------
# synthetic
# --------------------------------------------------------------------------------------------


def test_synthetic_shapes_and_determinism():
    d = load_dataset(
        "synthetic", seed=3, synthetic_size=500, synthetic_shape=(3, 4, 5), synthetic_classes=4
    )
    assert d.image_shape == (3, 4, 5) and d.num_features == 60 and d.num_classes == 4
    assert len(d.train) + len(d.val) + len(d.test) == 500
    assert len(d.test) == 75 and len(d.train) > len(d.val) > 50
    for s in (d.train, d.val, d.test):
        assert s.x.dtype == torch.float32 and s.y.dtype == torch.int64
        assert float(s.x.min()) >= 0.0 and float(s.x.max()) <= 1.0
        assert set(s.y.tolist()) <= set(range(4))
    ds._clear_cache()
    again = load_dataset(
        "synthetic", seed=3, synthetic_size=500, synthetic_shape=(3, 4, 5), synthetic_classes=4
    )
    assert torch.equal(d.train.x, again.train.x) and torch.equal(d.test.y, again.test.y)
    other = load_dataset(
        "synthetic", seed=4, synthetic_size=500, synthetic_shape=(3, 4, 5), synthetic_classes=4
    )
    assert not torch.equal(d.train.x, other.train.x)


def test_synthetic_bad_args():
    with pytest.raises(ValueError):
        load_dataset("synthetic", synthetic_shape=(8, 8))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        load_dataset("synthetic", synthetic_classes=1)


def test_synthetic_is_learnable():
    d = load_dataset("synthetic", seed=0)
    assert d.image_shape == (1, 8, 8) and len(d.train) + len(d.val) + len(d.test) == 2000

    def design(s: Split) -> torch.Tensor:
        return torch.cat([s.flat().double(), torch.ones(len(s), 1, dtype=torch.float64)], 1)

    targets = torch.nn.functional.one_hot(d.train.y, d.num_classes).double()
    w = torch.linalg.lstsq(design(d.train), targets).solution
    acc = (design(d.test) @ w).argmax(1).eq(d.test.y).double().mean().item()
    assert acc > 0.5, acc  # chance is 0.1


# --------------------------------------------------------------------------------------------
# Real Fashion-MNIST (Debian package dataset-fashion-mnist)
# --------------------------------------------------------------------------------------------


def test_real_fashion_mnist():
    if not all(ds._find_file(FMNIST_DIR, s) for s in ds._IDX_FILES.values()):
        pytest.skip(f"{FMNIST_DIR} not present (apt-get install dataset-fashion-mnist)")
    ds._clear_cache()
    start = time.perf_counter()
    d = load_dataset("fashion-mnist")
    elapsed = time.perf_counter() - start
    try:
        assert (len(d.train), len(d.val), len(d.test)) == (50_000, 10_000, 10_000)
        assert d.image_shape == (1, 28, 28) and d.num_classes == 10
        assert torch.equal(d.test.y.bincount(), torch.full((10,), 1000))
        assert float(d.train.x.min()) == 0.0 and float(d.train.x.max()) == 1.0
        assert elapsed < 10.0, elapsed  # typically ~0.6 s; generous for loaded CI machines
    finally:
        ds._clear_cache()


@pytest.mark.parametrize("use_root", [True, False])
def test_download_with_fake_torchvision(tmp_path, monkeypatch, no_system_dirs, use_root):
    """With a working torchvision, files land in root (default ~/.cache/commenv) and are read."""
    import types

    written: dict[str, np.ndarray] = {}

    class FakeFashionMNIST:
        def __init__(self, root: str, train: bool, download: bool):
            assert download
            if not written:
                written.update(make_idx_dir(Path(root) / "FashionMNIST" / "raw", gz=True))

    fake = types.ModuleType("torchvision")
    fake_datasets = types.ModuleType("torchvision.datasets")
    fake_datasets.FashionMNIST = FakeFashionMNIST  # type: ignore[attr-defined]
    fake.datasets = fake_datasets  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake_datasets)
    root = tmp_path / "dl" if use_root else None
    d = load_dataset("fashion-mnist", root=root, download=True)
    _check_idx_loaded(d, written)
    expected_root = root if use_root else Path(os.environ["HOME"]) / ".cache" / "commenv"
    assert (expected_root / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").is_file()
