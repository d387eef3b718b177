"""Dataset loading: tfds (mocked), CIFAR python tarballs/folders, idx files, digits, synthetic, errors."""

import gzip
import io
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest

from butterfly_jax.io import data
from butterfly_jax.io.data import DataError, Dataset, load_dataset

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


# ----------------------------------------------------------------------------------------------- helpers

def _cifar_images(n, seed):
  """n random HWC uint8 images and their rows in the CIFAR python layout (CHW flattened)."""
  hwc = np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
  return hwc, hwc.transpose(0, 3, 1, 2).reshape(n, 3072)


def _write_cifar(tmp_path, name, layout, rows=4):
  """Writes a tiny fake CIFAR-10/100 in ``layout``; returns (data_dir, expected train, expected test)."""
  spec = data._CIFAR[name]
  members, splits = {}, {}
  for split in ("train", "test"):
    parts = []
    for i, f in enumerate(spec[split]):
      hwc, flat = _cifar_images(rows, seed=i + (100 if split == "test" else 0))
      labels = (np.arange(rows) * 7 + i) % spec["num_classes"]
      members[f] = pickle.dumps({b"batch_label": b"x", b"data": flat, spec["label_key"]: labels.tolist()})
      parts.append((hwc, labels))
    splits[split] = tuple(np.concatenate(p) for p in zip(*parts))
  if layout in ("tarball", "folder_with_tarball"):
    folder = tmp_path / "dl"
    folder.mkdir()
    tarball = folder / spec["tarball"]
    with tarfile.open(tarball, "w:gz") as tar:
      for f, raw in members.items():
        info = tarfile.TarInfo(f"{spec['folder']}/{f}")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    return str(tarball if layout == "tarball" else folder), splits["train"], splits["test"]
  inner = tmp_path / "dl" / spec["folder"]
  inner.mkdir(parents=True)
  for f, raw in members.items():
    (inner / f).write_bytes(raw)
  return str(inner if layout == "extracted" else inner.parent), splits["train"], splits["test"]


def _write_idx(path, array, magic=None, cut=0):
  """Writes ``array`` (uint8) as an idx file (gzipped if the name ends in .gz), dropping the last ``cut`` bytes."""
  magic = 0x800 + array.ndim if magic is None else magic
  raw = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
  raw = raw[:len(raw) - cut]
  with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as fh:
    fh.write(raw)


def _write_idx_folder(folder, n_train=6, n_test=4, gz=("train",)):
  rng = np.random.default_rng(1)
  arrays = {}
  for split, n in (("train", n_train), ("test", n_test)):
    prefix = "train" if split == "train" else "t10k"
    ext = ".gz" if split in gz else ""
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    _write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
    _write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    arrays[split] = images, labels
  return arrays


# ----------------------------------------------------------------------------------------------- tfds

@pytest.mark.parametrize("name,shape", [("cifar10", (32, 32, 3)), ("fashion_mnist", (28, 28, 1))])
def test_tfds_mocked(name, shape, tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=7):
    d = load_dataset(name, tfds_data_dir=str(tmp_path))
  assert (d.num_train, d.num_test, d.input_shape, d.num_classes) == (7, 7, shape, 10)
  assert d.train_images.dtype == np.uint8 and d.test_images.dtype == np.uint8
  assert d.train_labels.dtype == np.int32 and d.train_labels.shape == (7,)
  assert d.train_images.flags.c_contiguous and d.source == f"tfds:{name}"
  assert d.train_images.std() > 0  # real (random) pixels, not the zeros of the preallocated buffer


