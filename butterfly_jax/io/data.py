"""Whole image-classification datasets as host numpy arrays.

:func:`load_dataset` returns a :class:`Dataset`: uint8 NHWC images and int32 labels for the train and test
splits, which the training code then puts on the device as they are. Where the data comes from:

* ``data_dir`` given (machines without internet): CIFAR-10/100 in the official python format (the
  ``cifar-10-python.tar.gz`` tarball, a folder holding it, or the extracted folder; read straight from the
  tarball, nothing is extracted to disk) and MNIST / Fashion-MNIST as a folder of the four idx files
  (plain or ``.gz``). The CIFAR batches are pickles, read by an unpickler that admits only numpy arrays and
  plain values: a batch naming any other global (code it would run) is a :class:`DataError`.
* ``data_dir`` None: tensorflow-datasets' ``tfds.data_source`` (ArrayRecord; downloads and prepares once).
* ``digits``: scikit-learn's bundled 8x8 digits, with a fixed 1500 / 297 split. Needs no files.
* ``synthetic``: random images with a class-dependent offset, for benchmarks and tests. Needs no files.

Every problem with the data raises :class:`DataError`, whose message names the path or field at fault and
what was expected there.
"""

import dataclasses
import gzip
import io
import logging
import os
import pickle
import struct
import tarfile

import numpy as np

log = logging.getLogger(__name__)

DATASETS = ("cifar10", "cifar100", "fashion_mnist", "mnist", "digits", "synthetic")
# Datasets that read no files (data.dir and data.tfds_dir would be ignored: config validation refuses them).
FILELESS = {"digits": "bundled with scikit-learn", "synthetic": "generated from data.synthetic"}


