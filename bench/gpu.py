"""GPU benchmark: the paper's ResNet-20 on one accelerator, against PyTorch on the same device.

    python bench/gpu.py [--quick] [--out bench/results_gpu]        # writes OUT.json and OUT.md

Parts, each in its own process (XLA flags are read when the backend starts):

1. ``steps``: training-step time of ResNet-20 width 2 (``configs/resnet20.py``'s network) at batch 128 for one
   network, a twin pair and an 8-child family, under ``vmap`` and ``sequential``, in float32 and bfloat16
   compute, with ``runtime.deterministic`` on (the default) and off. XLA's FLOP count of the compiled step
   divided by its time gives the achieved TFLOP/s, and ``--peak_tflops`` (default 494.7, an H100 SXM's dense
   TF32 tensor-core peak; pass 989.4 for its BF16 peak) the fraction of the limit.
2. ``torch``: the PyTorch reference (``bench/torch_reference.py``: eager, float32, channels_last) training
   the same K networks one after another on the same device, TF32 matmuls and convolutions allowed as
   XLA's default precision allows them.
3. ``determinism``: a sigma = 0 twin pair (and an 8-child family of twins) trained ``--det_steps`` steps, twice:
   the twins must stay bitwise equal to each other, and the two runs bitwise equal to each other.
4. ``full``: the whole ``configs/resnet20.py`` experiment, 50 epochs on synthetic CIFAR-shaped data (50,000 +
   10,000 images), a twin pair (sigma = 1e-2 at 5 epochs) with final barriers on the full splits: wall time.

``--quick`` shrinks everything (a few steps, 1 epoch) to check the script; ``--parts`` picks parts; ``--width``
and ``--batch`` change the network and batch (defaults: the paper's 2 and 128). On a machine without a GPU
the script runs on CPU, for checking it: ``python bench/gpu.py --quick --width=1 --batch=16``.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PARTS = ("steps", "torch", "determinism", "full")


def _jax_family(k, strategy, compute_dtype, width=2, batch=128, n=4096, seed=0, same_init=False):
  """``(step, family, data, perm, key)`` for K ResNet-20s, as ``bench/run.py``'s ``JaxFamily`` builds them."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from butterfly_jax.core import batches, members, optim
  from butterfly_jax.config import default_config
  from butterfly_jax.models import make_model
  apply_fn, init_fn = make_model("resnet20", (32, 32, 3), 10, width=width)
  c = default_config()
  transform = optim.make_transform(c)
  schedule = optim.make_schedule(c, 10**6, 10)
  rng = np.random.default_rng(seed)
  data = (jnp.asarray(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)),
          jnp.asarray(rng.integers(0, 10, n, dtype=np.int32)))
  batcher = batches.Batcher(batch_size=batch, num_examples=n, mean=[0.5] * 3, std=[0.25] * 3, flip=True,
                            translate=4, cutout=16)
  step = members.make_train_step(apply_fn, transform, schedule, batcher, strategy, None, compute_dtype)
  params = [init_fn(jax.random.key(0 if same_init else i)) for i in range(k)]
  family = members.new_family(params, [transform.init(p) for p in params], [0] * k, [10**9] * k)
  key = jax.random.key(seed)
  return step, family, data, batcher.epoch_permutation(key, 0), key, batcher.steps_per_epoch


