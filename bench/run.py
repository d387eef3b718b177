"""Speed benchmark on CPU: training steps of networks, twin pairs and families, barrier evaluation and weight
matching, with a plain PyTorch reference trained side by side in the same process.

    python bench/run.py [--quick] [--out bench/results_cpu]     # writes OUT.json and OUT.md

Training: the project's own family step (``members.make_train_step``, one jitted step per call, batch 128,
SGD momentum 0.9) on random uint8 data (32x32x3 for ResNet-20, 28x28x1 for the CNN, the MLP and
``resnet20_w1_28``, the reduced map's ResNet-20, run only when named in ``--models``), for K = 1, 2 and 8 networks under each members strategy, with the default convolution (``conv="auto"``) and XLA's own
(``conv="xla"``) for comparison; PyTorch (``bench/torch_reference.py``, optional, bench-only) trains the same
architectures one after another. All variants of a model are compiled first, then timed in interleaved
rounds (each round runs every variant in turn for about ``--seconds``, or ``--steps`` steps), so that load
from other processes falls on all of them alike; the table gives the median over all timed steps. Each row
also gives its FLOP rate (XLA's count of the compiled step; torch and split rows: the count of the
one-device JAX step, the same work) and that rate as a fraction of the machine's float32 matmul rate,
measured at the start of the run. Families of convolutional networks under ``vmap`` are only run where they
finish in reasonable time (they lower to grouped convolutions on XLA:CPU, BUILD_NOTES.md).

XLA flags: the process calls ``runtime.configure`` first, so it runs with the flags a training run gets
(on CPU ``runtime.default_cpu_flags()``); flags already in ``XLA_FLAGS`` win, e.g.
``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution`` restores jaxlib's default
(convolutions, dots, reductions and elementwise chains to YNNPACK). With more than one local device
(``XLA_FLAGS=--xla_force_host_platform_device_count=2`` on a 2-core CPU) families of K > 1 are also timed
with the members split over the devices (strategy ``split``, ``placement.member_mesh``), as an experiment does
with ``members.devices = 0``.

Barriers: ``evaluate.make_eval_batch`` / ``evaluate_networks`` on a twin pair: 11 alphas (the two networks and
9 interpolated ones) on ``--eval_examples`` examples, batch 1000. Weight matching: ``bench/weight_matching.py``.
"""

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning OpenMP threads under load

import jax
import jax.numpy as jnp
import numpy as np

from butterfly_jax.config import default_config
from butterfly_jax.core import batches, evaluate, members, optim, placement
from butterfly_jax.io import runtime
from butterfly_jax.models import make_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import weight_matching  # noqa: E402  (bench/weight_matching.py)

RUNTIME_CONFIGURED = runtime.configure(True)  # the XLA flags a run gets (CPU: runtime.default_cpu_flags()), before backends start

from bench_models import BATCH, CONV_MODELS, MODELS  # noqa: E402  (bench/bench_models.py)
NO_TORCH = False


def variants(model: str, quick: bool):
  """(framework, conv, strategy, K) to time for ``model``."""
  ks = (1, 2) if quick else (1, 2, 8)
  out = [("jax", "auto", "sequential", k) for k in ks]
  if model in CONV_MODELS:
    out += [("jax", "xla", "sequential", k) for k in ((1,) if model == "resnet20_w2" else (1, 2))]
  vmap_ks = {"resnet20_w1": (2,), "resnet20_w1_28": (2,), "resnet20_w2": ()}.get(model, ks)
  out += [("jax", "auto", "vmap", k) for k in (vmap_ks if not quick else (2,))]
  if jax.local_device_count() > 1:  # e.g. XLA_FLAGS=--xla_force_host_platform_device_count=2 (docstring)
    out += [("jax", "auto", "split", k) for k in ks if k > 1]
  out += [("torch", f"{t}t", "sequential", k) for k in ((1, 2) if quick else (1, 2, 8)) for t in (1, 2)]
  return out


