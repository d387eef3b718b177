"""What a sweep cost here, and what one σ column costs as a family against the authors' workflow.

    python -m reproduction.cost --runs=reproduction/map/mlp [--bench=bench/results_cpu.json] [--model=mlp]

(from the repository root).

``--model`` names the bench's model of the runs' network (``mlp``, ``cnn_16_32``, ``resnet20_w1_28``); it must be
that network (the part before ``_`` is the runs' ``model.name``). Without it, MLP runs are priced with ``mlp`` and other
networks get the sweep's cost only. Only runs that train the bench's network itself (every module field equal,
defaults filled in) at the bench's batch (128) with SGD are priced; the others (a study's wider network, larger
batch or Adam) are counted and left out.

Reads every finished run directory under ``--runs`` (``results.json``'s ``timing`` and the launcher's lines
in ``log.txt``) and prints Markdown:

* the sweep's wall time: the sum of its runs' wall times, and the time during which at least one of its
  runs was running (runs overlap when the launcher ran several workers; pauses between sessions do not
  count);
* per run (one σ column: one t, child 0, the σ = 0 twin and the perturbed children, all trained together
  from one trunk): the measured seconds, and the same work done the authors' way (GitHub
  ``gsaltintas/lmc``: one job per σ, each training its own trunk to t and then both twins to T, one network
  at a time), priced with the PyTorch reference's measured seconds per step of one network on this machine
  (``bench/run.py``'s ``torch`` rows, the faster of 1 or 2 threads). Evaluation is priced the same in both
  (this run's own evaluation seconds), so the ratio is set by training.

The authors' cost is a model, not a run of their code: their network steps times the bench's PyTorch step.
The measured side includes whatever else ran on the machine (``log.txt`` lines say when; with two workers
each run shares the two cores with another).
"""

import argparse
import functools
import importlib.util
import json
import re
import sys
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^==== (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) launch: (run|finished after ([0-9.]+) s)")


def torch_step_seconds(bench_json, model: str) -> tuple[float, str]:
  rows = [r for r in json.loads(Path(bench_json).read_text())["training"]
          if r["model"] == model and r["framework"] == "torch" and r["k"] == 1]
  if not rows:
    raise SystemExit(f"--bench: {bench_json} has no PyTorch K=1 row for model {model!r}")
  best = min(rows, key=lambda r: r["s_per_step"])
  return best["s_per_step"], best["conv"]


def _fields(name: str, kwargs: dict) -> dict:
  """The network's full hyperparameters (the module's fields, defaults filled in), lists as tuples."""
  import dataclasses
  from butterfly_jax.models.registry import build_module
  module = build_module(name, 10, **kwargs)
  norm = lambda v: tuple(norm(x) for x in v) if isinstance(v, (list, tuple)) else v
  return {f.name: norm(getattr(module, f.name)) for f in dataclasses.fields(module)
          if f.name not in ("parent", "name")}


