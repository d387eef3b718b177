"""The config files: each has ``get_config()``, and ``sweep(add)`` where it declares a sweep. They are run by
path (``--config=configs/NAME.py``), not imported. In the repository they are ``configs/`` at the top level;
an installed package carries them as ``butterfly_jax.configs`` (pyproject.toml maps the one folder to both),
and :mod:`butterfly_jax.run.config_files` finds them from any directory."""
