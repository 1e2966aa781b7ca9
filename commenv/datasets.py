"""Image classification datasets for the commenv environments.

Every dataset is returned as a :class:`DatasetSplits` with ``train``/``val``/``test``
:class:`Split` objects holding ``float32`` images in ``[0, 1]`` with shape ``(n, C, H, W)``
and ``int64`` labels, all on the CPU.

Datasets (see :data:`DATASETS`):

* ``digits`` -- scikit-learn's 8x8 handwritten digits (1,797 real images), embedded in the
  package, so it always works offline. It has no official test split: a fixed stratified 20 %
  test split is used (the same for every ``seed``, so test scores are comparable across seeds).
* ``fashion-mnist`` / ``mnist`` -- the IDX files (raw or ``.gz``), searched for in ``root=``
  only when it is given (never anywhere else), otherwise in ``$COMMENV_DATA/<name>``,
  ``$COMMENV_DATA``, ``~/.cache/commenv`` and, for Fashion-MNIST, Debian's
  ``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``).
  The torchvision layout ``<dir>/FashionMNIST/raw`` / ``<dir>/MNIST/raw`` is accepted too.
* ``cifar10`` -- the "CIFAR-10 binary version" (``cifar-10-batches-bin``) or the python version
  (``cifar-10-batches-py``); the pickles are read with a restricted unpickler that can only
  rebuild numpy arrays, never arbitrary objects.
* ``synthetic`` -- noisy class prototypes generated from ``seed``; any size, for fast tests.

``download=True`` fetches the file-based datasets with torchvision, which is imported lazily
(PyPI's CUDA wheels of torchvision fail to import next to a CPU-only torch).

Loaded data is cached in memory (:func:`functools.lru_cache`), so building many environments does
not re-read or re-split the files. The returned tensors are therefore shared between callers:
**do not modify them in place** (clone first).
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from commenv.core import check_data_root, generator_seed

__all__ = ["DATASETS", "DatasetSplits", "Split", "load_dataset"]

DATASETS: tuple[str, ...] = ("digits", "fashion-mnist", "mnist", "cifar10", "synthetic")

#: Default validation fraction of the official training set (10,000 of 60,000).
DEFAULT_VAL_FRACTION: float = 1.0 / 6.0
#: Fraction of ``digits`` held out as its test split.
DIGITS_TEST_FRACTION: float = 0.2
#: Fraction of ``synthetic`` held out as its test split.
SYNTHETIC_TEST_FRACTION: float = 0.15
#: Seed of the fixed ``digits`` test split (independent of ``load_dataset(seed=...)``).
_DIGITS_TEST_SEED = 1234
#: Per-pixel noise standard deviation of the ``synthetic`` dataset (near-Gaussian noise).
_SYNTHETIC_NOISE = 0.35

_DIGITS_FILE = Path(__file__).with_name("data") / "digits.csv.gz"
_SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}
_TORCHVISION_DIR = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_CIFAR_BIN_DIR = "cifar-10-batches-bin"
_CIFAR_PY_DIR = "cifar-10-batches-py"
_CIFAR_RECORD = 1 + 3 * 32 * 32


# --------------------------------------------------------------------------------------------
# Public containers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """One split of a dataset.

    ``x`` is ``(n, C, H, W)`` float32 in ``[0, 1]``, ``y`` is ``(n,)`` int64; both on the CPU.
    The tensors may be shared with other callers (cache): do not modify them in place.
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise ValueError(f"Split.x must be (n, C, H, W), got shape {tuple(self.x.shape)}")
        if self.y.ndim != 1 or self.y.shape[0] != self.x.shape[0]:
            raise ValueError(
                f"Split.y must be (n,) with n={self.x.shape[0]}, got shape {tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        """Number of samples."""
        return int(self.y.shape[0])

    def flat(self) -> torch.Tensor:
        """The images as an ``(n, C*H*W)`` view of ``x``."""
        return self.x.reshape(self.x.shape[0], -1)


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset split into ``train``, ``val`` and ``test``."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image."""
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_features(self) -> int:
        """Number of pixels ``C*H*W`` of one image."""
        c, h, w = self.image_shape
        return c * h * w


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def load_dataset(
    name: str = "digits",
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    val_fraction: float | None = None,
    download: bool = False,
    synthetic_size: int = 2000,
    synthetic_shape: tuple[int, int, int] = (1, 8, 8),
    synthetic_classes: int = 10,
) -> DatasetSplits:
    """Load dataset ``name`` (one of :data:`DATASETS`) split into train / val / test.

    Args:
        name: dataset name, one of :data:`DATASETS`.
        root: directory holding the files of a file-based dataset (searched first); also where
            ``download=True`` puts them (default ``~/.cache/commenv``).
        seed: seed of the train/val split (and of the whole ``synthetic`` dataset). The same
            seed gives bit-identical splits.
        val_fraction: fraction of the (official) training set used for validation; default
            1/6 (10,000 of Fashion-MNIST's 60,000).
        download: download missing ``fashion-mnist``/``mnist``/``cifar10`` files with
            torchvision (needs ``commenv[vision]`` with a torchvision build matching torch).
        synthetic_size: number of ``synthetic`` samples (all splits together).
        synthetic_shape: ``(C, H, W)`` of the ``synthetic`` images.
        synthetic_classes: number of ``synthetic`` classes.

    Returns:
        The splits. Their tensors are cached and shared: do not modify them in place.

    Raises:
        ValueError: unknown ``name``, bad arguments, or a corrupt data file.
        FileNotFoundError: the files of a file-based dataset were not found.
        RuntimeError: ``download=True`` but torchvision is unusable or the download failed.
    """
    _check_name(name)
    vf = DEFAULT_VAL_FRACTION if val_fraction is None else float(val_fraction)
    if not 0.0 <= vf < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    seed = int(seed)

    if name == "synthetic":
        dims = tuple(int(s) for s in synthetic_shape)
        if len(dims) != 3 or min(dims) < 1:
            raise ValueError(f"synthetic_shape must be 3 positive ints (C, H, W), got {dims}")
        if int(synthetic_classes) < 2:
            raise ValueError("synthetic_classes must be >= 2")
        if int(synthetic_size) < 3:
            raise ValueError("synthetic_size must be >= 3")
        shape = (dims[0], dims[1], dims[2])
        return _synthetic_splits(seed, vf, int(synthetic_size), shape, int(synthetic_classes))
    if name == "digits":
        return _file_splits(name, str(_DIGITS_FILE.resolve()), seed, vf)

    directory = _locate(name, root)
    if directory is None and download:
        target = Path(root).expanduser() if root is not None else _default_root()
        _download(name, target)
        directory = _locate(name, root if root is not None else target)
    if directory is None:
        raise FileNotFoundError(_missing_message(name, root))
    return _file_splits(name, str(directory.resolve()), seed, vf)


# --------------------------------------------------------------------------------------------
# Splitting and caching
# --------------------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid choices: {list(DATASETS)}")


def check_available(name: str, root: str | os.PathLike[str] | None = None) -> None:
    """``ValueError`` unless ``name`` is a known data set that the games can load from
    ``root`` here (:func:`commenv.core.check_data_root`, then :func:`load_dataset`'s search),
    checked without reading it: a benchmark refuses a missing data set before its first run,
    not at the run that needs it."""
    _check_name(name)
    root = check_data_root(root)
    if name not in ("digits", "synthetic") and _locate(name, root) is None:
        raise ValueError(_missing_message(name, root))


@functools.lru_cache(maxsize=4)
def _file_splits(name: str, path: str, seed: int, val_fraction: float) -> DatasetSplits:
    """Split the (cached) arrays of a file-based dataset; cached per (name, path, seed, vf)."""
    x_train, y_train, x_test, y_test = _read_arrays(name, path)
    if name == "digits":
        # No official test split: fixed stratified hold-out, shared by every seed.
        gen = torch.Generator().manual_seed(_DIGITS_TEST_SEED)
        rest, test = _stratified_holdout(y_train, DIGITS_TEST_FRACTION, gen)
        x_test, y_test = x_train[test], y_train[test]
        x_train, y_train = x_train[rest], y_train[rest]
    train_idx, val_idx = _val_split(len(y_train), val_fraction, seed)
    scale = 16.0 if name == "digits" else 255.0
    return DatasetSplits(
        name=name,
        train=_make_split(x_train, y_train, train_idx, scale),
        val=_make_split(x_train, y_train, val_idx, scale),
        test=_make_split(x_test, y_test, np.arange(len(y_test)), scale),
        num_classes=10,
    )


def _val_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random (train, val) index split of ``range(n)``; both sorted."""
    gen = torch.Generator().manual_seed(generator_seed(seed))
    perm = torch.randperm(n, generator=gen).numpy()
    n_val = int(round(n * val_fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _stratified_holdout(
    y: np.ndarray, fraction: float, gen: torch.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of every class (rounded); returns sorted (rest, held-out) indices."""
    held = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        perm = idx[torch.randperm(len(idx), generator=gen).numpy()]
        held.append(perm[: int(round(len(idx) * fraction))])
    held_idx = np.sort(np.concatenate(held))
    mask = np.ones(len(y), dtype=bool)
    mask[held_idx] = False
    return np.flatnonzero(mask), held_idx


def _make_split(x: np.ndarray, y: np.ndarray, idx: np.ndarray, scale: float) -> Split:
    """Gather ``idx`` from integer images ``x`` (n, C, H, W) into a float32 Split (``x/scale``)."""
    xs = torch.from_numpy(np.ascontiguousarray(x[idx]))
    ys = torch.from_numpy(y[idx].astype(np.int64))
    return Split(x=xs.to(torch.float32).div_(scale), y=ys)


def _synthetic_data(
    seed: int, size: int, shape: tuple[int, int, int], classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(generator_seed(seed))
    prototypes = torch.rand((classes, *shape), generator=gen)
    y = torch.arange(size) % classes
    y = y[torch.randperm(size, generator=gen)]
    # A centred sum of 4 uniforms (Irwin-Hall, variance 1/3) rescaled to the noise's std: close
    # to Gaussian, and the same bits on every CPU, which torch.randn's vectorised Box-Muller
    # (log, sin, cos) is not (AVX2 and AVX-512 kernels round their last bits differently).
    u = torch.rand((4, size, *shape), generator=gen)
    noise = u[0].add_(u[1]).add_(u[2]).add_(u[3]).sub_(2.0).mul_(_SYNTHETIC_NOISE * 3.0**0.5)
    x = (prototypes[y] + noise).clamp_(0.0, 1.0)
    return x, y.to(torch.int64)


@functools.lru_cache(maxsize=8)
def _synthetic_splits(
    seed: int, val_fraction: float, size: int, shape: tuple[int, int, int], classes: int
) -> DatasetSplits:
    x, y = _synthetic_data(seed, size, shape, classes)
    gen = torch.Generator().manual_seed(generator_seed(seed + 1))
    perm = torch.randperm(size, generator=gen)
    n_test = max(1, int(round(size * SYNTHETIC_TEST_FRACTION)))
    test_idx, rest = perm[:n_test].sort().values, perm[n_test:].sort().values
    train_pos, val_pos = _val_split(len(rest), val_fraction, seed + 2)
    train_idx, val_idx = rest[torch.from_numpy(train_pos)], rest[torch.from_numpy(val_pos)]
    return DatasetSplits(
        name="synthetic",
        train=Split(x=x[train_idx], y=y[train_idx]),
        val=Split(x=x[val_idx], y=y[val_idx]),
        test=Split(x=x[test_idx], y=y[test_idx]),
        num_classes=classes,
    )


@functools.lru_cache(maxsize=4)
def _read_arrays(name: str, path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read (x_train, y_train, x_test, y_test) as read-only uint8 (n, C, H, W) / label arrays.

    Cached on (name, resolved path). ``digits`` returns all 1,797 images as "train" and an empty
    "test" (its split is made by the caller).
    """
    if name == "digits":
        arrays = _read_digits(Path(path))
    elif name in ("fashion-mnist", "mnist"):
        arrays = _read_idx_dir(Path(path))
    elif name == "cifar10":
        arrays = _read_cifar_dir(Path(path))
    else:  # pragma: no cover - guarded by load_dataset
        raise ValueError(f"not a file-based dataset: {name!r}")
    for a in arrays:
        a.setflags(write=False)
    return arrays


# --------------------------------------------------------------------------------------------
# Locating files
# --------------------------------------------------------------------------------------------


def _default_root() -> Path:
    """Default download directory, ``~/.cache/commenv``."""
    return Path.home() / ".cache" / "commenv"


def _candidate_dirs(name: str, root: str | os.PathLike[str] | None) -> list[Path]:
    """Directories searched for ``name``, in order."""
    bases: list[Path] = []
    explicit = root is not None  # a root the user named is the only place looked in
    if explicit:
        r = Path(root).expanduser()
        bases += [r, r / name]
    env = os.environ.get("COMMENV_DATA")
    if env and not explicit:
        e = Path(env).expanduser()
        bases += [e / name, e]
    if not explicit:
        d = _default_root()
        bases += [d / name, d]
    dirs: list[Path] = []
    for b in bases:
        if name in _TORCHVISION_DIR:
            dirs += [b, b / _TORCHVISION_DIR[name] / "raw"]
        else:  # cifar10
            dirs += [b / _CIFAR_BIN_DIR, b / _CIFAR_PY_DIR, b]
    if not explicit:
        dirs += list(_SYSTEM_DIRS.get(name, ()))
    unique: list[Path] = []
    for p in dirs:
        if p not in unique:
            unique.append(p)
    return unique


def _find_file(directory: Path, stem: str) -> Path | None:
    """``directory/stem`` raw or gzipped (also the ``train-images.idx3-ubyte`` spelling)."""
    alternatives = (stem, stem.replace("-idx", ".idx"))
    for s in alternatives:
        for candidate in (directory / s, directory / f"{s}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _has_files(name: str, directory: Path) -> bool:
    if not directory.is_dir():
        return False
    if name in _TORCHVISION_DIR:
        return all(_find_file(directory, stem) is not None for stem in _IDX_FILES.values())
    return _cifar_format(directory) is not None


def _locate(name: str, root: str | os.PathLike[str] | None) -> Path | None:
    for directory in _candidate_dirs(name, root):
        if _has_files(name, directory):
            return directory
    return None


def _missing_message(name: str, root: str | os.PathLike[str] | None) -> str:
    searched = "\n".join(f"  - {d}" for d in _candidate_dirs(name, root))
    if name in _TORCHVISION_DIR:
        files = ", ".join(f"{s}[.gz]" for s in _IDX_FILES.values())
    else:
        files = (
            f"{_CIFAR_BIN_DIR}/data_batch_1.bin..data_batch_5.bin + test_batch.bin, or "
            f"{_CIFAR_PY_DIR}/data_batch_1..data_batch_5 + test_batch"
        )
    how = [
        "pass root=<dir> to load_dataset (or the environment) with the files in it",
        f"set the COMMENV_DATA environment variable to a directory holding them (or {name}/)",
    ]
    if name == "fashion-mnist":
        how.append("on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist")
    how.append(f"use download=True with torchvision installed: {vision_hint()}")
    return (
        f"{name} data files not found ({files}). Searched:\n{searched}\nTo get the data:\n"
        + "\n".join(f"  * {h}" for h in how)
    )


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    """Read a file, transparently gunzipping ``.gz`` files; ValueError if the gzip is corrupt."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"corrupt or truncated gzip file {path}: {exc}") from exc
    return data


def _parse_idx(data: bytes, expected_ndim: int, source: str | os.PathLike[str]) -> np.ndarray:
    """Parse an IDX file (unsigned-byte data only) into an array of its stated dimensions."""
    if len(data) < 4:
        raise ValueError(f"{source}: not an IDX file (only {len(data)} bytes)")
    zero, dtype, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0:
        raise ValueError(f"{source}: bad IDX magic number {data[:4].hex()} (not an IDX file)")
    if dtype != 0x08:
        raise ValueError(f"{source}: IDX data type 0x{dtype:02x} unsupported (need 0x08 ubyte)")
    if ndim != expected_ndim:
        raise ValueError(f"{source}: IDX file has {ndim} dimensions, expected {expected_ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{source}: truncated IDX header")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != size:
        state = "truncated" if len(data) - header < size else "has trailing bytes"
        raise ValueError(
            f"{source}: IDX file {state}: dims {dims} need {size} data bytes, "
            f"found {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, count=size, offset=header).reshape(dims)


def _read_idx_dir(directory: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    out = []
    for split in ("train", "test"):
        img_path = _find_file(directory, _IDX_FILES[f"{split}_images"])
        lbl_path = _find_file(directory, _IDX_FILES[f"{split}_labels"])
        if img_path is None or lbl_path is None:
            raise FileNotFoundError(f"IDX {split} files missing in {directory}")
        images = _parse_idx(_read_bytes(img_path), 3, img_path)
        labels = _parse_idx(_read_bytes(lbl_path), 1, lbl_path)
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{img_path} has {images.shape[0]} images but {lbl_path} has "
                f"{labels.shape[0]} labels"
            )
        if labels.size and labels.max() > 9:
            raise ValueError(f"{lbl_path}: label {labels.max()} out of range 0..9")
        out += [images[:, None, :, :], labels]
    return out[0], out[1], out[2], out[3]


def _read_digits(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    if table.shape[1] != 65 or table.min() < 0 or table[:, :64].max() > 16:
        raise ValueError(f"{path}: expected 65 columns of 8x8 pixels (0..16) + label")
    images = table[:, :64].astype(np.uint8).reshape(-1, 1, 8, 8)
    labels = table[:, 64].astype(np.int64)
    return images, labels, images[:0], labels[:0]


def _cifar_format(directory: Path) -> str | None:
    """``"bin"`` or ``"py"`` if ``directory`` holds a complete CIFAR-10 version, else None."""
    if all((directory / f"{s}.bin").is_file() for s in (*_CIFAR_TRAIN, _CIFAR_TEST)):
        return "bin"
    if all((directory / s).is_file() for s in (*_CIFAR_TRAIN, _CIFAR_TEST)):
        return "py"
    return None


def _read_cifar_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = path.read_bytes()
    if not data or len(data) % _CIFAR_RECORD:
        raise ValueError(
            f"{path}: size {len(data)} is not a positive multiple of the CIFAR-10 record size "
            f"{_CIFAR_RECORD} (corrupt or truncated file)"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise ValueError(f"{path}: label {labels.max()} out of range 0..9")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _safe_latin1_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stand-in for ``_codecs.encode`` (how Python 3 pickles ``bytes`` at protocol 2)."""
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return obj.encode("latin-1", errors)


def _numpy_global(*candidates: tuple[str, str]) -> object | None:
    """The first importable ``module.attr`` among ``candidates`` (numpy 1.x / 2.x spellings)."""
    import importlib

    for module, attr in candidates:
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
    return None


@functools.lru_cache(maxsize=1)
def _allowed_globals() -> dict[tuple[str, str], object]:
    reconstruct = _numpy_global(
        ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct")
    )
    scalar = _numpy_global(
        ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar")
    )
    frombuffer = _numpy_global(
        ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer")
    )
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _safe_latin1_encode,
    }
    for pkg in ("numpy._core", "numpy.core"):
        for key, obj in (
            ((f"{pkg}.multiarray", "_reconstruct"), reconstruct),
            ((f"{pkg}.multiarray", "scalar"), scalar),
            ((f"{pkg}.numeric", "_frombuffer"), frombuffer),
        ):
            if obj is not None:
                allowed[key] = obj
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays/dtypes (and plain containers).

    Any other global (``os.system``, ``builtins.eval``, ...) raises ``pickle.UnpicklingError``.
    """

    def find_class(self, module: str, name: str) -> object:
        try:
            return _allowed_globals()[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global {module}.{name} (only numpy arrays are allowed)"
            ) from None


def _restricted_load(data: bytes) -> object:
    """Unpickle ``data`` with :class:`_RestrictedUnpickler` (``encoding='bytes'``, as CIFAR's)."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


def _read_cifar_py(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _restricted_load(path.read_bytes())
    except pickle.UnpicklingError:
        raise
    except Exception as exc:
        raise ValueError(f"{path}: corrupt CIFAR-10 python batch: {exc}") from exc
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: CIFAR-10 batch is a {type(batch).__name__}, expected a dict")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise ValueError(f"{path}: 'data' must be a 2-d uint8 array")
    if data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' rows have {data.shape[1]} values, expected 3072")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: 'labels' must be a list of ints") from exc
    if y.shape != (data.shape[0],):
        raise ValueError(f"{path}: {data.shape[0]} images but labels of shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise ValueError(f"{path}: labels out of range 0..9")
    return data.reshape(-1, 3, 32, 32), y


def _read_cifar_dir(directory: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    fmt = _cifar_format(directory)
    if fmt is None:
        raise FileNotFoundError(f"CIFAR-10 batches missing in {directory}")

    def read(stem: str) -> tuple[np.ndarray, np.ndarray]:
        if fmt == "bin":
            return _read_cifar_bin(directory / f"{stem}.bin")
        return _read_cifar_py(directory / stem)

    train = [read(s) for s in _CIFAR_TRAIN]
    x_test, y_test = read(_CIFAR_TEST)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return x_train, y_train, x_test, y_test


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------


def vision_hint() -> str:
    """How to add torchvision without pip swapping the installed torch for another build (a
    plain ``pip install 'commenv[vision]'`` may pull PyPI's CUDA torch in)."""
    index = "https://download.pytorch.org/whl/cpu" if "+cpu" in torch.__version__ else None
    where = f" --index-url {index}" if index else ""
    return (
        f"the commenv[vision] extra, torchvision: pip install --no-deps torchvision{where} (a "
        f"release built for your torch {torch.__version__}; --no-deps keeps that torch)"
    )


def _download(name: str, target: Path) -> None:
    """Download ``name`` into ``target`` with torchvision (imported lazily, only here)."""
    advice = (
        f"download=True needs a working torchvision: {vision_hint()}; or place the {name} "
        "files under root= or $COMMENV_DATA yourself."
    )
    try:
        import torchvision.datasets as tvd  # optional: must stay lazy
    except Exception as exc:  # CUDA wheels fail with OSError/RuntimeError/... not ImportError
        raise RuntimeError(f"{advice} (importing torchvision failed: {exc!r})") from exc
    classes = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST", "cifar10": "CIFAR10"}
    try:
        target.mkdir(parents=True, exist_ok=True)
        cls = getattr(tvd, classes[name])
        for train in (True, False):
            cls(root=str(target), train=train, download=True)
    except Exception as exc:
        raise RuntimeError(
            f"downloading {name} with torchvision into {target} failed: {exc!r}. "
            f"Place the files under root= or $COMMENV_DATA instead."
        ) from exc


def _clear_cache() -> None:
    """Drop all cached datasets (e.g. after files changed on disk)."""
    for fn in (_file_splits, _synthetic_splits, _read_arrays):
        fn.cache_clear()
