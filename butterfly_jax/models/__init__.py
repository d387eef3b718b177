"""Models: each returns ``(logits, features)`` with the penultimate representation in ``features``."""

from butterfly_jax.models.registry import MODELS, ModelFn, create_model, input_dtype, make_model, make_moments

__all__ = ["MODELS", "ModelFn", "create_model", "input_dtype", "make_model", "make_moments"]
