"""Models: each returns ``(logits, features)`` with the penultimate representation in ``features``."""

from butterfly_jax.models.registry import (ACTIVATION_MODELS, MODELS, ModelFn, create_model, input_dtype,
                                          make_activations, make_model, make_moments)

__all__ = ["ACTIVATION_MODELS", "MODELS", "ModelFn", "create_model", "input_dtype", "make_activations", "make_model",
           "make_moments"]