class JaxFamily:
  """A compiled family step of K networks; ``run(steps)`` returns seconds per step."""

  def __init__(self, model, conv, strategy, k, batch=BATCH, n=2048):
    name, kwargs, shape = MODELS[model]
    if model in CONV_MODELS:
      kwargs = {**kwargs, "conv": conv}
    apply_fn, init_fn = make_model(name, shape, 10, **kwargs)
    c = default_config()
    transform = optim.make_transform(c)
    schedule = optim.make_schedule(c, 10**6, 10)
    rng = np.random.default_rng(0)
    self.data = (jnp.asarray(rng.integers(0, 256, (n, *shape), dtype=np.uint8)),
                 jnp.asarray(rng.integers(0, 10, n, dtype=np.int32)))
    batcher = batches.Batcher(batch_size=batch, num_examples=n, mean=[0.5] * shape[-1], std=[0.25] * shape[-1],
                              flip=False, translate=0, cutout=0)
    # "split": the members divided over the local devices and run "sequential" on each (as experiment.py
    # does with members.devices = 0)
    mesh = placement.member_mesh(k) if strategy == "split" else None
    step_fn = members.make_train_step(apply_fn, transform, schedule, batcher,
                                      "sequential" if strategy == "split" else strategy, mesh)
    params = [init_fn(jax.random.key(i)) for i in range(k)]
    self.family = placement.shard_members(
        members.new_family(params, [transform.init(p) for p in params], [0] * k, [10**9] * k), mesh)
    self.data = placement.replicate(self.data, mesh)
    self.key = jax.random.key(0)
    self.perm = placement.replicate(batcher.epoch_permutation(self.key, 0), mesh)
    self.steps_per_epoch, self.step = batcher.steps_per_epoch, 0
    tic = time.perf_counter()
    self.step_fn = step_fn.lower(self.family, self.data, self.perm, self.key, jnp.int32(0)).compile()
    self.run(1)
    self.compile_s = time.perf_counter() - tic
    self.flops = step_flops(self.step_fn)

  def run(self, steps):
    times = []
    for _ in range(steps):
      tic = time.perf_counter()
      self.family, loss, _ = self.step_fn(self.family, self.data, self.perm, self.key,
                                          jnp.int32(self.step % self.steps_per_epoch))
      jax.block_until_ready(loss)
      self.step += 1
      times.append(time.perf_counter() - tic)
    return times


def step_flops(compiled) -> float | None:
  """XLA's count of the floating-point operations of one call of ``compiled`` (all devices), or None."""
  try:
    analyses = compiled.cost_analysis()
  except Exception:  # noqa: BLE001  (not every backend implements it)
    return None
  analyses = analyses if isinstance(analyses, (list, tuple)) else [analyses]
  flops = [a.get("flops") for a in analyses if a]
  return float(sum(flops)) if flops and all(f is not None for f in flops) else None


def sgemm_gflops(n=4096, repeats=5) -> float:
  """The machine's float32 matmul rate with every core (numpy's BLAS, ``n x n``): the practical FLOP ceiling
  the training rates are compared with."""
  a = np.random.default_rng(0).random((n, n), dtype=np.float32)
  a @ a
  ts = []
  for _ in range(repeats):
    tic = time.perf_counter()
    a @ a
    ts.append(time.perf_counter() - tic)
  return 2 * n ** 3 / float(np.median(ts)) / 1e9


def make_runner(model, framework, conv, strategy, k):
  if framework == "jax":
    return JaxFamily(model, conv, strategy, k)
  import torch_reference
  name, kwargs, shape = MODELS[model]  # the reference takes the same kwargs
  runner = torch_reference.FamilyTrainer(name, kwargs, shape, k, threads=int(conv[:-1]))
  tic = time.perf_counter()
  runner.run(2)  # warm-up
  runner.compile_s = time.perf_counter() - tic
  return runner


def bench_training(model, quick, rounds, steps, seconds):
  """Rows of one model: every variant compiled first, then timed in interleaved rounds of ``steps`` steps each
  (0: as many as fill ``seconds``, at least one; a step that is short next to a switch between variants would
  otherwise be timed with cold caches)."""
  todo = variants(model, quick)
  runners, times = {}, {}
  for v in todo:
    if v[0] == "torch" and (NO_TORCH or not _has_torch()):
      continue
    runners[v] = make_runner(model, *v)
    times[v] = []
    print(f"  compiled {model} {v}: {runners[v].compile_s:.1f} s", flush=True)
  per_round = {v: steps or max(1, round(seconds / min(r.run(2)))) for v, r in runners.items()}
  for _ in range(rounds):
    for v, r in runners.items():
      times[v] += r.run(per_round[v])
  rows = []
  for (framework, conv, strategy, k), ts in times.items():
    s = float(np.median(ts))
    rows.append({"model": model, "framework": framework, "conv": conv, "strategy": strategy, "k": k,
                 "s_per_step": s, "images_per_s": 128 * k / s, "steps_timed": len(ts),
                 "compile_s": runners[(framework, conv, strategy, k)].compile_s,
                 "flops": getattr(runners[(framework, conv, strategy, k)], "flops", None)})
  for r in rows:
    if r["framework"] == "torch" or r["strategy"] == "split":
      # the same work as the one-device JAX step of the same K (a split step's own count is one device's share)
      r["flops"] = (_find(rows, "jax", "auto", "sequential", r["k"]) or {}).get("flops")
    r["gflops_per_s"] = r["flops"] / r["s_per_step"] / 1e9 if r["flops"] else None
    base = _find(rows, r["framework"], r["conv"], "sequential", 1)  # one network
    r["relative_to_single"] = r["s_per_step"] / base["s_per_step"] if base else None
    ref = [t["s_per_step"] for t in rows if t["framework"] == "torch" and t["k"] == r["k"]]
    r["torch_over_this"] = min(ref) / r["s_per_step"] if ref else None  # > 1: faster than PyTorch's best
  return rows


