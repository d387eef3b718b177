"""Hidden-unit permutations: specs beside each model, applying them, weight matching, fixed points.

A network's function is unchanged when the hidden units of a layer are reordered and every weight that
reads or writes those units is reordered with them. A :class:`PermutationSpec` says which parameter axes
each such permutation acts on (the git-re-basin ``PermutationSpec``, Ainsworth et al. 2023):

* ``perm_to_axes[name]``: the ``(path, axis, inner)`` entries permutation ``name`` reorders. ``inner`` is
  ``None`` when the axis holds the units themselves, or ``C`` when the axis is a flattened ``(..., C)``
  layout whose last factor holds them (a dense layer reading a flattened ``H x W x C`` feature map).
* ``axes_to_perm[path]``: per axis of that parameter, the permutation acting on it (or ``None``), with its
  ``inner``: a tuple of ``(name, inner)`` or ``None`` per axis.
* ``sizes[name]``: the number of units.

A permutation is a dict ``{name: int array}``; applying it takes index ``perm[name][i]`` of the original to
position ``i``: ``aligned[..., i, ...] = params[..., perm[name][i], ...]``.

ResNets: one permutation per stage for the residual stream (``P_stage{s}``: the stage's block outputs,
its shortcut convolution and norm outputs, and the input of the next stage and of the head) and one inner
permutation per block (``P_stage{s}_block{b}_inner``: ``conv1``'s outputs, ``norm1``, ``conv2``'s inputs).
A LayerNorm over channels commutes with a channel permutation once its scale and bias are permuted.
The MLP has ``P_dense{i}`` per hidden layer; the CNN ``P_conv{i}`` per convolution (max-pooling commutes) and
``P_dense`` for the dense layer, whose input is the last feature map flattened as ``H x W x C``. Transformers (ViT,
BERT, OLMo): the residual stream, each MLP's hidden units, each attention layer's heads and the units within a
head (:func:`vit_spec`, :func:`bert_spec`, :func:`olmo_spec`).

Two ways to find the permutation of network B's units that best lines them up with network A's:
:func:`weight_matching` (the parameters alone) and :func:`activation_matching` (the units' activations on the same
inputs: per permutation, the cross-correlation of A's and B's units over the examples, one linear assignment).
"""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from butterfly_jax.core import tree_math


class PermutationError(ValueError):
  """A spec does not fit the parameters it is used with."""


@dataclasses.dataclass(frozen=True)
class PermutationSpec:
  perm_to_axes: dict   # name -> tuple of (path, axis, inner)
  axes_to_perm: dict   # path -> tuple over axes of (name, inner) or None
  sizes: dict          # name -> number of units
  # groups whose units are blocks of other units: name -> the permutations of the units inside each block, on
  # the axis right after this one's wherever it appears (a ViT's attention heads -> query/key and value units);
  # None among them: on some axes the units inside stay in place (no permutation follows; OLMo's query/key
  # units, whose order fixes their rotary frequencies)
  blocks: dict = dataclasses.field(default_factory=dict)

  @property
  def names(self) -> list[str]:
    return list(self.perm_to_axes)


