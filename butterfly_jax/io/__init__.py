"""Everything that reads or writes outside the process: run directories and their checkpoints
(:mod:`~butterfly_jax.io.rundir`), datasets (:mod:`~butterfly_jax.io.data`, :mod:`~butterfly_jax.io.text`),
pre-trained weights (:mod:`~butterfly_jax.io.pretrained`) and the process's XLA settings and provenance
(:mod:`~butterfly_jax.io.runtime`). Built on the numerical core; knows nothing of orchestration."""
