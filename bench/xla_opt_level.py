"""CPU time of one small BatchNorm family (the BatchNorm test's run) under the XLA flags in the environment.

Compiling dominates the test suite; this measures how much an XLA flag saves (BUILD_NOTES.md, "Test suite")::

    for f in "" --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true; do
      XLA_FLAGS="$f" JAX_COMPILATION_CACHE_DIR= python bench/xla_opt_level.py; done

Prints the flags in effect (the run's own flags are added to them), the user CPU seconds of the process, the
wall time, and the twin's and the perturbed child's train-loss barriers.
"""

import os
import resource
import tempfile
import time

t0 = time.time()
from butterfly_jax.run.configs_embedded import smoke  # noqa: E402
from butterfly_jax.run.experiment import run  # noqa: E402

c = smoke()
c.model.name = "resnet"
c.model.kwargs = {"depth": 8, "width": 1, "norm": "batchnorm"}
c.train.steps = "20"
c.perturb.scales = (0.0, 1e-2)
c.eval.num_examples = 100
c.eval.norm_stats_examples = 40
c.eval.cka_examples = 100
res = run(c, tempfile.mkdtemp() + "/bn")
twin = res["children"][1]["vs_child0"]["barrier"]["train"]["loss"]
perturbed = res["children"][2]["vs_child0"]["barrier"]["train"]["loss"]
user = resource.getrusage(resource.RUSAGE_SELF).ru_utime
print(f"XLA_FLAGS[{os.environ.get('XLA_FLAGS', '')}] user {user:.1f} s, wall {time.time() - t0:.1f} s, "
      f"twin {twin!r}, perturbed {perturbed!r}")