def _find(rows, framework, conv, strategy, k):
  return next((r for r in rows if (r["framework"], r["conv"], r["strategy"], r["k"]) == (framework, conv, strategy, k)),
              None)


def _has_torch():
  return importlib.util.find_spec("torch") is not None


def bench_barriers(model, num_examples, repeats):
  """Seconds to evaluate a twin pair's 11-alpha curves (11 networks) on ``num_examples`` examples."""
  name, kwargs, shape = MODELS[model]
  apply_fn, init_fn = make_model(name, shape, 10, **kwargs)
  children = jax.tree_util.tree_map(lambda *a: jnp.stack(a), init_fn(jax.random.key(0)), init_fn(jax.random.key(1)))
  alphas = evaluate.alpha_grid(11)
  table = evaluate.network_table(2, alphas)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (num_examples, *shape), dtype=np.uint8))
  labels = jnp.asarray(rng.integers(0, 10, num_examples, dtype=np.int32))
  mean, std = jnp.full(shape[-1], 0.5), jnp.full(shape[-1], 0.25)
  eval_batch = evaluate.make_eval_batch(apply_fn, 1)
  run = lambda: evaluate.evaluate_networks(eval_batch, children, table, images, labels, np.arange(num_examples),
                                           1000, mean, std)
  tic = time.perf_counter()
  run()
  compile_s = time.perf_counter() - tic
  ts = []
  for _ in range(repeats):
    tic = time.perf_counter()
    run()
    ts.append(time.perf_counter() - tic)
  s = float(np.median(ts))
  return {"model": model, "networks": len(table[0]), "examples": num_examples, "seconds": s,
          "network_examples_per_s": len(table[0]) * num_examples / s, "first_call_s": compile_s}


def machine():
  model = platform.processor()
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
  except (OSError, StopIteration):
    pass
  versions = {}
  for pkg in ("jax", "jaxlib", "flax", "optax", "numpy", "scipy", "torch"):
    try:
      versions[pkg] = importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
      versions[pkg] = None
  if versions["torch"]:
    import torch
    versions["torch_threads"] = torch.get_num_threads()
  return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "versions": versions,
          "backend": jax.default_backend(), "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}


def _fmt(x, spec):
  return "" if x is None else format(x, spec)


def _pct(rate, peak):
  return f"{100 * rate / peak:.0f}%" if rate and peak else ""


