"""Orchestration of one run: the config resolved once into a run spec (:mod:`~butterfly_jax.run.spec`), what the
run derives from it (:mod:`~butterfly_jax.run.setup`), the phases trunk, perturbation, children and evaluation
(:mod:`~butterfly_jax.run.experiment`), progress output, and the command-line helpers and config files the
commands share. The commands (``butterfly_jax.main``, ``proxy``, ``threshold``), the launcher and the report sit
above it."""
