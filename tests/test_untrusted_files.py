"""Files from outside: a CIFAR pickle cannot run code, and a damaged weights file is an error naming it."""

import builtins
import io
import json
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest

from butterfly_jax.io import data
from butterfly_jax.io.data import DataError, load_dataset
from butterfly_jax.io.pretrained import PretrainedError, load_vit_weights, read_flax, read_npz, read_safetensors

# ----------------------------------------------------------------------------------------------- CIFAR pickles


class _Opens:
  """Unpickling it would create ``path`` (builtins.open(path, "w"))."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return builtins.open, (self.path, "w")


class _Shell:
  """Unpickling it would run ``touch path`` in a shell."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return os.system, (f"touch {self.path}",)


def _batch(rows=3, seed=0):
  """A CIFAR-10 batch as the official files hold it: uint8 rows, int labels, a bytes label, bytes filenames."""
  flat = np.random.default_rng(seed).integers(0, 256, size=(rows, 3072), dtype=np.uint8)
  return {b"batch_label": b"training batch 1 of 5", b"labels": [(seed + i) % 10 for i in range(rows)],
          b"data": flat, b"filenames": [f"img_{i}.png".encode() for i in range(rows)]}


def _write_cifar10(folder, batches, protocol=None):
  """The extracted cifar-10-batches-py folder with ``batches[f]`` (objects to pickle) as file ``f``."""
  folder.mkdir(parents=True, exist_ok=True)
  for f in data._CIFAR["cifar10"]["train"] + data._CIFAR["cifar10"]["test"]:
    (folder / f).write_bytes(pickle.dumps(batches.get(f, _batch()), protocol=protocol))
  return str(folder)


@pytest.mark.parametrize("payload", [_Opens, _Shell])
@pytest.mark.parametrize("where", ["in the dict", "as the whole file"])
def test_a_pickle_that_would_run_code_is_a_data_error_and_runs_nothing(tmp_path, payload, where):
  marker = tmp_path / "MARKER"
  evil = payload(str(marker))
  batch = {**_batch(), b"filenames": [evil]} if where == "in the dict" else evil
  folder = _write_cifar10(tmp_path / "cifar-10-batches-py", {"data_batch_2": batch})
  with pytest.raises(DataError, match="forbidden global") as info:
    load_dataset("cifar10", folder)
  assert os.path.join(folder, "data_batch_2") in str(info.value)
  assert not marker.exists()


def test_a_pickle_that_would_run_code_inside_the_tarball_names_the_member(tmp_path):
  marker = tmp_path / "MARKER"
  tarball = tmp_path / "cifar-10-python.tar.gz"
  with tarfile.open(tarball, "w:gz") as tar:
    for f in data._CIFAR["cifar10"]["train"] + data._CIFAR["cifar10"]["test"]:
      raw = pickle.dumps(_Opens(str(marker)) if f == "test_batch" else _batch())
      info = tarfile.TarInfo(f"cifar-10-batches-py/{f}")
      info.size = len(raw)
      tar.addfile(info, io.BytesIO(raw))
  with pytest.raises(DataError, match=r"forbidden global io\.open") as info:
    load_dataset("cifar10", str(tarball))
  assert f"{tarball}:test_batch" in str(info.value)
  assert not marker.exists()


def test_codecs_encode_is_admitted_only_as_python_writes_bytes(tmp_path):
  # A protocol-2 pickle of bytes calls _codecs.encode(str, 'latin1'); any other codec is refused.
  raw = pickle.dumps(_batch(), protocol=2).replace(b"latin1", b"rot13 ")
  assert b"rot13 " in raw
  folder = tmp_path / "cifar-10-batches-py"
  _write_cifar10(folder, {})
  (folder / "data_batch_1").write_bytes(raw)
  with pytest.raises(DataError, match="forbidden call _codecs.encode"):
    load_dataset("cifar10", str(folder))