class DataError(ValueError):
  """The data is missing, malformed or unreadable; the message names the path or field and what was expected."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A whole dataset in host memory: uint8 [N, H, W, C] images and int32 [N] labels per split."""

  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  source: str

  def __post_init__(self):
    for split in ("train", "test"):
      images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
      if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4):
        raise DataError(f"Dataset.{split}_images ({self.source}): expected a uint8 [N, H, W, C] array, got "
                        f"{getattr(images, 'dtype', type(images))} {getattr(images, 'shape', '')}")
      if not (isinstance(labels, np.ndarray) and labels.dtype == np.int32 and labels.shape == images.shape[:1]):
        raise DataError(f"Dataset.{split}_labels ({self.source}): expected an int32 [{images.shape[0]}] array, "
                        f"got {getattr(labels, 'dtype', type(labels))} {getattr(labels, 'shape', '')}")
      check_label_range(labels, self.num_classes, f"Dataset.{split}_labels ({self.source})")
    if self.train_images.shape[1:] != self.test_images.shape[1:]:
      raise DataError(f"Dataset ({self.source}): train images {self.train_images.shape[1:]} and test images "
                      f"{self.test_images.shape[1:]} differ in shape")

  # The inputs under the name every dataset gives them (text datasets hold token ids: text.TextDataset), so that
  # the training and evaluation code reads either kind alike.
  @property
  def train_inputs(self) -> np.ndarray:
    return self.train_images

  @property
  def test_inputs(self) -> np.ndarray:
    return self.test_images

  @property
  def input_shape(self) -> tuple:
    """(H, W, C) of one image."""
    return tuple(int(d) for d in self.train_images.shape[1:])

  @property
  def num_train(self) -> int:
    return int(self.train_images.shape[0])

  @property
  def num_test(self) -> int:
    return int(self.test_images.shape[0])

  def channel_stats(self, chunk_elements: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std of ``train_images / 255``, float32 arrays of shape [C].

    One pass over chunks of about ``chunk_elements`` values builds an exact per-channel histogram of the 256
    pixel values; mean and std follow from it in float64, so memory stays small and no sum loses precision.
    """
    x = self.train_images
    channels = x.shape[-1]
    if x.size == 0:
      raise DataError(f"Dataset.train_images ({self.source}): empty, cannot compute channel statistics")
    step = max(1, chunk_elements // max(1, x[0].size))
    hist = np.zeros((channels, 256), np.int64)
    for i in range(0, len(x), step):
      chunk = x[i:i + step].reshape(-1, channels)
      for c in range(channels):
        hist[c] += np.bincount(chunk[:, c], minlength=256)
    values = np.arange(256, dtype=np.float64) / 255.0
    count = hist.sum(axis=1)
    mean = hist @ values / count
    var = (hist * (values[None, :] - mean[:, None]) ** 2).sum(axis=1) / count
    return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


def load_dataset(name: str, data_dir: str | None = None, *, tfds_data_dir: str | None = None,
                 synthetic: dict | None = None) -> Dataset:
  """Loads dataset ``name`` (one of :data:`DATASETS`) whole into host memory.

  Args:
    name: the dataset (config field ``data.name``).
    data_dir: local files to read instead of tensorflow-datasets (``data.dir``): for cifar10/cifar100 the
      python tarball, a folder holding it, or the extracted folder; for mnist/fashion_mnist a folder with the
      four idx files. Not read for digits and synthetic (:data:`FILELESS`).
    tfds_data_dir: tensorflow-datasets' ``data_dir`` when ``data_dir`` is not given (None: tfds default).
    synthetic: keyword arguments of :func:`make_synthetic` (``data.synthetic``), for ``name="synthetic"``.
  """
  if name not in DATASETS:
    raise DataError(f"data.name: unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
  if name == "synthetic":
    synthetic = dict(synthetic or {})
    unknown = sorted(set(synthetic) - set(_SYNTHETIC_KEYS))
    if unknown:
      raise DataError(f"data.synthetic: unknown keys {unknown}; allowed: {', '.join(_SYNTHETIC_KEYS)}")
    return make_synthetic(**synthetic)
  if name == "digits":
    return load_digits()
  if data_dir:
    data_dir = os.path.expanduser(os.fspath(data_dir))
    if name in _CIFAR:
      return load_cifar_python(name, data_dir)
    return load_idx_folder(name, data_dir)
  return load_tfds(name, tfds_data_dir)


def select_classes(data: Dataset, classes) -> Dataset:
  """The examples of ``classes`` only, relabelled ``0 .. len(classes) - 1`` in the given order
  (``data.classes``; e.g. pre-train on Fashion-MNIST classes 0-4, fine-tune on 5-9)."""
  classes = [int(c) for c in classes]
  if len(set(classes)) != len(classes) or not classes:
    raise DataError(f"data.classes: expected distinct class indices, got {classes}")
  bad = [c for c in classes if not 0 <= c < data.num_classes]
  if bad:
    raise DataError(f"data.classes: {bad} outside the {data.num_classes} classes of {data.name} "
                    f"(allowed: 0 .. {data.num_classes - 1})")
  relabel = np.full(data.num_classes, -1, np.int32)
  relabel[classes] = np.arange(len(classes), dtype=np.int32)
  out = []
  for split in ("train", "test"):
    images, labels = getattr(data, f"{split}_images"), getattr(data, f"{split}_labels")
    keep = relabel[labels] >= 0
    out.append((images[keep], relabel[labels[keep]]))
  return _make(data.name, out[0], out[1], len(classes), f"{data.source} (classes {classes})")


def check_label_range(labels: np.ndarray, num_classes: int, where: str) -> None:
  """Labels in ``[0, num_classes)``, or a DataError naming ``where`` (image and text datasets alike)."""
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise DataError(f"{where}: labels must lie in [0, {num_classes}), found [{labels.min()}, {labels.max()}]")


def _make(name, train, test, num_classes, source) -> Dataset:
  """Builds a Dataset from (images, labels) pairs, making the arrays contiguous uint8 / int32."""
  arrays = [np.ascontiguousarray(a, dtype) for pair in (train, test) for a, dtype in zip(pair, (np.uint8, np.int32))]
  return Dataset(name, *arrays, num_classes=int(num_classes), source=source)


# ----------------------------------------------------------------------------------------------- CIFAR python

_CIFAR = {
    "cifar10": dict(tarball="cifar-10-python.tar.gz", folder="cifar-10-batches-py", label_key=b"labels",
                    train=tuple(f"data_batch_{i}" for i in range(1, 6)), test=("test_batch",), num_classes=10),
    "cifar100": dict(tarball="cifar-100-python.tar.gz", folder="cifar-100-python", label_key=b"fine_labels",
                     train=("train",), test=("test",), num_classes=100),
}


def load_cifar_python(name: str, path: str) -> Dataset:
  """CIFAR-10/100 in the official python format from ``path`` (tarball, folder holding it, or extracted folder)."""
  spec = _CIFAR[name]
  files = spec["train"] + spec["test"]
  location, is_tar = _resolve_cifar(name, path)
  raw = _read_tar_members(location, files) if is_tar else _read_files(location, files)
  where = (lambda f: f"{location}:{f}") if is_tar else (lambda f: os.path.join(location, f))
  splits = []
  for names in (spec["train"], spec["test"]):
    parts = [_parse_cifar_batch(raw[f], where(f), spec["label_key"], spec["num_classes"]) for f in names]
    images = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    splits.append((images, np.concatenate([p[1] for p in parts])))
  return _make(name, *splits, spec["num_classes"], f"cifar-python:{location}")


def _resolve_cifar(name: str, path: str) -> tuple[str, bool]:
  """(the tarball or the folder of batch files that ``path`` points at, whether it is a tarball)."""
  spec = _CIFAR[name]
  files = spec["train"] + spec["test"]
  expected = (f"the {spec['tarball']} tarball, a folder holding it, or the extracted {spec['folder']}/ "
              f"folder with {', '.join(files)}")
  if os.path.isfile(path):
    return path, True
  if not os.path.isdir(path):
    raise DataError(f"data.dir {path!r} does not exist; expected {expected}")
  inner, tarball = os.path.join(path, spec["folder"]), os.path.join(path, spec["tarball"])
  if any(os.path.exists(os.path.join(path, f)) for f in files):
    return path, False
  if os.path.isdir(inner):
    return inner, False
  if os.path.isfile(tarball):
    return tarball, True
  raise DataError(f"data.dir {path!r}: no {name} data found; expected {expected}")


def _read_files(folder: str, files) -> dict:
  raw = {}
  for f in files:
    p = os.path.join(folder, f)
    if not os.path.isfile(p):
      raise DataError(f"{p}: missing; expected the files {', '.join(files)} in {folder}")
    with open(p, "rb") as fh:
      raw[f] = fh.read()
  return raw


def _read_tar_members(tarball: str, files) -> dict:
  """Reads the members named ``<any folder>/<f>`` for each ``f`` in ``files`` in one pass over the tarball."""
  raw = {}
  try:
    with tarfile.open(tarball, "r:*") as tar:
      for member in tar:
        base = os.path.basename(member.name)
        if member.isfile() and base in files and base not in raw:
          raw[base] = tar.extractfile(member).read()
  except (tarfile.TarError, OSError, EOFError) as e:
    raise DataError(f"{tarball}: not a readable tar archive ({type(e).__name__}: {e})") from e
  missing = [f for f in files if f not in raw]
  if missing:
    raise DataError(f"{tarball}: missing members {', '.join(missing)}; expected {', '.join(files)}")
  return raw


def _latin1_bytes(text, encoding):
  """``_codecs.encode`` as Python 3 pickles bytes at protocol <= 2 (``encode(str, 'latin1')``), and nothing else."""
  if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
    raise pickle.UnpicklingError(f"forbidden call _codecs.encode(<{type(text).__name__}>, {encoding!r})")
  return text.encode("latin1")


_ARRAY = np.zeros(1, np.uint8)
# The globals a CIFAR batch may name: numpy's array reconstruction (numpy 1 and 2 module names; protocol 5
# pickles use _frombuffer), and what protocol <= 2 pickles of bytes call. Nothing else can run.
_CIFAR_GLOBALS = {
    **{(m, "_reconstruct"): _ARRAY.__reduce__()[0] for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "_frombuffer"): _ARRAY.__reduce_ex__(5)[0] for m in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes, ("__builtin__", "bytes"): bytes, ("builtins", "bytes"): bytes,
}


class _CifarUnpickler(pickle.Unpickler):
  """Unpickles plain containers and numpy arrays; any other global raises ``pickle.UnpicklingError``."""

  def find_class(self, module, name):
    try:
      return _CIFAR_GLOBALS[module, name]
    except KeyError:
      raise pickle.UnpicklingError(f"forbidden global {module}.{name} (a CIFAR batch holds only arrays, lists, "
                                   "bytes and numbers)") from None


def _parse_cifar_batch(raw: bytes, where: str, label_key: bytes, num_classes: int):
  """(uint8 [n, 3072] rows in CHW order, int32 [n] labels) of one pickled CIFAR batch."""
  try:
    batch = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
  except Exception as e:  # pickle raises many kinds of errors on garbage
    raise DataError(f"{where}: not a readable CIFAR pickle ({type(e).__name__}: {e})") from e
  if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
    got = f"keys {', '.join(sorted(map(repr, batch)))}" if isinstance(batch, dict) else type(batch).__name__
    raise DataError(f"{where}: expected a dict with keys b'data' and {label_key!r}, got {got}")
  try:
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[label_key])
  except (ValueError, TypeError) as e:  # ragged or foreign contents
    raise DataError(f"{where}: b'data' and {label_key!r} must be arrays or lists ({e})") from e
  if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
    raise DataError(f"{where}: b'data' must be uint8 of shape (n, 3072), got {data.dtype} {data.shape}")
  if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f"{where}: {label_key!r} must be {data.shape[0]} integers, got {labels.dtype} {labels.shape}")
  check_label_range(labels, num_classes, where)
  return data, labels.astype(np.int32)


# ----------------------------------------------------------------------------------------------- MNIST idx

IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
_IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}  # uint8 data, 3 (images) or 1 (labels) dimensions


def load_idx_folder(name: str, folder: str, num_classes: int = 10) -> Dataset:
  """MNIST-style dataset from a folder holding the four idx files, each plain or ``.gz``."""
  expected = f"the idx files {', '.join(IDX_FILES.values())} (each plain or .gz)"
  if not os.path.isdir(folder):
    raise DataError(f"data.dir {folder!r} is not a folder; expected a folder with {expected}")
  arrays = {}
  for key, base in IDX_FILES.items():
    candidates = [os.path.join(folder, base + ext) for ext in ("", ".gz")]
    path = next((p for p in candidates if os.path.isfile(p)), None)
    if path is None:
      raise DataError(f"{candidates[0]}[.gz]: missing; expected {expected} in {folder}")
    arrays[key] = (read_idx(path, ndim=3 if key.endswith("images") else 1), path)
  for split in ("train", "test"):
    (images, ipath), (labels, lpath) = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    if len(images) != len(labels):
      raise DataError(f"{ipath} holds {len(images)} images but {lpath} holds {len(labels)} labels")
    check_label_range(labels, num_classes, lpath)
  return _make(name, *((arrays[f"{s}_images"][0][..., None], arrays[f"{s}_labels"][0]) for s in ("train", "test")),
               num_classes, f"idx:{folder}")


def read_idx(path: str, ndim: int) -> np.ndarray:
  """The uint8 array of an idx file (``.gz`` decompressed) with ``ndim`` dimensions (3 images, 1 labels)."""
  try:
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as fh:
      raw = fh.read()
  except (OSError, EOFError) as e:  # includes gzip.BadGzipFile and a truncated gzip stream
    raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from e
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise DataError(f"{path}: truncated, {len(raw)} bytes is shorter than the {header}-byte idx header")
  magic = struct.unpack(">I", raw[:4])[0]
  if magic != _IDX_MAGIC[ndim]:
    raise DataError(f"{path}: bad idx magic number 0x{magic:08x}, expected 0x{_IDX_MAGIC[ndim]:08x} "
                    f"({'images' if ndim == 3 else 'labels'}, uint8, {ndim} dims)")
  dims = struct.unpack(f">{ndim}I", raw[4:header])
  size = int(np.prod(dims, dtype=np.int64))
  if len(raw) - header != size:
    state = "truncated" if len(raw) - header < size else "too long"
    raise DataError(f"{path}: {state}, header promises {'x'.join(map(str, dims))} = {size} bytes of data, "
                    f"found {len(raw) - header}")
  return np.frombuffer(raw, np.uint8, count=size, offset=header).reshape(dims).copy()


# ----------------------------------------------------------------------------------------------- tfds


def load_tfds(name: str, tfds_data_dir: str | None = None, chunk_size: int = 1024) -> Dataset:
  """Train and test splits of tfds dataset ``name`` via ``tfds.data_source`` (downloads when needed)."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    splits = []
    for split in ("train", "test"):
      source = tfds.data_source(name, split=split, data_dir=tfds_data_dir, download=True)
      splits.append(read_data_source(source, chunk_size, where=f"tfds:{name}[{split}]"))
    num_classes = source.dataset_info.features["label"].num_classes
  except DataError:
    raise
  except Exception as e:  # no internet, dataset not prepared, no image decoder, ...: all end here
    raise DataError(f"tfds:{name}: could not load with tensorflow-datasets (data_dir={tfds_data_dir!r}): "
                    f"{type(e).__name__}: {e}. Without internet, pass data.dir with local files "
                    f"(CIFAR python tarball or folder, or a folder of MNIST idx files)") from e
  return _make(name, *splits, num_classes, f"tfds:{name}")


def read_data_source(source, chunk_size: int = 1024, where: str = "data source"):
  """(uint8 [N, H, W, C] images, int64 [N] labels) of all records of a random-access data source.

  Records are dicts with "image" (uint8 HWC) and "label". Reads ``chunk_size`` records per batched
  ``__getitems__`` call where the source offers one that works, else one ``source[i]`` call per record.
  """
  n = len(source)
  if n == 0:
    raise DataError(f"{where}: the split is empty")
  images, labels = None, np.empty(n, np.int64)
  batched = hasattr(source, "__getitems__")
  for start in range(0, n, chunk_size):
    keys = list(range(start, min(n, start + chunk_size)))
    records = None
    if batched:
      try:
        records = source.__getitems__(keys)
      except (TypeError, NotImplementedError, AttributeError) as e:  # e.g. tfds' mocked sources
        log.debug("%s: batched __getitems__ failed (%r), reading one record at a time", where, e)
        batched = False
    if records is None:
      records = [source[k] for k in keys]
    for i, record in zip(keys, records):
      image = np.asarray(record["image"])
      if images is None:
        images = np.empty((n,) + image.shape, np.uint8)
      if image.dtype != np.uint8 or image.shape != images.shape[1:]:
        raise DataError(f"{where}: record {i} image is {image.dtype} {image.shape}, "
                        f"expected uint8 {images.shape[1:]} like record 0")
      images[i] = image
      labels[i] = int(record["label"])
  if images.ndim == 3:  # grayscale stored without a channel axis
    images = images[..., None]
  return images, labels


# ----------------------------------------------------------------------------------------------- no files

DIGITS_NUM_TEST = 297
_SYNTHETIC_KEYS = ("num_train", "num_test", "shape", "num_classes", "seed")


def load_digits() -> Dataset:
  """scikit-learn's 1797 8x8 digits as uint8 [N, 8, 8, 1] (0..16 scaled to 0..255); fixed 1500/297 split.

  The split is the permutation ``np.random.default_rng(0).permutation(1797)``: its last 297 entries are the
  test set, the first 1500 the training set.
  """
  from sklearn.datasets import load_digits as sk_load_digits  # pylint: disable=import-outside-toplevel
  digits = sk_load_digits()
  images = np.round(digits.images * 255.0 / 16.0).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  perm = np.random.default_rng(0).permutation(len(images))
  train, test = perm[:-DIGITS_NUM_TEST], perm[-DIGITS_NUM_TEST:]
  return _make("digits", (images[train], labels[train]), (images[test], labels[test]), 10, "sklearn:digits")


def make_synthetic(num_train: int = 1024, num_test: int = 256, shape=(32, 32, 3), num_classes: int = 10,
                   seed: int = 0) -> Dataset:
  """Random uint8 images with uniform random labels, a little learnable.

  Each class ``c`` has a fixed random pattern ``offset_c`` with pixels uniform in [0, 64); an image of class
  ``c`` is ``noise + offset_c`` with noise pixels uniform in [0, 192), so pixels stay in [0, 255] without
  clipping and the class shows only as a small shift of the per-pixel mean. Everything is drawn from
  ``np.random.default_rng(seed)``: the same arguments give the same arrays.
  """
  for field, value in (("num_train", num_train), ("num_test", num_test), ("num_classes", num_classes)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise DataError(f"data.synthetic.{field}: expected a positive int, got {value!r}")
  shape = tuple(shape)
  if len(shape) != 3 or not all(isinstance(d, (int, np.integer)) and d >= 1 for d in shape):
    raise DataError(f"data.synthetic.shape: expected (H, W, C) of positive ints, got {shape!r}")
  rng = np.random.default_rng(seed)
  offsets = rng.integers(0, 64, size=(num_classes,) + shape, dtype=np.uint8)

  def split(n):
    labels = rng.integers(0, num_classes, size=n).astype(np.int32)
    return rng.integers(0, 192, size=(n,) + shape, dtype=np.uint8) + offsets[labels], labels

  train = split(num_train)
  return _make("synthetic", train, split(num_test), num_classes, "synthetic")
