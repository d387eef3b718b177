"""The package's version (pyproject.toml holds the same string; tests/test_packaging.py checks they agree)."""

__version__ = "0.1.0"
