"""How much of a sigma perturbation survives when the weights are held in bf16 (``train.param_dtype``).

    python bench/bf16_perturbation.py [--out=bench/bf16_perturbation.json]

The authors hold OLMo's weights in bf16 (``torch_dtype=bfloat16``): AdamW and the perturbation ``p.add_(noise)``
run in bf16, so ``theta' = round_bf16(theta + sigma * eps)`` and a weight whose change is under half its bf16
spacing keeps its value (their code then zeroes those noise entries, so the noise they record is the change that
survived). This measures, on a random tiny OLMo (every weight drawn N(0, 0.02), OLMo's init and ours: OLMo has
no norm weights and no biases, so every parameter is perturbed), for each sigma and two directions:

* ``gaussian``: N(0, 0.02^2) per weight (the gaussian perturbation), normalised to ``sigma * E_init`` with
  ``E_init = sqrt(sum of 0.02^2 * numel)`` over all the weights (:func:`butterfly_jax.core.perturb.normalised`);
* ``batch``: the loss gradient on one batch of random tokens and labels, normalised the same way (a gradient is
  far from uniform: a few weights, the embedding rows of the batch's tokens, take most of its norm);

(i) ``changed``: the fraction of weights whose bf16 value changed; (ii) ``kept_norm``:
``||round_bf16(theta + sigma eps) - theta|| / ||sigma eps||``, the fraction of the perturbation's norm that
survives (it may exceed 1 where rounding moves a weight by a whole spacing); (iii) ``kept_norm_f32``: the same
for float32 weights (``perturb.apply``, about 1); ``cosine``, between the realised bf16 change and
``sigma eps``; and ``along``, ``<change, sigma eps> / ||sigma eps||^2`` (``kept_norm * cosine``): how much of the
intended perturbation is realised along its own direction (the rest of the change is rounding error).

Why a tiny model suffices. With ``eps`` normalised to ``E_init``, the per-weight change is
``sigma * 0.02 * z`` (gaussian: ``z`` a standard normal, the same for any number of weights, since both
``||eps||^2`` and ``E_init^2`` are ``0.02^2`` times the weight count), and the weight itself is ``0.02 * u``. Whether
the change survives bf16 rounding depends only on the ratio of the change to the weight's spacing,
``2^-8 .. 2^-7`` times ``|w|``, that is on ``sigma * z / u``: not on 0.02 and not on the weight count. The
measured fractions are therefore those of OLMo-1B at its init; the script checks this by measuring two widths.
A pre-trained OLMo's weights are not N(0, 0.02) (their magnitudes spread over layers), so there the fractions
shift with ``|w|`` layer by layer; the gradient direction, concentrated on few weights, depends on the batch
too. Runs in seconds on a CPU.
"""

import argparse
import json
import platform

import jax
import jax.numpy as jnp
import numpy as np

from butterfly_jax.core import members, perturb, tree_math
from butterfly_jax.models import make_model

SIGMAS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
INIT_STD = 0.02
LENGTH = 16
BATCH = 32
SIZES = ({"vocab_size": 512, "hidden": 64, "layers": 2, "heads": 4, "intermediate": 128},
         {"vocab_size": 512, "hidden": 256, "layers": 2, "heads": 4, "intermediate": 512})


def _leaves(tree):
  return [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(tree)]


def measure(kwargs: dict, seed: int = 0) -> dict:
  apply_fn, init_fn = make_model("olmo", (3, LENGTH), 2, max_positions=LENGTH, **kwargs)
  params = init_fn(jax.random.key(seed))                        # float32, N(0, 0.02) everywhere
  held = jax.tree_util.tree_map(lambda p: p.astype(jnp.bfloat16), params)  # rounded once, as a run holds them
  n = sum(x.size for x in jax.tree_util.tree_leaves(params))
  stds = jax.tree_util.tree_map(lambda p: INIT_STD, params)
  e_init = float(np.sqrt(INIT_STD ** 2 * n))
  mask = jax.tree_util.tree_map(lambda p: jnp.ones(p.shape, jnp.float32), params)
  ids = jax.random.randint(jax.random.key(seed + 1), (BATCH, LENGTH), 0, kwargs["vocab_size"])
  x = jnp.stack([ids, jnp.zeros_like(ids), jnp.ones_like(ids)], axis=1).astype(jnp.int32)
  y = jax.random.randint(jax.random.key(seed + 2), (BATCH,), 0, 2)
  directions = {
      "gaussian": perturb.gaussian_direction(jax.random.key(seed + 3), held, stds),
      "batch": perturb.batch_direction(members.cross_entropy(apply_fn), held, (x, y)),  # bf16, as the authors'
  }
  out = {"model": dict(kwargs, max_positions=LENGTH), "num_params": int(n), "e_init": e_init,
         "init_std_measured": float(np.std(np.concatenate([l.ravel() for l in _leaves(params)]))), "rows": []}
  theta, theta32 = _leaves(held), _leaves(params)
  for kind, direction in directions.items():
    eps, _ = perturb.normalised(direction, mask, jnp.float32(e_init))
    e = _leaves(eps)
    for sigma in SIGMAS:
      want = [sigma * ei for ei in e]
      want_norm = np.sqrt(sum(np.sum(w * w) for w in want))
      got = [a - b for a, b in zip(_leaves(perturb.apply(held, eps, jnp.float32(sigma))), theta)]
      got32 = [a - b for a, b in zip(_leaves(perturb.apply(params, eps, jnp.float32(sigma))), theta32)]
      norm = lambda t: np.sqrt(sum(np.sum(d * d) for d in t))
      out["rows"].append({
          "direction": kind, "sigma": sigma,
          "changed": float(sum(np.count_nonzero(d) for d in got) / n),
          "kept_norm": float(norm(got) / want_norm),
          "cosine": float(sum(np.sum(d * w) for d, w in zip(got, want)) / (norm(got) * want_norm + 1e-300)),
          "along": float(sum(np.sum(d * w) for d, w in zip(got, want)) / want_norm ** 2),
          "changed_f32": float(sum(np.count_nonzero(d) for d in got32) / n),
          "kept_norm_f32": float(norm(got32) / want_norm)})
  return out


def table(results) -> str:
  lines = ["| direction | σ | params | changed (bf16) | kept norm (bf16) | cosine (bf16) | along (bf16) | "
           "kept norm (f32) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  rows = sorted(((r["direction"] != "gaussian", r["sigma"], size["num_params"], r) for size in results
                 for r in size["rows"]), key=lambda t: t[:3])
  for _, sigma, n, r in rows:
    lines.append(f"| {r['direction']} | {sigma:g} | {n:,} | {r['changed']:.4f} | {r['kept_norm']:.4f} | "
                 f"{r['cosine']:.4f} | {r['along']:.4f} | {r['kept_norm_f32']:.6f} |")
  return "\n".join(lines)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", default="bench/bf16_perturbation.json")
  args = ap.parse_args()
  results = [measure(kw) for kw in SIZES]
  print(table(results))
  meta = {"command": "python bench/bf16_perturbation.py", "machine": platform.platform(),
          "backend": jax.default_backend(), "jax": jax.__version__}
  with open(args.out, "w") as f:
    json.dump({"meta": meta, "results": results}, f, indent=1)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