class _Builder:
  """Collects which permutation acts on which axis, parameter by parameter (only paths that exist)."""

  def __init__(self, params):
    self.flat = tree_math.flat_dict(params)
    self.axes = {}
    self.blocks = {}

  def set(self, path: str, *per_axis):
    """``per_axis``: a permutation name, ``(name, inner)`` or ``None`` for each axis of ``path``."""
    if path not in self.flat:
      return
    ndim = np.ndim(self.flat[path])
    if len(per_axis) != ndim:
      raise PermutationError(f"permutation spec: {path} has {ndim} axes, the spec names {len(per_axis)}")
    self.axes[path] = tuple((p, None) if isinstance(p, str) else p for p in per_axis)

  def dense(self, layer: str, p_in, p_out):
    self.set(f"{layer}/kernel", p_in, p_out)
    self.set(f"{layer}/bias", p_out)

  def conv(self, layer: str, p_in, p_out):
    self.set(f"{layer}/kernel", None, None, p_in, p_out)
    self.set(f"{layer}/bias", p_out)

  def norm(self, layer: str, p):
    self.set(f"{layer}/scale", p)
    self.set(f"{layer}/bias", p)

  def build(self) -> PermutationSpec:
    perm_to_axes, sizes = {}, {}
    for path, per_axis in self.axes.items():
      shape = np.shape(self.flat[path])
      for axis, entry in enumerate(per_axis):
        if entry is None:
          continue
        name, inner = entry
        n = inner if inner is not None else shape[axis]
        if inner is not None and shape[axis] % inner:
          raise PermutationError(f"permutation spec: axis {axis} of {path} ({shape[axis]}) is not a multiple "
                                 f"of {name}'s {inner} units")
        if sizes.setdefault(name, n) != n:
          raise PermutationError(f"permutation spec: {name} acts on {sizes[name]} units but axis {axis} of "
                                 f"{path} has {n}")
        perm_to_axes.setdefault(name, []).append((path, axis, inner))
    missing = sorted(set(self.flat) - set(self.axes))
    if missing:
      raise PermutationError(f"permutation spec: no entry for parameters {missing}")
    blocks = {k: tuple(v) for k, v in self.blocks.items() if k in sizes}
    for name, inner in blocks.items():  # every axis of a block permutation is followed by one of its inner ones
      for path, axis, _ in perm_to_axes[name]:
        nxt = self.axes[path][axis + 1] if axis + 1 < len(self.axes[path]) else None
        if (nxt[0] if nxt is not None else None) not in inner:
          raise PermutationError(f"permutation spec: {name} blocks {inner}, but axis {axis + 1} of {path} holds "
                                 f"{nxt[0] if nxt else 'no permutation'}")
    return PermutationSpec({k: tuple(v) for k, v in perm_to_axes.items()}, dict(self.axes), sizes, blocks)


def _indexed(flat: dict, pattern: str) -> list[int]:
  rx = re.compile(pattern)
  return sorted({int(m.group(1)) for p in flat if (m := rx.match(p))})


def resnet_spec(params) -> PermutationSpec:
  """Spec of the ResNets: :class:`~butterfly_jax.models.resnet.ResNet` (basic blocks, any depth) and
  :class:`~butterfly_jax.models.resnet50.ResNet50` (bottlenecks: ``conv3``), with or without norms. The stem has
  its own permutation (``P_stem``) where the first block projects its shortcut, else it is stage 1's stream."""
  b = _Builder(params)
  stages = _indexed(b.flat, r"stage(\d+)_block")
  stem = "P_stem" if "stage1_block0/shortcut_conv/kernel" in b.flat else "P_stage1"
  b.conv("conv_in", None, stem)
  b.norm("norm_in", stem)
  prev = stem
  for s in stages:
    stream = f"P_stage{s}"
    for blk in _indexed(b.flat, rf"stage{s}_block(\d+)/"):
      layer, inner = f"stage{s}_block{blk}", f"P_stage{s}_block{blk}_inner"
      bottleneck = f"{layer}/conv3/kernel" in b.flat
      inner2 = f"{inner}2" if bottleneck else stream
      b.conv(f"{layer}/conv1", prev, inner)
      b.norm(f"{layer}/norm1", inner)
      b.conv(f"{layer}/conv2", inner, inner2)
      b.norm(f"{layer}/norm2", inner2)
      b.conv(f"{layer}/conv3", inner2, stream)
      b.norm(f"{layer}/norm3", stream)
      b.conv(f"{layer}/shortcut_conv", prev, stream)
      b.norm(f"{layer}/shortcut_norm", stream)
      prev = stream
  b.dense("head", prev, None)
  return b.build()