def test_tfds_failure_is_a_data_error_that_points_at_data_dir(monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")

  def no_internet(*args, **kwargs):
    raise ConnectionError("no route to host")

  monkeypatch.setattr(tfds, "data_source", no_internet)
  with pytest.raises(DataError, match="data.dir") as info:
    load_dataset("cifar10")
  assert isinstance(info.value.__cause__, ConnectionError) and "no route to host" in str(info.value)


class _BatchedSource:
  """A random-access source with batched __getitems__ that counts its calls."""

  def __init__(self, n):
    self.images = np.random.default_rng(0).integers(0, 256, size=(n, 5, 4), dtype=np.uint8)
    self.calls = []

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    raise AssertionError("should read in batches")

  def __getitems__(self, keys):
    self.calls.append(len(keys))
    return [{"image": self.images[k], "label": np.int64(k % 3)} for k in keys]


def test_read_data_source_reads_in_chunks_and_adds_the_channel_axis():
  source = _BatchedSource(10)
  images, labels = data.read_data_source(source, chunk_size=4)
  assert source.calls == [4, 4, 2]
  np.testing.assert_array_equal(images, source.images[..., None])
  np.testing.assert_array_equal(labels, np.arange(10) % 3)


def test_read_data_source_rejects_images_of_different_shapes():
  records = [{"image": np.zeros((2, 2, 1), np.uint8), "label": 0}, {"image": np.zeros((3, 2, 1), np.uint8),
                                                                      "label": 1}]
  with pytest.raises(DataError, match="record 1"):
    data.read_data_source(records)


# ----------------------------------------------------------------------------------------------- CIFAR python

@pytest.mark.parametrize("layout", ["tarball", "folder_with_tarball", "extracted_parent", "extracted"])
def test_cifar10_python(tmp_path, layout):
  path, (train_x, train_y), (test_x, test_y) = _write_cifar(tmp_path, "cifar10", layout)
  d = load_dataset("cifar10", path)
  assert (d.num_train, d.num_test, d.input_shape, d.num_classes) == (20, 4, (32, 32, 3), 10)
  np.testing.assert_array_equal(d.train_images, train_x)
  np.testing.assert_array_equal(d.train_labels, train_y)
  np.testing.assert_array_equal(d.test_images, test_x)
  np.testing.assert_array_equal(d.test_labels, test_y)
  assert d.train_labels.dtype == np.int32 and d.train_images.flags.c_contiguous
  assert d.source.startswith("cifar-python:") and ("tar.gz" in d.source) == layout.endswith("tarball")


def test_cifar10_pixel_pattern_lands_in_hwc(tmp_path):
  folder = tmp_path / "cifar-10-batches-py"
  folder.mkdir()
  flat = np.zeros((1, 3072), np.uint8)
  flat[0, 0 * 1024 + 3 * 32 + 5] = 11   # red   at (h=3, w=5)
  flat[0, 1 * 1024 + 0 * 32 + 1] = 22   # green at (h=0, w=1)
  flat[0, 2 * 1024 + 31 * 32 + 30] = 33  # blue  at (h=31, w=30)
  for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    (folder / f).write_bytes(pickle.dumps({b"data": flat, b"labels": [3]}))
  image = load_dataset("cifar10", str(tmp_path)).train_images[0]
  assert (image[3, 5, 0], image[0, 1, 1], image[31, 30, 2]) == (11, 22, 33)
  assert image.sum() == 66


@pytest.mark.parametrize("layout", ["tarball", "folder_with_tarball", "extracted"])
def test_cifar100_python(tmp_path, layout):
  path, (train_x, train_y), (test_x, test_y) = _write_cifar(tmp_path, "cifar100", layout, rows=6)
  d = load_dataset("cifar100", path)
  assert (d.num_train, d.num_test, d.num_classes) == (6, 6, 100)
  np.testing.assert_array_equal(d.train_images, train_x)
  np.testing.assert_array_equal(d.train_labels, train_y)
  np.testing.assert_array_equal(d.test_images, test_x)
  np.testing.assert_array_equal(d.test_labels, test_y)


def test_cifar_missing_path_and_missing_files(tmp_path):
  missing = tmp_path / "nope"
  with pytest.raises(DataError, match="cifar-10-python.tar.gz") as info:
    load_dataset("cifar10", str(missing))
  assert str(missing) in str(info.value)
  with pytest.raises(DataError, match="cifar-100-python"):
    load_dataset("cifar100", str(tmp_path))  # exists but holds nothing
  path, _, _ = _write_cifar(tmp_path, "cifar10", "extracted")
  os.remove(os.path.join(path, "test_batch"))
  with pytest.raises(DataError, match="test_batch") as info:
    load_dataset("cifar10", path)
  assert os.path.join(path, "test_batch") in str(info.value)


def test_cifar_batch_of_the_wrong_shape_names_the_file(tmp_path):
  path, _, _ = _write_cifar(tmp_path, "cifar10", "extracted")
  bad = os.path.join(path, "data_batch_3")
  with open(bad, "wb") as fh:
    pickle.dump({b"data": np.zeros((4, 1024), np.uint8), b"labels": [0, 1, 2, 3]}, fh)
  with pytest.raises(DataError, match="3072") as info:
    load_dataset("cifar10", path)
  assert bad in str(info.value)


def test_cifar_tarball_missing_member_and_garbage(tmp_path):
  tarball = tmp_path / "cifar-10-python.tar.gz"
  with tarfile.open(tarball, "w:gz") as tar:
    info = tarfile.TarInfo("cifar-10-batches-py/readme.html")
    tar.addfile(info, io.BytesIO(b""))
  with pytest.raises(DataError, match="data_batch_1") as info:
    load_dataset("cifar10", str(tarball))
  assert str(tarball) in str(info.value)
  tarball.write_bytes(b"not a tarball at all")
  with pytest.raises(DataError, match="tar"):
    load_dataset("cifar10", str(tarball))


# ----------------------------------------------------------------------------------------------- idx

def test_idx_folder_plain_and_gz(tmp_path):
  arrays = _write_idx_folder(tmp_path, gz=("train",))
  d = load_dataset("mnist", str(tmp_path))
  assert (d.num_train, d.num_test, d.input_shape, d.num_classes) == (6, 4, (28, 28, 1), 10)
  np.testing.assert_array_equal(d.train_images[..., 0], arrays["train"][0])
  np.testing.assert_array_equal(d.test_labels, arrays["test"][1])
  assert d.train_labels.dtype == np.int32 and d.source == f"idx:{tmp_path}"


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte"])
def test_idx_truncated_names_the_file(tmp_path, name):
  _write_idx_folder(tmp_path, gz=("train",))
  path = tmp_path / name
  kind = np.zeros((6, 28, 28) if "images" in name else (4,), np.uint8)
  _write_idx(path, kind, cut=3)
  with pytest.raises(DataError, match="truncated") as info:
    load_dataset("fashion_mnist", str(tmp_path))
  assert str(path) in str(info.value)


def test_idx_cut_gzip_stream_names_the_file(tmp_path):
  _write_idx_folder(tmp_path, gz=("train",))
  path = tmp_path / "train-images-idx3-ubyte.gz"
  path.write_bytes(path.read_bytes()[:-20])
  with pytest.raises(DataError) as info:
    load_dataset("mnist", str(tmp_path))
  assert str(path) in str(info.value)


def test_idx_wrong_magic(tmp_path):
  _write_idx_folder(tmp_path)
  path = tmp_path / "t10k-images-idx3-ubyte"
  _write_idx(path, np.zeros((4, 28, 28), np.uint8), magic=0x00000801)
  with pytest.raises(DataError, match="magic") as info:
    load_dataset("mnist", str(tmp_path))
  assert str(path) in str(info.value)


def test_idx_missing_file_and_count_mismatch(tmp_path):
  _write_idx_folder(tmp_path, gz=())
  os.remove(tmp_path / "train-labels-idx1-ubyte")
  with pytest.raises(DataError, match="missing") as info:
    load_dataset("mnist", str(tmp_path))
  assert str(tmp_path / "train-labels-idx1-ubyte") in str(info.value)
  _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, np.uint8))  # 6 images
  with pytest.raises(DataError, match="6 images but .* 5 labels"):
    load_dataset("mnist", str(tmp_path))
  with pytest.raises(DataError, match="not a folder"):
    load_dataset("mnist", str(tmp_path / "absent"))


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR),
                    reason=f"the real Fashion-MNIST idx files are not on this machine ({FASHION_MNIST_DIR})")