@functools.cache
def _bench_models():
  """bench/bench_models.py (the bench's networks and batch), read from its file: bench/ is a folder of scripts, not
  a package."""
  path = Path(__file__).resolve().parents[1] / "bench" / "bench_models.py"
  spec = importlib.util.spec_from_file_location("bench_models", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def unpriced_reason(config: dict, model: str) -> str:
  """Why a run cannot be priced with the bench's ``model`` step ("" if it can): the bench times that network at
  its batch (``bench_models.BATCH``) under SGD with momentum, so another width, batch or optimizer is another
  step."""
  bench = _bench_models()
  name, kwargs, _ = bench.MODELS[model]
  m = config.get("model", {})
  if _fields(m.get("name", name), m.get("kwargs", {})) != _fields(name, kwargs):
    return "network"
  if int(config.get("train", {}).get("batch_size", bench.BATCH)) != bench.BATCH:
    return "batch"
  if config.get("optim", {}).get("name", "sgd") != "sgd":
    return "optimizer"
  return ""


def bench_cpu(bench_json) -> str:
  """The CPU the bench ran on (its ``meta.cpu``), or "" where it does not say."""
  return json.loads(Path(bench_json).read_text()).get("meta", {}).get("cpu", "")


def launcher_span(log: Path):
  """(start, end) of the last attempt the launcher wrote in a run's log.txt, or None."""
  start = end = None
  for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
    m = STAMP.match(line)
    if m and m.group(2) == "run":
      start, end = datetime.fromisoformat(m.group(1)), None
    elif m:
      end = datetime.fromisoformat(m.group(1))
  return (start, end) if start and end else None


def runs(root):
  for path in sorted(Path(root).glob("*/results.json")):
    r = json.loads(path.read_text())
    c = json.loads((path.parent / "config.json").read_text())
    yield path.parent, r, c


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--runs", required=True, help="a sweep's runs directory")
  p.add_argument("--bench", default="bench/results_cpu.json", help="bench/run.py's JSON with the PyTorch rows")
  p.add_argument("--model", default="", help="the bench's model name matching the runs' network (mlp, "
                 "cnn_16_32, ...); default: mlp for MLP runs, and no σ-column comparison for other networks")
  args = p.parse_args(argv)
  names = sorted({c.get("model", {}).get("name", "?") for _, _, c in runs(args.runs)})
  model = args.model or ("mlp" if names == ["mlp"] else "")
  if model and names != [model.split("_")[0]]:
    print(f"error: --model: the bench's {model!r} is not the runs' network ({', '.join(names)}); give the bench "
          f"model of that network", file=sys.stderr)
    return 2
  step_s, threads = torch_step_seconds(args.bench, model) if model else (None, None)
  rows, spans, total, hosts = [], [], 0.0, {}
  for d, r, c in runs(args.runs):
    hosts[d.name] = r.get("provenance", {}).get("host_cpu") or ""
    timing, steps = r["timing"], r["steps"]
    t, big_t = int(steps["t"]), int(steps["T"])
    ends = [int(e) for e in steps.get("child_end_steps", [])] or [big_t] * len(r["children"])
    k = len(r["children"])
    ours_train = timing["trunk_s"] + timing["children_s"]
    ours = timing["total_s"]
    # the authors' way: one job per compared child (the twin and each σ), its own trunk and both twins
    theirs_steps = sum(t + 2 * (e - t) for e in ends[1:])
    rows.append((d.name, t, k, ours_train, ours, theirs_steps, timing["eval_s"] + timing.get("align_s", 0.0),
                 unpriced_reason(c, model) if model else ""))
    total += ours
    span = launcher_span(d / "log.txt")
    if span:
      spans.append(span)
  if not rows:
    print(f"error: --runs: no finished runs under {args.runs}", file=sys.stderr)
    return 2
  print(f"## Cost of `{args.runs}`\n")
  print(f"{len(rows)} finished runs; the sum of their wall times (results.json `timing.total_s`): "
        f"{total / 3600:.2f} h.", end=" ")
  if spans:
    busy, cur = 0.0, None
    for start, end in sorted(spans):  # the union of the runs' intervals: time some run of the sweep was running
      if cur and start <= cur[1]:
        cur = (cur[0], max(cur[1], end))
      else:
        busy += (cur[1] - cur[0]).total_seconds() if cur else 0.0
        cur = (start, end)
    busy += (cur[1] - cur[0]).total_seconds()
    first, last = min(s[0] for s in spans), max(s[1] for s in spans)
    print(f"Time during which at least one of its runs was running (the union of the launcher's start and end "
          f"stamps in log.txt, {len(spans)} runs, {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC): "
          f"{busy / 3600:.2f} h.")
  else:
    print()
  if not model:
    print(f"\nNo σ-column comparison: the runs' network ({', '.join(names)}) has no bench model here (`--model`).")
    return 0
  cpu = bench_cpu(args.bench)
  print(f"\n## One σ column as a family vs the authors' workflow\n\nPyTorch reference, one network, on "
        f"{cpu or 'the bench machine'}: {step_s * 1e3:.2f} ms per step ({threads}; `{args.bench}`). Evaluation "
        f"priced as this run's own.")
  priced = {r[0] for r in rows if not r[-1]}
  elsewhere = sorted(n for n, h in hosts.items() if n in priced and cpu and h and not h.startswith(cpu))
  unknown = sorted(n for n, h in hosts.items() if n in priced and not h)
  if elsewhere:
    print(f"Ran on another CPU than the bench's (told by model name), so their ratio compares two machines: "
          f"{', '.join(elsewhere)}.")
  if unknown and cpu:
    print(f"{len(unknown)} of {len(priced)} priced runs do not record their CPU (they predate `provenance.host_cpu`).")
  print()
  # priced here: the authors' training steps at PyTorch's step time, plus this run's own evaluation
  skipped = [(n, why) for n, *_, why in rows if why]
  if skipped:
    kinds = sorted({why for _, why in skipped})
    print(f"Not priced: {len(skipped)} of {len(rows)} runs, whose {' or '.join(kinds)} differs from the bench's "
          f"(`{model}` at batch {_bench_models().BATCH}, SGD with momentum), so its PyTorch step is not theirs.\n")
  rows = [(n, t, k, ot, o, steps * step_s, steps * step_s + ev) for n, t, k, ot, o, steps, ev, why in rows
          if not why]
  if not rows:
    print("\nNo run trains the bench's network as the bench does: no σ-column comparison.")
    return 0
  print("| run | t | K | ours: train s | ours: total s | authors: train s | authors: total s | ratio (total) |")
  print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
  ratios = []
  for name, t, k, ot, o, tt, tot in sorted(rows, key=lambda r: (r[1], r[0])):
    ratios.append(tot / o)
    print(f"| {name} | {t} | {k} | {ot:.0f} | {o:.0f} | {tt:.0f} | {tot:.0f} | {tot / o:.2f} |")
  sum_ours = sum(r[4] for r in rows)
  sum_theirs = sum(r[6] for r in rows)
  print(f"\nOver all {len(rows)} runs: ours {sum_ours / 3600:.2f} h, the authors' way {sum_theirs / 3600:.2f} h "
        f"(ratio {sum_theirs / sum_ours:.2f}; per run {min(ratios):.2f} to {max(ratios):.2f}).")
  return 0


if __name__ == "__main__":
  sys.exit(main())