def mlp_spec(params) -> PermutationSpec:
  """Spec of :class:`butterfly_jax.models.simple.MLP`."""
  b = _Builder(params)
  prev = None
  for i in _indexed(b.flat, r"dense(\d+)/"):
    b.dense(f"dense{i}", prev, f"P_dense{i}")
    b.norm(f"norm{i}", f"P_dense{i}")
    prev = f"P_dense{i}"
  b.dense("head", prev, None)
  return b.build()


def cnn_spec(params) -> PermutationSpec:
  """Spec of :class:`butterfly_jax.models.simple.SmallCNN`."""
  b = _Builder(params)
  prev = None
  convs = _indexed(b.flat, r"conv(\d+)/")
  for i in convs:
    b.conv(f"conv{i}", prev, f"P_conv{i}")
    b.norm(f"norm{i}", f"P_conv{i}")
    prev = f"P_conv{i}"
  channels = np.shape(b.flat[f"conv{convs[-1]}/kernel"])[-1]
  b.dense("dense", (prev, channels), "P_dense")
  b.dense("head", "P_dense", None)
  return b.build()


def _attention(b: _Builder, layer: str, stream: str, heads: str, qk, v) -> None:
  """Multi-head attention ``layer/{query,key,value,out}`` (kernels ``[width, heads, head_dim]`` and ``[heads,
  head_dim, width]``): the heads move as blocks with their units inside, ``qk`` shared by query and key (their
  dot product is unchanged; None: held in place) and ``v`` by value and output."""
  b.blocks[heads] = (qk, v)
  for name, inner in (("query", qk), ("key", qk), ("value", v)):
    b.set(f"{layer}/{name}/kernel", stream, heads, inner)
    b.set(f"{layer}/{name}/bias", heads, inner)
  b.set(f"{layer}/out/kernel", heads, v, stream)
  b.set(f"{layer}/out/bias", stream)


def vit_spec(params) -> PermutationSpec:
  """Spec of :class:`butterfly_jax.models.vit.ViT`: the residual stream (``P_stream``: embedding, class token,
  position embeddings, every norm, the attention output and second MLP layer, the head's input) and, per block,
  the MLP's hidden units (``P_block{i}_mlp``), the attention heads (``P_block{i}_heads``), and the units within
  a head shared by query and key (``P_block{i}_qk``: their dot product is unchanged) and by value and output
  (``P_block{i}_v``)."""
  b = _Builder(params)
  s = "P_stream"
  b.conv("embed", None, s)
  b.set("cls", None, None, s)
  b.set("pos_embedding", None, None, s)
  for i in _indexed(b.flat, r"block(\d+)/"):
    blk = f"block{i}"
    b.norm(f"{blk}/norm1", s)
    _attention(b, f"{blk}/attn", s, f"P_block{i}_heads", f"P_block{i}_qk", f"P_block{i}_v")
    b.norm(f"{blk}/norm2", s)
    b.dense(f"{blk}/fc1", s, f"P_block{i}_mlp")
    b.dense(f"{blk}/fc2", f"P_block{i}_mlp", s)
  b.norm("norm", s)
  b.dense("head", s, None)
  return b.build()


def bert_spec(params) -> PermutationSpec:
  """Spec of :class:`butterfly_jax.models.bert.BERT`: the residual stream (``P_stream``: the three embeddings'
  width, every LayerNorm, the attention output and ``fc2``, the pooler's input), per layer the MLP's hidden units
  (``P_layer{i}_mlp``), the heads (``P_layer{i}_heads``) and the units within a head (``P_layer{i}_qk``,
  ``P_layer{i}_v``, as the ViT's), and the pooler's units (``P_pooler``: tanh is elementwise)."""
  b = _Builder(params)
  s = "P_stream"
  for table in ("word", "position", "token_type"):
    b.set(f"embed/{table}", None, s)
  b.norm("embed_norm", s)
  for i in _indexed(b.flat, r"layer(\d+)/"):
    blk = f"layer{i}"
    _attention(b, f"{blk}/attn", s, f"P_layer{i}_heads", f"P_layer{i}_qk", f"P_layer{i}_v")
    b.norm(f"{blk}/attn_norm", s)
    b.dense(f"{blk}/fc1", s, f"P_layer{i}_mlp")
    b.dense(f"{blk}/fc2", f"P_layer{i}_mlp", s)
    b.norm(f"{blk}/mlp_norm", s)
  b.dense("pooler", s, "P_pooler")
  b.dense("head", "P_pooler", None)
  return b.build()


