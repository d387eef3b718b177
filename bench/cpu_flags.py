"""Seconds per family step under XLA:CPU flag sets, each in its own process (XLA reads flags once per process).

How ``butterfly_jax/io/runtime.py`` chose its CPU flags (BUILD_NOTES.md, "XLA:CPU flags")::

    python bench/cpu_flags.py --models=resnet20_w1_28,cnn_16_32,mlp --k=2 --out=bench/cpu_flags.json

For each model (``bench/run.py``'s ``MODELS``) and each flag set, a fresh process builds ``bench/run.py``'s
``JaxFamily`` (K networks, ``sequential``, ``conv=auto``), runs one step, then times ``--steps`` steps and
prints the median. The flag sets are the project's default with AVX-512 (YNNPACK for convolutions only),
jaxlib's own default, YNNPACK off, and YNNPACK and XNNPACK off; ``--flags`` replaces them (``;``-separated).
The GPU determinism flags a run adds are present in every set. Prints a table and writes ``--out`` (JSON)
with the machine's CPU and whether it has AVX-512.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
YNN = "--xla_cpu_experimental_ynn_fusion_type"
FLAG_SETS = {
    "ynn convolutions only": f"{YNN}=individual_convolution",
    "jaxlib default": f"{YNN}=+individual_convolution",
    "ynn off": f"{YNN}=",
    "ynn and xnnpack off": f"{YNN}= --xla_cpu_use_xnnpack=false",
}

CHILD = """
import json, sys
sys.path.insert(0, {here!r})
import numpy as np
import run as B
f = B.JaxFamily({model!r}, "auto", "sequential", {k})
f.run(1)
print(json.dumps({{"median_s": float(np.median(f.run({steps}))), "compile_s": f.compile_s}}))
"""


def time_one(model: str, k: int, steps: int, flags: str) -> dict:
  env = dict(os.environ, XLA_FLAGS=flags)
  out = subprocess.run([sys.executable, "-c", CHILD.format(here=str(HERE), model=model, k=k, steps=steps)],
                       env=env, capture_output=True, text=True, timeout=1800)
  if out.returncode != 0:
    return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--models", default="resnet20_w1_28,cnn_16_32,mlp")
  ap.add_argument("--k", type=int, default=2, help="networks in the family")
  ap.add_argument("--steps", type=int, default=5, help="timed steps (after one untimed)")
  ap.add_argument("--flags", default="", help="';'-separated XLA_FLAGS sets instead of the four above")
  ap.add_argument("--out", default="", help="JSON file for the rows")
  args = ap.parse_args(argv)
  sys.path.insert(0, str(HERE.parent))
  from butterfly_jax.io import runtime
  from butterfly_jax.io.rundir import host_cpu
  sets = ({s.strip(): s.strip() for s in args.flags.split(";")} if args.flags else FLAG_SETS)
  rows = []
  meta = {"command": "python bench/cpu_flags.py " + " ".join(sys.argv[1:] if argv is None else argv),
          "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "host_cpu": host_cpu(),
          "avx512": runtime.cpu_has_avx512(), "load_before": [round(x, 2) for x in os.getloadavg()]}
  print(f"{meta['host_cpu']}, AVX-512 {meta['avx512']}, load {meta['load_before']}", flush=True)
  for model in args.models.split(","):
    for name, flags in sets.items():
      full = runtime.xla_flags(flags, True, {})  # the run's GPU flags, none of the CPU defaults
      r = {"model": model, "k": args.k, "flag_set": name, "xla_flags": full, **time_one(model, args.k, args.steps, full)}
      rows.append(r)
      print(f"{model:15s} K={args.k} {name:22s} " + (f"{r['median_s']:.4f} s/step" if "median_s" in r
                                                      else f"failed: {r['error']}"), flush=True)
  if args.out:
    Path(args.out).write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
  main()
