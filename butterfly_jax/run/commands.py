"""The console commands that parse absl flags (``butterfly-run``, ``butterfly-proxy``, ``butterfly-threshold``;
``[project.scripts]`` in pyproject.toml): their help, and a ``--config.a.b`` override of a field the config does
not have named in one line (:func:`unknown_config_field`) rather than as ml_collections' traceback. Every command,
absl's and argparse's alike, takes an option of several words with hyphens or underscores (:func:`absl_argv`,
:func:`spellings`).

absl's ``--help`` lists the flags of the module named ``sys.argv[0]``: under ``python -m MODULE`` that is the
module, under a console command the command's script, which defines none. :func:`help_lists_flags_of` makes the
command's help list the module's flags.
"""

import re
import sys

import ml_collections
from absl import flags
from butterfly_jax.models.registry import MODEL_KWARGS

CONFIG_FLAG = re.compile(r"^--?config(=|$)")
_OVERRIDE = re.compile(r"^--?(?:no)?config\.([^=]+)")


def spellings(option: str) -> tuple[str, ...]:
  """``--a-b`` and ``--a_b`` for an option of several words (one convention for every command: either spelling
  works everywhere); a one-word option as it is."""
  hyphen, underscore = option[:2] + option[2:].replace("_", "-"), option[:2] + option[2:].replace("-", "_")
  return (hyphen,) if hyphen == underscore else (hyphen, underscore)


def absl_argv(argv):
  """``argv`` with ``--a-b[=v]`` flags spelled ``--a_b[=v]`` (``--no-a-b``: ``--noa_b``) for absl, which knows the
  underscore spelling only; ``--config.a.b`` overrides, values and arguments after ``--`` are left alone."""
  out, rest = list(argv[:1]), False
  for arg in argv[1:]:
    if rest or not arg.startswith("--") or arg == "--" or arg.startswith("--config"):
      rest = rest or arg == "--"
      out.append(arg)
      continue
    name, eq, value = arg[2:].partition("=")
    if "-" in name:
      name = "no" + name[3:].replace("-", "_") if name.startswith("no-") else name.replace("-", "_")
    out.append(f"--{name}{eq}{value}")
  return out


def help_lists_flags_of(module_name: str) -> None:
  """absl's ``--help`` lists the flags defined in ``module_name``, whatever ``sys.argv[0]`` is."""
  for flag in flags.FLAGS.get_key_flags_for_module(module_name):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def config_argument(argv, default: str = "") -> str:
  """The value of ``--config`` in ``argv`` (``default`` when absent)."""
  for i, arg in enumerate(argv):
    m = CONFIG_FLAG.match(arg)
    if m:
      return arg.split("=", 1)[1] if m.group(1) else (argv[i + 1] if i + 1 < len(argv) else "")
  return default


def unknown_config_field(flag_values, argv, default_config: str = "") -> str | None:
  """For the first ``--config.a.b`` override that names no field of the config: a message naming it and the
  fields its section has. None when the config does not load or every override names a field. ``flag_values``
  holds the ``config`` flag (ml_collections' ``DEFINE_config_file``)."""
  try:
    argv = flag_values.read_flags_from_files(argv, force_gnu=False)
    config = flag_values["config"].parser.parse(config_argument(argv, default_config))
  except Exception:  # pylint: disable=broad-except
    return None
  if not isinstance(config, ml_collections.ConfigDict):
    return None
  for arg in argv[1:]:
    m = _OVERRIDE.match(arg)
    if not m or "[" in m.group(1):
      continue
    dotted, node, seen = m.group(1), config, []
    for part in dotted.split("."):
      if not isinstance(node, ml_collections.ConfigDict):
        return f"--config.{dotted}: {'.'.join(seen)} is a value ({node!r}), not a section with fields"
      if part not in node:
        section = ".".join(seen)
        message = (f"--config.{dotted}: {section or 'the config'} has no field {part!r}; "
                   f"{'its' if section else 'its sections and'} fields: {', '.join(sorted(node.keys()))}")
        if section == "model.kwargs":
          name = config.model.name
          message += (f" (model {name} takes {', '.join(MODEL_KWARGS.get(name, ()))}; an argument the config file "
                      "does not set can only be added in a config file)")
        return message
      node = node[part]
      seen.append(part)
  return None
