"""``create_model(name, key, input_shape, num_classes, **kwargs) -> (apply_fn, params, spec)``."""

from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp

from butterfly_jax.core.permutations import spec_for
from butterfly_jax.models.bert import BERT
from butterfly_jax.models.olmo import OLMo
from butterfly_jax.models.resnet import ResNet
from butterfly_jax.models.resnet50 import ResNet50
from butterfly_jax.models.simple import MLP, SmallCNN
from butterfly_jax.models.vit import ViT

MODELS = {
    "resnet20": lambda num_classes, **kw: ResNet(num_classes=num_classes, depth=20, **kw),
    "resnet": lambda num_classes, **kw: ResNet(num_classes=num_classes, **kw),
    "resnet50": lambda num_classes, **kw: ResNet50(num_classes=num_classes, **kw),
    # basic blocks (3, 4, 6, 3), 64w channels first: what the authors' code builds as "resnet50-64"
    "resnet34": lambda num_classes, **kw: ResNet(num_classes=num_classes, **{"stages": (3, 4, 6, 3), "base": 64, **kw}),
    "mlp": lambda num_classes, **kw: MLP(num_classes=num_classes, **kw),
    "cnn": lambda num_classes, **kw: SmallCNN(num_classes=num_classes, **kw),
    "vit": lambda num_classes, **kw: ViT(num_classes=num_classes, **kw),
    "vit_b16": lambda num_classes, **kw: ViT(num_classes=num_classes, **{**VIT_B16, **kw}),
    "bert": lambda num_classes, **kw: BERT(num_classes=num_classes, **kw),
    "olmo": lambda num_classes, **kw: OLMo(num_classes=num_classes, **kw),
}
VIT_B16 = dict(patch=16, depth=12, width=768, heads=12, mlp_dim=3072)
# The keyword arguments (``model.kwargs``) each model takes; :func:`butterfly_jax.run.spec.check_model_kwargs` checks them
# before any compute. ``resnet20`` and ``resnet34`` fix their layout (depth, or stages and base): only ``resnet``
# takes ``depth``, ``stages`` and ``base``.
MODEL_KWARGS = {
    "resnet20": ("width", "norm", "conv"),
    "resnet": ("depth", "width", "norm", "conv", "stages", "base"),
    "resnet50": ("width", "norm", "conv"),
    "resnet34": ("width", "norm", "conv"),
    "mlp": ("hidden", "norm"),
    "cnn": ("channels", "dense", "norm", "conv", "pool"),
    "vit": ("patch", "depth", "width", "heads", "mlp_dim", "image_size"),
    "vit_b16": ("patch", "depth", "width", "heads", "mlp_dim", "image_size"),
    "bert": ("vocab_size", "hidden", "layers", "heads", "intermediate", "max_positions", "type_vocab_size",
             "layer_norm_eps", "hidden_act", "dropout", "attention_dropout"),
    "olmo": ("vocab_size", "hidden", "layers", "heads", "intermediate", "max_positions", "rope_theta", "clip_qkv",
             "hidden_act"),
}
# The dtype of each model's input where it is not float32 (images): the text models read one int32 array
# [B, 3, L] of token ids, token type ids and attention mask (butterfly_jax/models/text.py), input_shape (3, L).
INPUT_DTYPES = {"bert": jnp.int32, "olmo": jnp.int32}
TEXT_MODELS = tuple(INPUT_DTYPES)

ModelFn = Callable[[Any, jax.Array], tuple[jax.Array, dict]]


def input_dtype(name: str):
  """The dtype of model ``name``'s input ``x``: int32 for the text models, float32 for the others."""
  return INPUT_DTYPES.get(name, jnp.float32)


def _dummy(name: str, input_shape):
  """One example of ``name``'s input, zeros of its shape and dtype, for tracing."""
  return jnp.zeros((1, *tuple(input_shape)), input_dtype(name))


def build_module(name: str, num_classes: int, **model_kwargs):
  """The flax module for ``name``; unknown names and arguments raise a ValueError naming the field."""
  if name not in MODELS:
    raise ValueError(f"model.name: unknown model {name!r}; allowed: {', '.join(MODELS)}")
  try:
    return MODELS[name](num_classes, **model_kwargs)
  except TypeError as e:
    raise ValueError(f"model: bad arguments {sorted(model_kwargs)} for model {name!r}: {e}") from None


def make_model(name: str, input_shape, num_classes: int, **model_kwargs):
  """``(apply_fn, init_fn)``: ``apply_fn(params, x, stats=None, dropout_key=None) -> (logits, features)``,
  ``init_fn(key) -> params``.

  ``params`` are plain nested dicts; ``init_fn`` is jitted and pure in its key. ``stats`` is only for
  models with BatchNorm (``model.norm="batchnorm"``): their normalisation statistics (from
  :func:`make_moments`); without it such a model normalises with each batch's own moments (training).
  ``dropout_key``: a model with dropout (:func:`has_dropout`) applies it with this key (training); without
  one, or for any other model, the call is deterministic.
  """
  module = build_module(name, num_classes, **model_kwargs)
  dummy = _dummy(name, input_shape)
  dropout = has_dropout(name, **model_kwargs)

  @jax.jit
  def init_fn(key):
    return _plain(module.init(key, dummy)["params"])

  def apply_fn(params, x, stats=None, dropout_key=None):
    variables = {"params": params} if stats is None else {"params": params, "batch_stats": stats}
    if dropout and dropout_key is not None:
      return module.apply(variables, x, deterministic=False, rngs={"dropout": dropout_key})
    return module.apply(variables, x)

  return apply_fn, init_fn


