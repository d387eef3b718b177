"""Where the config files are: the repository's ``configs/`` folder, which an installed package carries as
``butterfly_jax.configs`` (pyproject.toml maps that one folder into the wheel and the editable install). Each
file has ``get_config()``, and ``sweep(add)`` where it declares a sweep (docs/configs.md and
docs/sweeps.md). They are run by path, not imported.

On a command line (``--config`` of ``python -m butterfly_jax.main``, the launcher and the threshold search),
``configs/NAME.py[:arg]`` is the shipped file ``NAME.py`` here, from any directory where that path names no file;
a path that exists is used as it is (a copy to edit, a config of one's own)::

    python -m butterfly_jax.main --config=configs/quickstart.py --workdir=runs/quickstart
    butterfly-launch --config=configs/smoke.py --runs=runs/smoke_sweep

Any other path that names no file is an error naming the shipped configs and the folder that holds them.
"""

import importlib.util
import re
from pathlib import Path
from butterfly_jax.config import ConfigError


def _folder() -> Path:
  """``butterfly_jax.configs`` where the package is installed (a wheel or an editable install), else the
  ``configs/`` beside the package in a checkout used without installing."""
  try:
    spec = importlib.util.find_spec("butterfly_jax.configs")
  except ImportError:
    spec = None
  if spec is not None and spec.origin and spec.submodule_search_locations:  # a package, not a stray folder
    return Path(list(spec.submodule_search_locations)[0]).resolve()
  return Path(__file__).resolve().parents[2] / "configs"


FOLDER = _folder()
_CONFIG_FLAG = re.compile(r"^--?config(=|$)")


def names() -> list:
  """The shipped configs' names: ``configs/NAME.py`` for each NAME."""
  return sorted(p.stem for p in FOLDER.glob("*.py") if not p.name.startswith("_"))


def resolve(spec: str, flag: str = "--config") -> str:
  """``spec`` (``path`` or ``path:arg``, the argument after the first colon, as ml_collections reads it) as
  given where ``path`` is a file; with a shipped config's path for ``configs/NAME.py`` where it is not.
  Raises :class:`butterfly_jax.config.ConfigError` naming the shipped configs for any other missing file."""
  file, colon, arg = str(spec).partition(":")
  path = Path(file)
  if path.is_file():
    return str(spec)
  if path.parts == ("configs", path.name) and path.stem in names() and path.suffix == ".py":
    return f"{FOLDER / path.name}{colon}{arg}"
  what = f"{file} is a folder, not a config file" if path.is_dir() else f"no config file at {file!r} (in {Path.cwd()})"
  raise ConfigError(f"{flag}: {what}; the shipped configs are configs/NAME.py from any directory, NAME one of: "
                    f"{', '.join(names())} (the files are in {FOLDER}: copy one to edit it)")


def resolve_argv(argv: list) -> list:
  """``argv`` with the value of its ``--config=SPEC`` (or ``--config SPEC``) flag passed through :func:`resolve`."""
  argv = list(argv)
  for i, arg in enumerate(argv):
    m = _CONFIG_FLAG.match(arg)
    if m and m.group(1):
      argv[i] = f"{arg.split('=', 1)[0]}={resolve(arg.split('=', 1)[1])}"
    elif m and i + 1 < len(argv):
      argv[i + 1] = resolve(argv[i + 1])
    if m:
      break
  return argv