def part_steps(args):
  import jax
  import jax.numpy as jnp
  rows = []
  variants = [(1, "sequential"), (2, "vmap"), (2, "sequential"), (8, "vmap"), (8, "sequential")]
  for dtype in ("float32", "bfloat16"):
    for k, strategy in variants:
      step, family, data, perm, key, spe = _jax_family(k, strategy, dtype, args.width, args.batch)
      lowered = step.lower(family, data, perm, key, jnp.int32(0))
      flops = (lowered.compile().cost_analysis() or {}).get("flops")
      tic = time.perf_counter()
      family, loss, _ = step(family, data, perm, key, jnp.int32(0))
      jax.block_until_ready(loss)
      compile_s = time.perf_counter() - tic
      for s in range(1, args.warmup + 1):
        family, loss, _ = step(family, data, perm, key, jnp.int32(s % spe))
      jax.block_until_ready(loss)
      tic = time.perf_counter()
      for s in range(args.steps):
        family, loss, _ = step(family, data, perm, key, jnp.int32(s % spe))
      jax.block_until_ready(loss)
      sec = (time.perf_counter() - tic) / args.steps
      tflops = flops / sec / 1e12 if flops else None
      rows.append({"framework": "jax", "deterministic": args.deterministic, "compute_dtype": dtype, "k": k,
                   "strategy": strategy, "s_per_step": sec, "images_per_s": args.batch * k / sec, "compile_s": compile_s,
                   "flops_per_step": flops, "tflops": tflops,
                   "fraction_of_peak": tflops / args.peak_tflops if tflops else None})
      print(json.dumps(rows[-1]), flush=True)
  return rows


def part_torch(args):
  import torch
  sys.path.insert(0, HERE)
  import torch_reference
  device = "cuda" if torch.cuda.is_available() else "cpu"
  torch.backends.cudnn.benchmark = True
  torch.backends.cuda.matmul.allow_tf32 = True
  torch.backends.cudnn.allow_tf32 = True
  rows = []
  for k in (1, 2, 8):
    trainer = torch_reference.FamilyTrainer("resnet20", {"width": args.width}, (32, 32, 3), k, batch=args.batch,
                                            device=device)
    trainer.run(args.warmup)
    times = trainer.run(args.steps)
    sec = sum(times) / len(times)
    rows.append({"framework": "torch", "device": device, "k": k, "s_per_step": sec, "images_per_s": args.batch * k / sec})
    print(json.dumps(rows[-1]), flush=True)
  return rows


def part_determinism(args):
  import jax
  import jax.numpy as jnp
  import numpy as np
  out = []
  for k, strategy in ((2, "vmap"), (8, "vmap"), (2, "sequential")):
    finals = []
    for _ in range(2):
      step, family, data, perm, key, spe = _jax_family(k, strategy, "float32", args.width, args.batch, same_init=True)
      for s in range(args.det_steps):
        family, loss, _ = step(family, data, perm, key, jnp.int32(s % spe))
      finals.append([np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(family.params))])
    twins_equal = all(np.array_equal(x[0], x[j]) for x in finals[0] for j in range(1, k))
    runs_equal = all(np.array_equal(a, b) for a, b in zip(*finals))
    max_twin_diff = max(float(np.max(np.abs(x[0] - x[j]))) for x in finals[0] for j in range(1, k))
    out.append({"deterministic": args.deterministic, "k": k, "strategy": strategy, "steps": args.det_steps,
                "twins_bitwise_equal": twins_equal, "runs_bitwise_equal": runs_equal,
                "max_twin_abs_diff": max_twin_diff})
    print(json.dumps(out[-1]), flush=True)
  return out


def part_full(args):
  from butterfly_jax.run import config_files as configs
  from butterfly_jax.config import config_file
  from butterfly_jax.run.experiment import run
  c = config_file(configs.FOLDER / "resnet20.py").get_config()
  c.data.name = "synthetic"
  c.data.synthetic.num_train, c.data.synthetic.num_test = (2048, 512) if args.quick else (50000, 10000)
  c.data.synthetic.shape, c.data.synthetic.num_classes = (32, 32, 3), 10
  c.perturb.scales = (1e-2,)
  c.runtime.deterministic = args.deterministic
  c.log.progress = False
  c.model.kwargs.width, c.train.batch_size = args.width, args.batch
  if args.quick:
    c.train.steps, c.perturb.time, c.eval.num_examples = "1ep", "0", 256
  tic = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    res = run(c, tmp)
  wall = time.perf_counter() - tic
  child = res["children"][1]
  row = {"deterministic": args.deterministic, "wall_s": wall, "timing": res["timing"], "steps": res["steps"],
         "barrier": child["vs_child0"]["barrier"], "l2": child["vs_child0"]["l2"],
         "members_strategy": res["members_strategy"], "eval_examples": res["eval"]["num_examples"]}
  print(json.dumps(row), flush=True)
  return [row]