def test_real_fashion_mnist():
  d = load_dataset("fashion_mnist", FASHION_MNIST_DIR)
  assert (d.num_train, d.num_test, d.input_shape, d.num_classes) == (60000, 10000, (28, 28, 1), 10)
  assert d.train_labels.min() == 0 and d.train_labels.max() == 9
  assert np.bincount(d.test_labels).tolist() == [1000] * 10
  mean, std = d.channel_stats()
  np.testing.assert_allclose([mean[0], std[0]], [0.2860, 0.3530], atol=1e-3)


# ----------------------------------------------------------------------------------------------- no files

def test_digits_split_is_fixed():
  a, b = load_dataset("digits"), load_dataset("digits", "/ignored/for/digits")
  assert (a.num_train, a.num_test, a.input_shape, a.num_classes) == (1500, 297, (8, 8, 1), 10)
  assert a.train_images.dtype == np.uint8 and a.train_images.max() == 255 and a.source == "sklearn:digits"
  np.testing.assert_array_equal(a.train_images, b.train_images)
  np.testing.assert_array_equal(a.test_labels, b.test_labels)
  assert set(np.unique(a.train_images)) <= {round(v * 255 / 16) for v in range(17)}
  assert len(np.unique(a.test_labels)) == 10
  # the split is pinned: the last 297 entries of default_rng(0)'s permutation are the test set
  from sklearn.datasets import load_digits
  raw = load_digits()
  perm = np.random.default_rng(0).permutation(1797)
  np.testing.assert_array_equal(a.test_labels, raw.target[perm[-297:]])
  np.testing.assert_array_equal(a.train_images[:5, ..., 0], np.round(raw.images[perm[:5]] * 255 / 16))