def olmo_spec(params) -> PermutationSpec:
  """Spec of :class:`butterfly_jax.models.olmo.OLMo`: the residual stream (``P_stream``: the embedding's width,
  the attention output, ``down``, the head's input; the norms have no parameters and commute with it), per layer
  the SwiGLU's hidden units (``P_layer{i}_mlp``: ``gate`` and ``up`` outputs, ``down`` input), the heads
  (``P_layer{i}_heads``) and the value/output units within a head (``P_layer{i}_v``). The query/key units within a
  head stay in place: rotary embeddings rotate unit ``u`` with ``u + head_dim/2`` at a frequency set by ``u``, so
  reordering them changes the attention scores."""
  b = _Builder(params)
  s = "P_stream"
  b.set("embed", None, s)
  for i in _indexed(b.flat, r"layer(\d+)/"):
    blk, mlp = f"layer{i}", f"P_layer{i}_mlp"
    _attention(b, f"{blk}/attn", s, f"P_layer{i}_heads", None, f"P_layer{i}_v")
    b.dense(f"{blk}/gate", s, mlp)
    b.dense(f"{blk}/up", s, mlp)
    b.dense(f"{blk}/down", mlp, s)
  b.dense("head", s, None)
  return b.build()


SPECS = {"resnet20": resnet_spec, "resnet": resnet_spec, "resnet50": resnet_spec, "resnet34": resnet_spec,
         "mlp": mlp_spec, "cnn": cnn_spec, "vit": vit_spec, "vit_b16": vit_spec, "bert": bert_spec,
         "olmo": olmo_spec}


def spec_for(model_name: str, params, **model_kwargs) -> PermutationSpec:
  """The permutation spec of model ``model_name`` for ``params`` (one network, not a stacked family)."""
  del model_kwargs  # the spec follows from the parameters' names and shapes
  if model_name not in SPECS:
    raise PermutationError(f"model.name: no permutation spec for {model_name!r}; specs exist for "
                           f"{', '.join(SPECS)}")
  return SPECS[model_name](params)