def markdown(result) -> str:
  m = result["meta"]
  v = m["versions"]
  lines = ["# CPU speed benchmark (`bench/run.py`)", "", "    " + m["command"], "",
           f"Machine: {m['cpu']}, {m['cores']} cores; load average {m['load_before']} before, "
           f"{m['load_after']} after; {m['started']}, {m['wall_s']:.0f} s.",
           f"Versions: python {m['python']}, jax {v['jax']}, jaxlib {v['jaxlib']}, flax {v['flax']}, "
           f"optax {v['optax']}, numpy {v['numpy']}, torch {v['torch']} ({v.get('torch_threads')} threads). "
           f"XLA_FLAGS={m['XLA_FLAGS']!r}.", "",
           "## Training steps (batch 128, SGD momentum 0.9; median seconds per step of the whole family)", "",
           "`conv`: `auto` is `fastgrad` on CPU; for torch, its intra-op threads (1t, 2t). `vs torch`: the faster "
           "PyTorch time (1 or 2 threads) for the same K over this one (> 1: faster than PyTorch). "
           "`vs K=1`: this family's step over one network's step of the same variant (for vmap: of the "
           "sequential K=1). `GFLOP/s`: XLA's FLOP count of the compiled JAX step (for torch and split rows: of "
           "the one-device JAX `sequential` step of the same K, the same work) over the step time; `of matmul`: that rate over "
           f"this machine's float32 matmul rate measured in the same run ({_fmt(m.get('sgemm_gflops'), '.0f')} "
           "GFLOP/s, numpy's BLAS, 4096 x 4096, every core).", "",
           "| model | framework | conv | strategy | K | s/step | images/s | vs K=1 | vs torch | GFLOP/s | of matmul |",
           "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for r in result["training"]:
    lines.append(f"| {r['model']} | {r['framework']} | {r['conv'] or '-'} | {r['strategy']} | {r['k']} | "
                 f"{r['s_per_step']:.4f} | {r['images_per_s']:.0f} | {_fmt(r['relative_to_single'], '.2f')} | "
                 f"{_fmt(r['torch_over_this'], '.2f') if r['framework'] == 'jax' else ''} | "
                 f"{_fmt(r.get('gflops_per_s'), '.0f')} | {_pct(r.get('gflops_per_s'), m.get('sgemm_gflops'))} |")
  lines += ["", "## Barrier evaluation (a twin pair, 11 alphas = 11 networks, batch 1000)", "",
            "| model | networks | examples | seconds | network-examples/s |", "| --- | ---: | ---: | ---: | ---: |"]
  for r in result["barriers"]:
    lines.append(f"| {r['model']} | {r['networks']} | {r['examples']} | {r['seconds']:.2f} | "
                 f"{r['network_examples_per_s']:.0f} |")
  lines += ["", "## Weight matching (`bench/weight_matching.py`, until no permutation improves)", "",
            "| model | case | params | s/match | rounds | L2 before | L2 after |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
  for r in result["weight_matching"]:
    lines.append(f"| {r['model']} | {r['case']} | {r['num_params']} | {r['seconds']:.3f} | {r['rounds']} | "
                 f"{r['l2_before']:.2f} | {r['l2_after']:.3f} |")
  return "\n".join(lines) + "\n"


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true", help="ResNet-20 w1, CNN, MLP; K = 1, 2; one round")
  ap.add_argument("--no_torch", action="store_true", help="skip the PyTorch reference")
  ap.add_argument("--models", default="", help="comma-separated subset of " + ",".join(MODELS))
  ap.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default 3, quick 1)")
  ap.add_argument("--steps", type=int, default=0, help="steps per variant and round (default: as many as fill --seconds)")
  ap.add_argument("--seconds", type=float, default=1.0, help="time per variant and round when --steps is 0")
  ap.add_argument("--eval_examples", type=int, default=0, help="barrier examples (default 2000, quick 1000)")
  ap.add_argument("--out", default="bench/results_cpu", help="writes OUT.json and OUT.md")
  args = ap.parse_args()
  global NO_TORCH
  NO_TORCH = args.no_torch
  models = args.models.split(",") if args.models else (
      ["resnet20_w1", "cnn", "mlp"] if args.quick else [m for m in MODELS if m not in ("cnn_16_32", "resnet20_w1_28")])
  for m in models:
    if m not in MODELS:
      raise SystemExit(f"--models: unknown model {m!r}; allowed: {', '.join(MODELS)}")
  rounds = args.rounds or (1 if args.quick else 3)
  eval_examples = args.eval_examples or (1000 if args.quick else 2000)
  tic = time.time()
  meta = {"command": "python bench/run.py " + " ".join(sys.argv[1:]),
          "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
          "load_before": [round(x, 2) for x in os.getloadavg()], **machine()}
  meta["sgemm_gflops"] = sgemm_gflops()
  print(f"{meta['cpu']}, load {meta['load_before']}, float32 matmul {meta['sgemm_gflops']:.0f} GFLOP/s", flush=True)
  training, barriers, matching = [], [], []
  for m in models:
    rows = bench_training(m, args.quick, rounds, args.steps, args.seconds)
    training += rows
    for r in rows:
      print(f"{r['model']:12s} {r['framework']:5s} {r['conv'] or '-':6s} {r['strategy']:10s} K={r['k']}: "
            f"{r['s_per_step']:8.4f} s/step  {r['images_per_s']:7.0f} img/s  vs K=1 "
            f"{_fmt(r['relative_to_single'], '.2f'):>5s}  torch/this {_fmt(r['torch_over_this'], '.2f')}  "
            f"{_fmt(r['gflops_per_s'], '.0f')} GFLOP/s", flush=True)
  for m in models:
    barriers.append(bench_barriers(m, eval_examples, 1 if args.quick else 3))
    print(f"barriers {m}: {barriers[-1]['seconds']:.2f} s for 11 networks x {eval_examples} examples", flush=True)
  for m in models:
    matching += weight_matching.bench(m, 1 if args.quick else 3)
    print(f"weight matching {m}: {matching[-2]['seconds']:.3f} s (independent), "
          f"{matching[-1]['seconds']:.3f} s (recover)", flush=True)
  meta["load_after"] = [round(x, 2) for x in os.getloadavg()]
  meta["wall_s"] = time.time() - tic
  result = {"meta": meta, "training": training, "barriers": barriers, "weight_matching": matching}
  with open(args.out + ".json", "w") as f:
    json.dump(result, f, indent=1)
  with open(args.out + ".md", "w") as f:
    f.write(markdown(result))
  print(f"wrote {args.out}.json and {args.out}.md")


if __name__ == "__main__":
  main()
