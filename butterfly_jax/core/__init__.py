"""The numerical core: keys, tree math, batches, optimizers, perturbations, the family's train step, evaluation
(Eq. 1's barrier), similarity and permutations, and where members and data lie on devices.

Pure functions of arrays, keys and plain arguments: nothing here reads a config module or a file, so every piece
can be used, and tested, on its own. The models (:mod:`butterfly_jax.models`) belong to this layer too."""