def _python2_pickle(batch) -> bytes:
  """``batch`` as Python 2's cPickle and numpy 1 wrote the official files (protocol 2, byte strings as str)."""
  def s(b):
    return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<I", len(b))) + b

  def i(n):
    return b"J" + struct.pack("<i", n)

  def obj(x):
    if isinstance(x, bytes):
      return s(x)
    if isinstance(x, int):
      return i(x)
    if isinstance(x, list):
      return b"](" + b"".join(map(obj, x)) + b"e"
    assert x.dtype == np.uint8 and x.ndim == 2
    dtype = (b"cnumpy\ndtype\n" + s(b"u1") + i(0) + i(1) + b"\x87R(" + i(3) + s(b"|") + b"NNN" + i(-1) + i(-1) + i(0)
             + b"tb")
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + i(0) + b"\x85" + s(b"b") + b"\x87R(" + i(1)
            + i(x.shape[0]) + i(x.shape[1]) + b"\x86" + dtype + b"\x89" + s(x.tobytes()) + b"tb")

  return b"\x80\x02}(" + b"".join(obj(k) + obj(v) for k, v in batch.items()) + b"u."


def test_batches_as_python2_wrote_the_official_files_load(tmp_path):
  batches = {f: _batch(rows=2, seed=i) for i, f in enumerate(data._CIFAR["cifar10"]["train"] + ("test_batch",))}
  folder = tmp_path / "cifar-10-batches-py"
  _write_cifar10(folder, {})
  for f, b in batches.items():
    raw = _python2_pickle(b)
    assert b"_codecs" not in raw and b"numpy.core.multiarray" in raw
    (folder / f).write_bytes(raw)
  d = load_dataset("cifar10", str(folder))
  np.testing.assert_array_equal(d.test_images.transpose(0, 3, 1, 2).reshape(2, 3072), batches["test_batch"][b"data"])
  assert d.train_labels.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5]


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL])
def test_genuine_cifar_batches_still_load(tmp_path, protocol):
  batches = {f: _batch(rows=2 + i, seed=i) for i, f in enumerate(data._CIFAR["cifar10"]["train"] + ("test_batch",))}
  batches["data_batch_4"] = {**batches["data_batch_4"], b"batch_label": b"",  # b"" pickles as bytes() at <= 2
                             b"labels": np.asarray(batches["data_batch_4"][b"labels"], np.int64)}
  folder = _write_cifar10(tmp_path / "cifar-10-batches-py", batches, protocol=protocol)
  d = load_dataset("cifar10", folder)
  train = [batches[f] for f in data._CIFAR["cifar10"]["train"]]
  expected = np.concatenate([b[b"data"] for b in train]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  np.testing.assert_array_equal(d.train_images, expected)
  np.testing.assert_array_equal(d.train_labels, np.concatenate([b[b"labels"] for b in train]))
  np.testing.assert_array_equal(d.test_images[:, 0, 0, 0], batches["test_batch"][b"data"][:, 0])
  assert d.train_labels.dtype == np.int32 and d.num_train == sum(2 + i for i in range(5))


def test_a_cifar100_batch_with_its_official_keys_loads(tmp_path):
  folder = tmp_path / "cifar-100-python"
  folder.mkdir()
  for f, seed in (("train", 0), ("test", 1)):
    b = {b"filenames": [b"a.png", b"b.png"], b"batch_label": b"training batch 1 of 1",
         b"fine_labels": [99, seed], b"coarse_labels": [19, 0],
         b"data": np.full((2, 3072), seed, np.uint8)}
    (folder / f).write_bytes(pickle.dumps(b, protocol=2))
  d = load_dataset("cifar100", str(folder))
  assert d.train_labels.tolist() == [99, 0] and d.test_images.max() == 1


def test_a_batch_with_odd_contents_is_a_data_error(tmp_path):
  folder = tmp_path / "cifar-10-batches-py"
  _write_cifar10(folder, {"data_batch_1": {1: b"x", b"y": 2}, "data_batch_2": {b"data": [[1, 2], [3]],
                                                                                 b"labels": [0, 1]}})
  with pytest.raises(DataError, match="data_batch_1: expected a dict with keys"):
    load_dataset("cifar10", str(folder))
  _write_cifar10(folder, {"data_batch_2": {b"data": [[1, 2], [3]], b"labels": [0, 1]}})
  with pytest.raises(DataError, match="data_batch_2"):
    load_dataset("cifar10", str(folder))


# ----------------------------------------------------------------------------------------------- safetensors


def _st_bytes(header, blob: bytes) -> bytes:
  raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
  return struct.pack("<Q", len(raw)) + raw + blob


def _valid():
  """A hand-written file: a float32 [2, 3], a bfloat16 [2] and an int64 scalar, with metadata."""
  a = np.arange(6, dtype="<f4").reshape(2, 3)
  bf16 = (np.array([1.5, -2.0], "<f4").view("<u4") >> 16).astype("<u2")
  c = np.array(7, "<i8")
  header = {"__metadata__": {"format": "pt"},
            "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
            "b": {"dtype": "BF16", "shape": [2], "data_offsets": [24, 28]},
            "c": {"dtype": "I64", "shape": [], "data_offsets": [28, 36]}}
  return header, a.tobytes() + bf16.tobytes() + c.tobytes()


def test_a_valid_hand_written_safetensors_loads(tmp_path):
  path = tmp_path / "ok.safetensors"
  path.write_bytes(_st_bytes(*_valid()))
  out = read_safetensors(path)
  np.testing.assert_array_equal(out["a"], np.arange(6, dtype=np.float32).reshape(2, 3))
  np.testing.assert_array_equal(out["b"], np.array([1.5, -2.0], np.float32))
  assert out["c"].shape == () and out["c"] == 7 and sorted(out) == ["a", "b", "c"]


def _entry(name, **change):
  def edit(header, blob):
    header[name] = {**header[name], **change}
    return header, blob
  return edit


def _drop(name, key):
  def edit(header, blob):
    del header[name][key]
    return header, blob
  return edit


# Each case with the message the safetensors library gives for it (after "is not a valid safetensors file: Error
# while deserializing header: ")
BAD_HEADERS = {
    "missing data_offsets": (_drop("a", "data_offsets"), "missing field `data_offsets`"),
    "missing dtype": (_drop("b", "dtype"), "missing field `dtype`"),
    "a list header": (lambda h, b: ([h["a"]], b), "invalid type: sequence, expected struct HashMetadata"),
    "a string entry": (lambda h, b: ({**h, "a": "F32"}, b), 'invalid type: string "F32", expected struct TensorInfo'),
    "offsets past the data": (_entry("c", data_offsets=[28, 44]), "invalid shape, data type, or offset for tensor"),
    "negative offset": (_entry("a", data_offsets=[-4, 20]), "invalid value: integer `-4`, expected usize"),
    "end before begin": (_entry("a", data_offsets=[24, 0]), "invalid offset for tensor `a`"),
    "offsets not a pair": (_entry("a", data_offsets=[0]), "invalid length 1, expected a tuple of size 2"),
    "offsets not ints": (_entry("a", data_offsets=[0.0, 24.0]), "invalid type: floating point `0.0`, expected usize"),
    "overlapping tensors": (_entry("b", data_offsets=[20, 24]), "invalid offset for tensor `b`"),
    "size not dtype x shape": (_entry("a", shape=[2, 2]), "invalid shape, data type, or offset for tensor"),
    "size off for the dtype": (_entry("c", dtype="I32"), "invalid shape, data type, or offset for tensor"),
    "negative dimension": (_entry("a", shape=[-2, -3]), "invalid value: integer `-2`, expected usize"),
    "shape not a list": (_entry("a", shape="2x3"), 'invalid type: string "2x3", expected a sequence'),
    "bool dimension": (_entry("b", shape=[True, True]), "invalid type: boolean `true`, expected usize"),
    "unknown dtype": (_entry("a", dtype="F128"), "unknown variant `F128`"),
    "dtype not a string": (_entry("a", dtype=["F32"]), "invalid type: sequence, expected string or map"),
    "metadata not strings": (lambda h, b: ({**h, "__metadata__": {"n": 1}}, b),
                             "invalid type: integer `1`, expected a string"),
    "metadata a list": (lambda h, b: ({**h, "__metadata__": ["pt"]}, b), "invalid type: sequence, expected a map"),
    "not JSON": (lambda h, b: (b"{'a': 1}", b), "key must be a string"),
    "not UTF-8": (lambda h, b: (b'{"\xff": 1}', b), "invalid UTF-8 in header"),
    # the second "a" wins and leaves the first 24 bytes unclaimed: tensors must tile the data from its start
    "duplicate names": (lambda h, b: (json.dumps(h).replace('"b"', '"a"').encode(), b),
                        "invalid offset for tensor `a`"),
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_a_crafted_safetensors_header_is_an_error_naming_the_file(tmp_path, case):
  edit, message = BAD_HEADERS[case]
  path = tmp_path / "bad.safetensors"
  path.write_bytes(_st_bytes(*edit(*_valid())))
  with pytest.raises(PretrainedError) as info:
    read_safetensors(path)
  assert str(path) in str(info.value) and message in str(info.value)
  with pytest.raises(PretrainedError, match="bad.safetensors"):  # the same through the loader
    load_vit_weights(path, {"cls": np.zeros((1, 1, 4), np.float32)})


@pytest.mark.parametrize("raw,message", [
    (struct.pack("<Q", 1 << 40) + b"{}", "header too large"),
    (struct.pack("<Q", 3) + b"{}", "invalid header length"),
    (b"\x01\x00", "header too small"),
    (b"", "header too small"),
], ids=["length 2**40", "length 3", "2 bytes", "empty"])
def test_a_safetensors_header_length_past_the_file_is_an_error(tmp_path, raw, message):
  path = tmp_path / "short.safetensors"
  path.write_bytes(raw)
  with pytest.raises(PretrainedError, match="short.safetensors") as info:
    read_safetensors(path)
  assert message in str(info.value)


def test_an_unreadable_safetensors_path_is_an_error(tmp_path):
  with pytest.raises(PretrainedError, match="cannot read"):
    read_safetensors(tmp_path)  # a folder


# ----------------------------------------------------------------------------------------------- npz, msgpack


@pytest.mark.parametrize("damage", ["garbage", "truncated", "a single .npy", "pickled objects"])
def test_a_corrupt_npz_is_an_error_naming_the_file(tmp_path, damage):
  path = tmp_path / "model.npz"
  np.savez(path, a=np.arange(1000, dtype=np.float32), b=np.ones(3))
  if damage == "garbage":
    path.write_bytes(b"PK\x03\x04 this is not a zip archive")
  elif damage == "truncated":
    path.write_bytes(path.read_bytes()[:-300])
  elif damage == "a single .npy":
    with open(path, "wb") as fh:
      np.save(fh, np.ones(3))
  else:
    np.savez(path, a=np.array([{"x": 1}], dtype=object))
  with pytest.raises(PretrainedError, match="is not a NumPy .npz file") as info:
    read_npz(path)
  assert str(path) in str(info.value)
  with pytest.raises(PretrainedError, match="model.npz"):
    load_vit_weights(path, {"cls": np.zeros((1, 1, 4), np.float32)})


def test_a_valid_npz_still_loads(tmp_path):
  path = tmp_path / "model.npz"
  np.savez(path, **{"Transformer/x": np.arange(3.0)})
  np.testing.assert_array_equal(read_npz(path)["Transformer/x"], np.arange(3.0))


def test_a_corrupt_msgpack_or_checkpoint_folder_is_an_error_naming_it(tmp_path):
  path = tmp_path / "model.msgpack"
  path.write_bytes(b"\xc1\xc1 not msgpack")
  with pytest.raises(PretrainedError, match="model.msgpack"):
    read_flax(path)
  folder = tmp_path / "ckpt"
  folder.mkdir()
  (folder / "junk").write_bytes(b"nothing orbax wrote")
  with pytest.raises(PretrainedError, match="not a readable orbax checkpoint") as info:
    read_flax(folder)
  assert str(folder) in str(info.value)