def has_dropout(name: str, **model_kwargs) -> bool:
  """Whether the model applies dropout in training: BERT with ``dropout`` or ``attention_dropout`` above 0 (their
  default 0.1 each, BERT-base's)."""
  if name != "bert":
    return False
  return any(model_kwargs.get(k, 0.1) > 0 for k in ("dropout", "attention_dropout"))


def make_moments(name: str, input_shape, num_classes: int, **model_kwargs):
  """``moments_fn(params, x) -> {"mean", "var"} per BatchNorm layer`` (the batch's own moments of each
  layer's input, as in training), or None for a model without BatchNorm."""
  module = build_module(name, num_classes, **model_kwargs)
  dummy = _dummy(name, input_shape)
  shapes = jax.eval_shape(module.init, jax.random.key(0), dummy)
  if "batch_stats" not in shapes:
    return None

  def moments_fn(params, x):
    _, state = module.apply({"params": params}, x, mutable=["batch_stats"])
    return _plain(state["batch_stats"])

  return moments_fn


# The models that sow the activations of the units each permutation of their spec acts on (flax ``sow`` into
# ``intermediates``, under the permutation's name; a no-op unless that collection is mutable): the ones
# activation matching (``eval.align_method="activations"``) aligns.
ACTIVATION_MODELS = ("mlp", "cnn", "resnet20", "resnet", "resnet34", "resnet50")


def make_activations(name: str, input_shape, num_classes: int, **model_kwargs):
  """``activations_fn(params, x, stats=None) -> {permutation name: (array [B, ..., units], ...)}``: the activations,
  after their ReLU, of the hidden units each permutation of the model's spec acts on (one array per tensor the
  permutation reorders: a ResNet stage's permutation has one per block output, and stage 1's the stem's too),
  for activation matching (:func:`butterfly_jax.core.permutations.activation_matching`); None for a model not in
  :data:`ACTIVATION_MODELS`. ``stats``: as for :func:`make_model`'s ``apply_fn`` (BatchNorm statistics; without
  them a BatchNorm model normalises with the batch's own moments). The model's outputs are computed as ever: the
  activations are read from the flax ``intermediates`` collection the models ``sow`` into."""
  if name not in ACTIVATION_MODELS:
    return None
  module = build_module(name, num_classes, **model_kwargs)

  def activations_fn(params, x, stats=None):
    variables = {"params": params} if stats is None else {"params": params, "batch_stats": stats}
    _, state = module.apply(variables, x, mutable=["intermediates"])
    out = {}

    def walk(tree):
      for key, value in tree.items():
        if isinstance(value, Mapping):
          walk(value)
        else:  # a tuple of the values sown under this name, in the order they were computed
          out[key] = out.get(key, ()) + tuple(value)

    walk(state["intermediates"])
    return out

  return activations_fn


def param_order(name: str, input_shape, num_classes: int, **model_kwargs) -> dict:
  """``{"layer/param": shape}`` of every parameter, in the order the model creates them, which is the order
  its layers are first used (flax creates a compact module's parameters at its first call). Traced
  abstractly: nothing is computed."""
  module = build_module(name, num_classes, **model_kwargs)
  dummy = _dummy(name, input_shape)
  order = {}

  def walk(tree, prefix):
    for k, v in tree.items():
      if isinstance(v, Mapping):
        walk(v, f"{prefix}{k}/")
      else:
        order[f"{prefix}{k}"] = tuple(v.shape)

  def init(key):
    params = module.init(key, dummy)["params"]
    walk(params, "")  # at trace time: the dicts still hold their creation order
    return params

  jax.eval_shape(init, jax.random.key(0))
  return order


def _plain(tree):
  if isinstance(tree, Mapping):
    return {k: _plain(v) for k, v in tree.items()}
  return tree


def create_model(name: str, key: jax.Array, input_shape, num_classes: int, **model_kwargs):
  """Initialises a model.

  Returns ``(apply_fn, params, spec)``: ``apply_fn(params, x) -> (logits, features)`` for a batch
  ``x`` of shape ``[B, *input_shape]`` and dtype :func:`input_dtype` (a text model's ``input_shape`` is
  ``(3, L)``); ``params`` a plain nested dict; ``spec`` the model's
  :class:`~butterfly_jax.core.permutations.PermutationSpec` (which parameter axes each hidden-unit permutation acts on).
  """
  apply_fn, init_fn = make_model(name, input_shape, num_classes, **model_kwargs)
  params = init_fn(key)
  return apply_fn, params, spec_for(name, params)