def _device():
  import jax
  d = jax.devices()[0]
  return {"backend": jax.default_backend(), "device_kind": d.device_kind, "count": jax.device_count(),
          "jax": jax.__version__}


def child(args):
  from butterfly_jax.io import runtime
  runtime.configure(args.deterministic)
  rows = {"steps": part_steps, "torch": part_torch, "determinism": part_determinism, "full": part_full}[args.part](args)
  print("RESULT " + json.dumps({"part": args.part, "deterministic": args.deterministic, "device": _device(),
                                "rows": rows}), flush=True)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--parts", default=",".join(PARTS))
  ap.add_argument("--out", default=os.path.join(HERE, "results_gpu"))
  ap.add_argument("--steps", type=int, default=None)
  ap.add_argument("--warmup", type=int, default=None)
  ap.add_argument("--det_steps", type=int, default=None)
  ap.add_argument("--peak_tflops", type=float, default=494.7)
  ap.add_argument("--width", type=int, default=2, help="ResNet-20 width multiplier (2: the paper's)")
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)            # internal: one part in this process
  ap.add_argument("--deterministic", type=int, default=1, help=argparse.SUPPRESS)
  args = ap.parse_args()
  args.steps = args.steps or (3 if args.quick else 200)
  args.warmup = args.warmup or (1 if args.quick else 20)
  args.det_steps = args.det_steps or (3 if args.quick else 500)
  if args.part:
    args.deterministic = bool(args.deterministic)
    return child(args)
  results = []
  for part in args.parts.split(","):
    if part not in PARTS:
      ap.error(f"--parts: unknown part {part!r}; allowed: {', '.join(PARTS)}")
    for det in ((1, 0) if part in ("steps", "determinism", "full") else (1,)):
      cmd = [sys.executable, os.path.abspath(__file__), f"--part={part}", f"--deterministic={det}",
             f"--steps={args.steps}", f"--warmup={args.warmup}", f"--det_steps={args.det_steps}",
             f"--peak_tflops={args.peak_tflops}", f"--width={args.width}", f"--batch={args.batch}"] + \
          (["--quick"] if args.quick else [])
      print("$ " + " ".join(cmd), flush=True)
      proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")))
      lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
      if proc.returncode or not lines:
        print(proc.stdout[-2000:] + proc.stderr[-4000:], file=sys.stderr)
        results.append({"part": part, "deterministic": bool(det), "error": (proc.stderr or proc.stdout)[-2000:]})
        continue
      results.append(json.loads(lines[-1][len("RESULT "):]))
  with open(args.out + ".json", "w") as f:
    json.dump({"command": " ".join(sys.argv), "quick": args.quick, "results": results}, f, indent=1)
  with open(args.out + ".md", "w") as f:
    f.write(markdown(results))
  print(markdown(results))


def markdown(results) -> str:
  lines = ["# GPU benchmark (`bench/gpu.py`)", ""]
  for r in results:
    head = f"## {r['part']} (deterministic={r['deterministic']})"
    if "error" in r:
      lines += [head, "", "error:", "", "```", r["error"], "```", ""]
      continue
    lines += [head, "", f"device: {r['device']}", ""]
    rows = r["rows"]
    keys = list(rows[0]) if rows else []
    lines += ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    for row in rows:
      lines.append("| " + " | ".join(_fmt(row[k]) for k in keys) + " |")
    lines.append("")
  return "\n".join(lines)


def _fmt(v):
  if isinstance(v, float):
    return f"{v:.4g}"
  return json.dumps(v) if isinstance(v, (dict, list)) else str(v)


if __name__ == "__main__":
  main()
