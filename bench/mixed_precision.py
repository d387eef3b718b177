"""Mixed precision: the same experiment in float32 and in bfloat16 compute, its speed and its barriers.

    python bench/mixed_precision.py [--config=configs/quickstart.py] [--out=bench/mixed_precision.json] [--set a.b=v ...]

Runs the config twice in fresh temporary run directories (``train.compute_dtype`` float32, then bfloat16),
and prints the children's training time per step and each child's L2 distance and train/test loss
barriers against child 0 side by side.
"""

import argparse
import json
import platform
import tempfile
import time

import jax

from butterfly_jax.launch import sweep as sweep_lib  # config files and --set parsed as the launcher does
from butterfly_jax.run.experiment import run


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", default="configs/quickstart.py")
  ap.add_argument("--out", default="bench/mixed_precision.json")
  ap.add_argument("--set", action="append", default=[], help="a.b=value overrides, parsed by the field's type")
  args = ap.parse_args()
  out = {}
  for dtype in ("float32", "bfloat16"):
    try:
      c = sweep_lib.load_config(args.config, args.set)
    except sweep_lib.SweepError as e:
      raise SystemExit(str(e)) from None
    c.train.compute_dtype = dtype
    c.log.progress = False
    with tempfile.TemporaryDirectory() as d:
      tic = time.time()
      res = run(c, d)
      wall = time.time() - tic
    steps = max(ch["end_step"] for ch in res["children"]) - res["steps"]["t"]
    out[dtype] = {"wall_s": wall, "children_s": res["timing"]["children_s"],
                  "children_s_per_step": res["timing"]["children_s"] / max(steps, 1),
                  "children": [{"sigma": ch["perturb"]["scale"], "test_accuracy": ch["test"]["accuracy"],
                                **({"l2": ch["vs_child0"]["l2"], "barrier": ch["vs_child0"]["barrier"]}
                                   if "vs_child0" in ch else {})} for ch in res["children"]]}
  print(f"{'':10} {'s/step':>8} | per child: sigma, L2, train-loss barrier, test-loss barrier, test acc")
  for dtype, r in out.items():
    print(f"{dtype:10} {r['children_s_per_step']:8.4f} |")
    for ch in r["children"][1:]:
      b = ch["barrier"]
      print(f"{'':21} sigma={ch['sigma']:<8g} L2={ch['l2']:.4f} train={b['train']['loss']:.4f} "
            f"test={b['test']['loss']:.4f} acc={ch['test_accuracy']:.4f}")
  meta = {"command": "python bench/mixed_precision.py " + " ".join(
      [f"--config={args.config}"] + [f"--set {s}" for s in args.set]),
          "machine": platform.platform(), "backend": jax.default_backend(),
          "devices": [str(d) for d in jax.devices()], "jax": jax.__version__}
  with open(args.out, "w") as f:
    json.dump({"meta": meta, "results": out}, f, indent=1)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