def _index(size: int, perm, inner):
  """Indices along an axis of ``size`` for ``perm`` (acting on the last factor ``inner`` if given)."""
  perm = np.asarray(perm)
  if inner is None:
    return perm
  return (np.arange(size // inner)[:, None] * inner + perm[None, :]).reshape(-1)


def _permute_array(x, per_axis, perm, skip=()):
  """``x`` reordered by ``perm`` on every axis of ``per_axis`` that has a permutation, except those in ``skip``."""
  take = np.take if isinstance(x, np.ndarray) else jnp.take
  for axis, entry in enumerate(per_axis):
    if entry is None or axis in skip:
      continue
    name, inner = entry
    x = take(x, _index(x.shape[axis], perm[name], inner), axis=axis)
  return x


def apply_permutation(spec: PermutationSpec, perm: dict, params):
  """``params`` with every axis of ``spec`` reordered by ``perm`` (a pure function; same tree structure)."""
  flat = tree_math.flat_dict(params)
  missing = set(spec.axes_to_perm) ^ set(flat)
  if missing:
    raise PermutationError(f"apply_permutation: the spec and the parameters differ in {sorted(missing)}")
  out = {path: _permute_array(x, spec.axes_to_perm[path], perm) for path, x in flat.items()}
  return tree_math.unflatten_like(params, out)


def identity_permutation(spec: PermutationSpec) -> dict:
  return {name: np.arange(n) for name, n in spec.sizes.items()}


def invert_permutation(perm: dict) -> dict:
  return {name: np.argsort(np.asarray(p)) for name, p in perm.items()}


def _derangement(rng: np.random.Generator, n: int) -> np.ndarray:
  """A uniformly random permutation of ``range(n)`` with no fixed point (n >= 2), by rejection."""
  while True:
    p = rng.permutation(n)
    if not np.any(p == np.arange(n)):
      return p


def _numpy_rng(key) -> np.random.Generator:
  return np.random.default_rng(np.asarray(jax.random.key_data(key)).astype(np.uint32).tolist())


def random_permutation(key, spec: PermutationSpec, fixed_fraction: float = 0.0) -> dict:
  """A random permutation leaving ``round(fixed_fraction * n)`` of each permutation's ``n`` units in place
  (the others moved, none to itself). With one unit left to move, one more is moved instead."""
  if not 0.0 <= fixed_fraction <= 1.0:
    raise PermutationError(f"fixed_fraction: must lie in [0, 1], got {fixed_fraction}")
  out = {}
  for i, (name, n) in enumerate(spec.sizes.items()):
    rng = _numpy_rng(jax.random.fold_in(key, i))
    moved = n - int(round(fixed_fraction * n))
    if moved == 1:
      moved = 2 if n >= 2 else 0
    p = np.arange(n)
    chosen = np.sort(rng.choice(n, size=moved, replace=False))
    if moved:
      p[chosen] = chosen[_derangement(rng, moved)]
    out[name] = p
  return out


def fixed_point_fractions(perm: dict) -> dict:
  """Per permutation: the fraction of its units mapped to themselves."""
  return {name: float(np.mean(np.asarray(p) == np.arange(len(p)))) for name, p in perm.items()}


def fixed_point_fraction(perm: dict) -> float:
  """The fraction of all hidden units (over every permutation) that ``perm`` leaves in place."""
  fixed = sum(int(np.sum(np.asarray(p) == np.arange(len(p)))) for p in perm.values())
  total = sum(len(p) for p in perm.values())
  return fixed / total if total else 1.0


def _unit_rows(x: np.ndarray, axis: int, inner):
  """``x`` as a matrix with one row per unit of ``axis`` (every other entry in the columns)."""
  x = np.moveaxis(x, axis, 0)
  if inner is None:
    return x.reshape(x.shape[0], -1)
  x = x.reshape(x.shape[0] // inner, inner, -1)
  return np.swapaxes(x, 0, 1).reshape(inner, -1)


def _assignment(spec, name, a, b, perm):
  """The best ``perm[name]`` with the others held fixed: (its units' order, the score now, the score with it)."""
  n = spec.sizes[name]
  score = np.zeros((n, n))
  for path, axis, inner in spec.perm_to_axes[name]:
    wb = _permute_array(b[path], spec.axes_to_perm[path], perm, skip=(axis,))
    score += _unit_rows(a[path], axis, inner) @ _unit_rows(wb, axis, inner).T
  _, cols = linear_sum_assignment(score, maximize=True)
  return cols, score[np.arange(n), perm[name]].sum(), score[np.arange(n), cols].sum()


def _block_move(spec, name, a, b, perm) -> bool:
  """A joint move of the blocks ``name`` (a ViT's heads) and the permutations inside them; True if taken.

  Matching heads with the units inside them held in their current order stalls when those are wrong (the
  head scores are then scrambled), and matching the units inside with the heads wrong stalls too. So block
  ``j`` of ``b`` is scored against block ``i`` of ``a`` with its inner units in their *best* order for that
  pair (one small assignment per pair and inner permutation); the blocks are assigned on those scores, then
  each inner permutation given them. The move is taken only if it strictly raises the objective over the
  parameters it touches. Inner units held in place (None in ``spec.blocks[name]``) are scored unit against the
  same unit.
  """
  inner_names = spec.blocks[name]
  n = spec.sizes[name]
  pair = {g: 0.0 for g in inner_names}
  for path, axis, _ in spec.perm_to_axes[name]:
    per_axis = spec.axes_to_perm[path]
    g = per_axis[axis + 1][0] if per_axis[axis + 1] is not None else None
    wb = _permute_array(b[path], per_axis, perm, skip=(axis, axis + 1))
    wa = np.moveaxis(a[path], (axis, axis + 1), (0, 1))
    d = wa.shape[1]
    wb = np.moveaxis(wb, (axis, axis + 1), (0, 1)).reshape(n * d, -1)
    m = (wa.reshape(n * d, -1) @ wb.T).reshape(n, d, n, d)  # [i, u, j, v]: unit u of a's block i . unit v of b's j
    pair[g] = pair[g] + m.transpose(0, 2, 1, 3)
  score = np.zeros((n, n))
  for g in inner_names:
    if g is None:
      score += np.einsum("ijuu->ij", pair[g])
      continue
    for i in range(n):
      for j in range(n):
        rows, cols = linear_sum_assignment(pair[g][i, j], maximize=True)
        score[i, j] += pair[g][i, j][rows, cols].sum()
  _, heads = linear_sum_assignment(score, maximize=True)
  trial = dict(perm, **{name: heads})
  moved = (name, *(g for g in inner_names if g is not None))
  for g in moved[1:]:
    trial[g] = _assignment(spec, g, a, b, trial)[0]
  touched = {path for nm in moved for path, _, _ in spec.perm_to_axes[nm]}
  old, new = _objective(spec, a, b, perm, touched), _objective(spec, a, b, trial, touched)
  if new > old + 1e-12 * max(abs(old), 1.0):
    perm.update({nm: trial[nm] for nm in moved})
    return True
  return False


def _objective(spec, a, b, perm, paths) -> float:
  """Sum over ``paths`` of <a, b permuted by ``perm``>."""
  return float(sum(np.vdot(a[p], _permute_array(b[p], spec.axes_to_perm[p], perm)) for p in paths))


def weight_matching(key, spec: PermutationSpec, params_a, params_b, max_iter: int = 100, init_perm=None,
                    bias: bool = False):
  """The permutation of ``params_b``'s units that best matches ``params_a`` (Git Re-Basin weight matching).

  Maximises sum over parameters of <a, permuted b> (equivalently minimises the L2 distance) by coordinate
  descent; ``bias=False`` leaves every parameter whose path contains ``bias`` (norm biases too, not norm
  scales) out of that sum, as the authors' ``weight_matching`` does (``if "bias" in wk: continue``); the
  permutation still moves them. The descent: each round visits the permutations in an order drawn from ``fold_in(key, round)`` and solves each
  as a linear assignment with the others held fixed, accepting it only if it strictly improves; it stops after
  a round without improvement or ``max_iter`` rounds. Starting from the identity (or ``init_perm``), the
  aligned distance therefore never exceeds the starting one. Apply the result with :func:`apply_permutation`.
  Runs on the host in float64.
  """
  return weight_matching_rounds(key, spec, params_a, params_b, max_iter, init_perm, bias)[0]


def weight_matching_rounds(key, spec: PermutationSpec, params_a, params_b, max_iter: int = 100, init_perm=None,
                           bias: bool = False):
  """:func:`weight_matching`, also returning the number of rounds it ran."""
  # a bias left out of the cost: zeros in a, so it adds nothing to any <a, permuted b>
  a = {p: np.zeros(np.shape(x)) if not bias and "bias" in p else np.asarray(x, np.float64)
       for p, x in tree_math.flat_dict(params_a).items()}
  b = {p: np.asarray(x, np.float64) for p, x in tree_math.flat_dict(params_b).items()}
  if set(a) != set(spec.axes_to_perm) or set(b) != set(a):
    raise PermutationError("weight_matching: params_a, params_b and the spec must have the same parameters")
  perm = {n: np.asarray(p).copy() for n, p in (init_perm or identity_permutation(spec)).items()}
  names = spec.names
  for it in range(max_iter):
    improved = False
    order = np.asarray(jax.random.permutation(jax.random.fold_in(key, it), len(names)))
    for i in order:
      name = names[i]
      if name in spec.blocks and _block_move(spec, name, a, b, perm):
        improved = True
        continue
      cols, old, new = _assignment(spec, name, a, b, perm)
      if new > old + 1e-12 * max(abs(old), 1.0):
        perm[name] = cols
        improved = True
    if not improved:
      break
  return perm, it + 1 if max_iter else 0


ACTIVATION_KERNELS = ("correlation", "inner_product")
# added to the diagonal of an activation-matching score matrix: of assignments whose totals tie (units with no
# signal, such as ReLUs dead on every example, score 0 against every unit), the one leaving units in place wins
TIE_BREAK = 1e-9


class ActivationSums:
  """Running float64 sums over examples of two networks' paired activations: per permutation, per activation
  tensor it acts on, enough for the cross-correlation (or inner-product) matrix of A's units against B's.

  :meth:`update` takes one batch, ``{name: array or sequence of arrays}`` per network, each array's last axis the
  units and every other axis examples (a feature map's positions count as examples, as in Git Re-Basin); the same
  names, tensors and shapes in both. The sums are shifted by each unit's first value (exactly constant units then
  sum to exactly 0, and no large mean cancels), so any number of batches can be streamed through.
  """

  def __init__(self):
    self.n = {}      # name -> examples summed, per tensor
    self._sums = {}  # name -> per tensor: shift_a, shift_b, sa, sb, saa, sbb, sab

  def update(self, acts_a: dict, acts_b: dict) -> None:
    if set(acts_a) != set(acts_b):
      raise PermutationError(f"activation_matching: the two networks' activations name different permutations: "
                             f"{sorted(set(acts_a) ^ set(acts_b))}")
    for name in acts_a:
      xs, ys = _tensors(acts_a[name]), _tensors(acts_b[name])
      if len(xs) != len(ys):
        raise PermutationError(f"activation_matching: {name} has {len(xs)} activation tensors in one network and "
                               f"{len(ys)} in the other")
      sums = self._sums.setdefault(name, [None] * len(xs))
      if len(sums) != len(xs):
        raise PermutationError(f"activation_matching: {name} had {len(sums)} activation tensors, now {len(xs)}")
      counts = self.n.setdefault(name, [0] * len(xs))
      for i, (x, y) in enumerate(zip(xs, ys)):
        if x.shape != y.shape:
          raise PermutationError(f"activation_matching: {name}'s activations differ in shape: {x.shape} and "
                                 f"{y.shape}")
        x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
        if not len(x):
          continue
        if sums[i] is None:
          sums[i] = {"shift_a": x[0].astype(np.float64), "shift_b": y[0].astype(np.float64),
                     **{k: 0.0 for k in ("sa", "sb", "saa", "sbb", "sab")}}
        s = sums[i]
        for start in range(0, len(x), _ROWS):  # float64 copies of at most _ROWS rows at a time
          a = x[start:start + _ROWS].astype(np.float64) - s["shift_a"]
          b = y[start:start + _ROWS].astype(np.float64) - s["shift_b"]
          s["sa"] = s["sa"] + a.sum(0)
          s["sb"] = s["sb"] + b.sum(0)
          s["saa"] = s["saa"] + np.einsum("ij,ij->j", a, a)
          s["sbb"] = s["sbb"] + np.einsum("ij,ij->j", b, b)
          s["sab"] = s["sab"] + a.T @ b
        counts[i] += len(x)

  def scores(self, kernel: str = "correlation") -> dict:
    """``{name: [units of A, units of B]}``, float64: per activation tensor ``correlation``, the Pearson
    correlation over the examples (a unit constant on them correlates 0 with every unit), or ``inner_product``,
    the mean of ``a_i * b_j`` (the authors' ``outer_product`` kernel); averaged over the tensors a permutation
    acts on (a ResNet stage's block outputs)."""
    if kernel not in ACTIVATION_KERNELS:
      raise PermutationError(f"activation_matching: unknown kernel {kernel!r}; allowed: "
                             f"{', '.join(ACTIVATION_KERNELS)}")
    out = {}
    for name, sums in self._sums.items():
      mats = []
      for s, n in zip(sums, self.n[name]):
        if s is None:
          raise PermutationError(f"activation_matching: no examples of {name}'s activations")
        ma, mb = s["sa"] / n, s["sb"] / n
        cov = s["sab"] / n - np.outer(ma, mb)  # shifting changes no covariance
        if kernel == "inner_product":  # E[(a' + shift_a)(b' + shift_b)]
          mats.append(cov + np.outer(ma + s["shift_a"], mb + s["shift_b"]))
          continue
        std_a = np.sqrt(np.maximum(s["saa"] / n - ma * ma, 0.0))
        std_b = np.sqrt(np.maximum(s["sbb"] / n - mb * mb, 0.0))
        inv_a = np.divide(1.0, std_a, out=np.zeros_like(std_a), where=std_a > 0)
        inv_b = np.divide(1.0, std_b, out=np.zeros_like(std_b), where=std_b > 0)
        mats.append(np.clip(cov * inv_a[:, None] * inv_b[None, :], -1.0, 1.0))
      out[name] = sum(mats) / len(mats)
    return out


_ROWS = 1 << 16


def _tensors(value) -> list:
  """One permutation's activations: an array, or a sequence of arrays (several tensors the permutation acts on)."""
  if isinstance(value, (list, tuple)):
    return [np.asarray(v) for v in value]
  return [np.asarray(value)]


def assign_units(spec: PermutationSpec, scores: dict) -> dict:
  """The permutation that maximises each ``scores[name]``'s total over matched pairs (``[i, j]``: unit ``i`` of A
  against unit ``j`` of B), one linear assignment per permutation; ties (to :data:`TIE_BREAK`) go to units left in
  place. In :func:`apply_permutation`'s convention: B's unit ``perm[name][i]`` moves to position ``i``."""
  if spec.blocks:
    raise PermutationError(f"activation_matching: permutations of blocks ({', '.join(spec.blocks)}: attention heads) "
                           "are not supported; use weight_matching")
  if set(scores) != set(spec.names):
    missing, unknown = sorted(set(spec.names) - set(scores)), sorted(set(scores) - set(spec.names))
    raise PermutationError(f"activation_matching: the activations and the spec name different permutations: "
                           f"missing {missing}, unknown {unknown}")
  perm = {}
  for name in spec.names:
    n = spec.sizes[name]
    score = np.asarray(scores[name], np.float64)
    if score.shape != (n, n):
      raise PermutationError(f"activation_matching: {name} permutes {n} units, its activations have "
                             f"{score.shape[0]} and {score.shape[1]}")
    _, cols = linear_sum_assignment(score + TIE_BREAK * np.eye(n), maximize=True)
    perm[name] = cols
  return perm


def activation_matching(spec: PermutationSpec, acts_a: dict, acts_b: dict, kernel: str = "correlation") -> dict:
  """The permutation of network B's units that best matches network A's by their activations on the same inputs
  (Git Re-Basin's activation matching, Ainsworth et al. 2023; the authors' ``activation_matching``).

  ``acts_a``, ``acts_b``: ``{permutation name: array [..., units]}`` (or a sequence of arrays per name, every
  tensor the permutation acts on), every axis but the last one examples, for every permutation of ``spec``
  (:func:`butterfly_jax.models.make_activations` gives them for the models that have them). Per permutation, the
  units' cross-correlation over the examples (``kernel``: ``correlation``, or the authors' ``inner_product``;
  :meth:`ActivationSums.scores`) and one linear assignment maximising its total (:func:`assign_units`). Pure; on
  the host in float64. Apply the result with :func:`apply_permutation`. For more examples than fit at once, stream
  them through an :class:`ActivationSums` and call :func:`assign_units` on its scores.
  """
  sums = ActivationSums()
  sums.update(acts_a, acts_b)
  return assign_units(spec, sums.scores(kernel))