def test_synthetic_shapes_determinism_and_signal():
  kw = dict(num_train=2000, num_test=300, shape=(8, 6, 3), num_classes=5, seed=3)
  a, b = load_dataset("synthetic", synthetic=kw), load_dataset("synthetic", synthetic=kw)
  c = load_dataset("synthetic", synthetic={**kw, "seed": 4})
  assert (a.num_train, a.num_test, a.input_shape, a.num_classes) == (2000, 300, (8, 6, 3), 5)
  assert a.train_images.dtype == np.uint8 and a.train_labels.dtype == np.int32
  np.testing.assert_array_equal(a.train_images, b.train_images)
  np.testing.assert_array_equal(a.test_labels, b.test_labels)
  assert not np.array_equal(a.train_images, c.train_images)
  # nearest class mean beats chance (0.2) by far: the labels are learnable
  x, xt = a.train_images.reshape(2000, -1).astype(float), a.test_images.reshape(300, -1).astype(float)
  means = np.stack([x[a.train_labels == k].mean(0) for k in range(5)])
  pred = ((xt[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
  assert (pred == a.test_labels).mean() > 0.6


def test_synthetic_defaults_and_bad_fields():
  d = load_dataset("synthetic")
  assert (d.num_train, d.num_test, d.input_shape, d.num_classes, d.source) == (1024, 256, (32, 32, 3), 10,
                                                                              "synthetic")
  with pytest.raises(DataError, match="data.synthetic: unknown keys"):
    load_dataset("synthetic", synthetic={"num_trian": 3})
  with pytest.raises(DataError, match="data.synthetic.shape"):
    load_dataset("synthetic", synthetic={"shape": (32, 32)})
  with pytest.raises(DataError, match="data.synthetic.num_test"):
    load_dataset("synthetic", synthetic={"num_test": 0})


def test_unknown_name():
  with pytest.raises(DataError, match="data.name") as info:
    load_dataset("imagenet")
  assert all(name in str(info.value) for name in data.DATASETS)


# ----------------------------------------------------------------------------------------------- Dataset

def _tiny(images, labels=None, num_classes=2):
  labels = np.zeros(len(images), np.int32) if labels is None else labels
  return Dataset("t", images, labels, images[:1], labels[:1], num_classes, "test")


def test_channel_stats_on_a_known_array():
  images = np.zeros((3, 1, 2, 2), np.uint8)
  images[..., 0] = 255                       # channel 0: all ones after /255 -> mean 1, std 0
  images[:, 0, 0, 1], images[:, 0, 1, 1] = 0, 255  # channel 1: half 0, half 1 -> mean 0.5, std 0.5
  mean, std = _tiny(images).channel_stats()
  assert mean.dtype == np.float32 and mean.shape == (2,)
  np.testing.assert_allclose(mean, [1.0, 0.5], atol=1e-7)
  np.testing.assert_allclose(std, [0.0, 0.5], atol=1e-7)
  # chunking does not change the answer
  rand = np.random.default_rng(0).integers(0, 256, size=(37, 4, 4, 3), dtype=np.uint8)
  small_chunks = _tiny(rand).channel_stats(chunk_elements=10)
  x = rand.reshape(-1, 3) / 255.0
  np.testing.assert_allclose(small_chunks[0], x.mean(0), rtol=1e-6)
  np.testing.assert_allclose(small_chunks[1], x.std(0), rtol=1e-6)


def test_dataset_rejects_bad_arrays():
  images = np.zeros((2, 3, 3, 1), np.uint8)
  with pytest.raises(DataError, match="train_images"):
    _tiny(images.astype(np.float32))
  with pytest.raises(DataError, match="train_labels"):
    _tiny(images, np.zeros(2, np.int64))
  with pytest.raises(DataError, match=r"\[0, 2\)"):
    _tiny(images, np.array([0, 2], np.int32))
