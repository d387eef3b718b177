"""The console commands that parse absl flags (``butterfly-run``, ``butterfly-proxy``, ``butterfly-threshold``;
``[project.scripts]`` in pyproject.toml).

absl's ``--help`` lists the flags of the module named ``sys.argv[0]``: under ``python -m MODULE`` that is the
module, under a console command the command's script, which defines none. :func:`help_lists_flags_of` makes the
command's help list the module's flags.
"""

import sys

from absl import flags


def help_lists_flags_of(module_name: str) -> None:
  """absl's ``--help`` lists the flags defined in ``module_name``, whatever ``sys.argv[0]`` is."""
  for flag in flags.FLAGS.get_key_flags_for_module(module_name):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
