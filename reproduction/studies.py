"""The hyperparameter studies (``configs/reproduce_studies.py``): each setting's barriers against the base's.

    python -m reproduction.claims studies --table=reproduction/studies/mlp_report/table.parquet \
        [--map=reproduction/map/mlp_report/table.parquet] [--scale=reproduction/map/mlp_scale] \
        > reproduction/studies/mlp_claims.md

A run's setting is found from its config columns: the fields any setting changes, compared with the base
config's values and each setting's overrides (``setting_column``). A setting is compared with the base cell by
cell, (t in epochs, σ > 0): the train-loss barrier's seed mean [min, max], their ratio, and a comparison that
counts only separated seed ranges (``compare``): "lower" where every seed of the setting lies below every seed
of the base, "higher" the reverse, "overlap" otherwise. With two seeds this is a coarse test; it says whether
the seeds disagree, not more.

A seed whose child 0 did not learn (its train error above ``UNTRAINED_ERROR``, in the setting's run or the
base's) is left out of the comparison: both children of such a pair may sit at chance, and a barrier against a
network that never trained says nothing about the stability of training. A cell is judged on the seeds left
(the comparison names them), and not judged where none is left; the verdict counts both kinds of cell apart.
"""

import math
from pathlib import Path

import numpy as np
import pandas as pd

from butterfly_jax.config import config_file
from butterfly_jax.report.instability import barrier_values, fmt_value, pairs
from reproduction.scale import md_table, scale_markdown, scale_of_barriers
from reproduction.stats import UNTRAINED_ERROR

ROOT_CONFIG = "reproduce_studies.py"
B = "vs_child0.barrier.{}.{}"
NOT_JUDGED = "not judged"

# The poster's claims: (setting, the base-relative direction the claim predicts for the barrier, what it says).
CLAIMS = (
    ("warmup2ep", "lower", "a longer warm-up (2 epochs against 1) makes training more stable"),
    ("warmup0", "higher", "no warm-up (against 1 epoch) makes training less stable"),
    ("batch512", "lower", "a larger batch (512 against 128) makes training more stable"),
    ("width2x", "lower", "a larger width (2x) makes training more stable"),
    ("adam", "higher", "Adam (against SGD) makes training less stable"),
    ("adam3e-4", "higher", "Adam at peak lr 3e-4 (against SGD) makes training less stable"),
    ("adam3e-3", "higher", "Adam at peak lr 3e-3 (against SGD) makes training less stable"),
    ("wd5e-4", "higher", "weight decay 5e-4 (against none) makes training less stable"),
    ("wd5e-3", "higher", "weight decay 5e-3 (against none) makes training less stable"),
    ("combined", "lower", "the three stabilising settings together make training more stable"),
)


def studies_module():
  return config_file(Path(__file__).resolve().parents[1] / "configs" / ROOT_CONFIG)


def _norm(v):
  if isinstance(v, (list, tuple, np.ndarray)):
    return tuple(_norm(x) for x in v)
  if isinstance(v, (np.integer,)):
    return int(v)
  if isinstance(v, (np.floating,)):
    return float(v)
  return v


def _base_value(config, key):
  node = config
  for part in key.split("."):
    node = node[part]
  return _norm(node)


def setting_column(t: pd.DataFrame, phase: str, module=None) -> pd.Series:
  """The setting name of each row, from the config columns of the fields the settings change; ValueError
  naming the run if a row matches none."""
  module = module or studies_module()
  settings = module.settings(phase)
  base = module.get_config(phase)
  fields = sorted({k for s in settings.values() for k in s})
  expected = {name: {k: _norm(s.get(k, _base_value(base, k))) for k in fields} for name, s in settings.items()}
  names = []
  for _, row in t.iterrows():
    have = {k: _norm(row[k]) if k in row.index else None for k in fields}
    match = [name for name, want in expected.items() if all(_same(have[k], want[k]) for k in fields)]
    if not match:
      raise ValueError(f"run {row.get('run')}: its config matches no setting of configs/{ROOT_CONFIG}:{phase} "
                       f"(fields {have})")
    names.append(match[0])
  return pd.Series(names, index=t.index, name="setting")


def _same(a, b):
  if isinstance(a, float) or isinstance(b, float):
    try:
      return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    except (TypeError, ValueError):
      return False
  return str(a) == str(b) if isinstance(a, str) or isinstance(b, str) else a == b


def compare(setting: np.ndarray, base: np.ndarray) -> str:
  """"lower" if every setting seed is below every base seed, "higher" for the reverse, else "overlap"."""
  setting, base = np.asarray(setting, float), np.asarray(base, float)
  if not len(setting) or not len(base) or not np.isfinite(setting).all() or not np.isfinite(base).all():
    return "n/a"
  if setting.max() < base.min():
    return "lower"
  if setting.min() > base.max():
    return "higher"
  return "overlap"


def cells(t: pd.DataFrame, metric: str = "train.loss") -> pd.DataFrame:
  """One row per (setting, t in epochs, σ > 0): the seeds' barriers (diverged pairs as inf)."""
  d = t[t["sigma"] > 0]
  d = d.assign(value=barrier_values(d, metric))
  if "child0.train.accuracy" in d:
    d = d.assign(untrained=1 - d["child0.train.accuracy"].astype(float) > UNTRAINED_ERROR)
  else:
    d = d.assign(untrained=False)
  # the perturbed children that learned where child 0 did not: a perturbation decided whether training worked
  learned = (1 - d["train.accuracy"].astype(float) <= UNTRAINED_ERROR) if "train.accuracy" in d else False
  d = d.assign(sibling_learned=d["untrained"] & learned)
  rows = []
  for (setting, te, sigma), g in d.groupby(["setting", "t_epochs", "sigma"]):
    g = g.sort_values("seed")
    rows.append({"setting": setting, "t_epochs": float(te), "sigma": float(sigma),
                 "values": g["value"].to_numpy(), "seeds": g["seed"].astype(int).to_numpy(),
                 "dead": g["untrained"].to_numpy(bool), "untrained": int(g["untrained"].sum()),
                 "sibling_learned": int(g["sibling_learned"].sum())})
  return pd.DataFrame(rows)


def verdicts(c: pd.DataFrame) -> pd.DataFrame:
  """Each setting's cells beside the base's: ratio of seed means and :func:`compare`, over the seeds whose
  child 0 learned in both the setting's run and the base's (``NOT_JUDGED`` where no seed is left); ``n`` the
  seeds compared, ``seeds_left_out`` those dropped."""
  base = {(r.t_epochs, r.sigma): r for r in c[c["setting"] == "base"].itertuples()}
  rows = []
  for r in c[c["setting"] != "base"].itertuples():
    br = base.get((r.t_epochs, r.sigma))
    if br is None:
      continue
    dead = {int(s) for row in (r, br) for s, d in zip(row.seeds, row.dead) if d}
    keep = np.array([int(s) not in dead for s in r.seeds], bool)
    keep_b = np.array([int(s) not in dead for s in br.seeds], bool)
    a, b = np.asarray(r.values, float)[keep], np.asarray(br.values, float)[keep_b]
    judged = len(a) > 0 and len(b) > 0
    ratio = np.mean(a) / np.mean(b) if judged and np.isfinite(a).all() and np.mean(b) > 0 else math.nan
    comparison = compare(a, b) if judged else NOT_JUDGED
    if judged and dead:
      kept = sorted(set(int(x) for x in r.seeds[keep]))
      comparison += f" (seed{'s' if len(kept) > 1 else ''} {', '.join(str(x) for x in kept)} only)"
    rows.append({"setting": r.setting, "t_epochs": r.t_epochs, "sigma": r.sigma, "ratio": ratio,
                 "comparison": comparison, "n": int(len(a)), "n_base": int(len(b)),
                 "seeds_left_out": len(dead) if judged else 0, "untrained": r.untrained,
                 "sibling_learned": r.sibling_learned})
  return pd.DataFrame(rows)


def claim_verdict(v: pd.DataFrame, setting: str, direction: str) -> str:
  """Over the setting's cells: "holds" if every cell is separated in the claimed direction, "contradicted" if
  every cell is separated the other way, "mixed" if both occur, else "not resolved" (with counts)."""
  g = v[v["setting"] == setting]
  if g.empty:
    return "untested (no runs)"
  skipped = int((g["comparison"] == NOT_JUDGED).sum())
  dead = int(g["untrained"].sum()) if "untrained" in g else 0
  learned = int(g["sibling_learned"].sum()) if "sibling_learned" in g else 0
  if skipped == len(g):
    siblings = (f"; yet {learned} of {dead} perturbed children whose child 0 did not learn did: the perturbation "
                f"decided whether training worked" if learned else "")
    return (f"not judged (child 0 did not learn, train error > {UNTRAINED_ERROR:g}, in every cell: its barriers "
            f"compare a network at chance{siblings})")
  g = g[g["comparison"] != NOT_JUDGED]
  other = "higher" if direction == "lower" else "lower"
  kind = g["comparison"].str.split(" ").str[0]
  agree, against = int((kind == direction).sum()), int((kind == other).sum())
  n = len(g)
  counts = f"{agree} of {n} cells {direction}, {against} {other}"
  partial = int((g["seeds_left_out"] > 0).sum()) if "seeds_left_out" in g else 0
  if partial:
    counts += f"; {partial} cells judged only on the seeds whose child 0 learned"
  if skipped:
    counts += f"; {skipped} cells not judged: child 0 did not learn"
  if learned:
    counts += (f"; {learned} of {dead} perturbed children whose child 0 did not learn did: the perturbation "
               f"decided whether training worked")
  if agree == n:
    return f"holds ({counts})"
  if against == n:
    return f"contradicted ({counts})"
  if agree and against:
    return f"mixed ({counts})"
  if agree:
    return f"partly ({counts}; the rest overlap)"
  if against:
    return f"partly against ({counts}; the rest overlap)"
  return f"not resolved ({counts}; seed ranges overlap)"


def _cell_text(values) -> str:
  v = np.asarray(values, float)
  if not np.isfinite(v).all():
    return f"diverged in {int((~np.isfinite(v)).sum())} of {len(v)}"
  return f"{fmt_value(v.mean())} [{fmt_value(v.min())}, {fmt_value(v.max())}]"


def scale_text(t: pd.DataFrame, scale) -> str:
  """The base's yardstick: the full-permutation barrier of the map's network (``scale``: the map's scale runs;
  the base is the map's recipe) and child 0's test-error gap (:func:`reproduction.scale.scale_markdown`)."""
  return scale_markdown(*scale_of_barriers(scale, t[t["setting"] == "base"]),
                        heading="## The scale a barrier is read against (the base setting)",
                        child0="The base's child 0") + "\n"


def report(t: pd.DataFrame, phase: str, map_table: pd.DataFrame | None = None, scale=None) -> str:
  """The studies' Markdown: per setting, child 0's end state, the barrier cells beside the base's, the verdict
  per claim, the σ = 0 twins, and (``map_table``) the base cells against the same networks in the map; with
  ``scale`` (the map's scale runs), the base's full-permutation barrier first."""
  t = pairs(t)
  t["setting"] = setting_column(t, phase)
  order = list(studies_module().settings(phase))
  out = [f"From {t['run'].nunique()} finished runs of `configs/{ROOT_CONFIG}:{phase}` "
         f"({t[t['sigma'] > 0].shape[0]} pairs with σ > 0; seeds {sorted(int(x) for x in t['seed'].unique())}; "
         f"settings: {', '.join(s for s in order if s in set(t['setting']))}).\n"]
  if scale:
    out.append(scale_text(t, scale))
  out.append("## Child 0 at T, per setting (seed mean [min, max]; the scale the barriers are read against)\n")
  rows = []
  c0 = t[t["child"] == 1]
  for s in order:
    g = c0[c0["setting"] == s].drop_duplicates(["seed", "t_epochs"])
    if g.empty:
      continue
    train_err, test_err = 1 - g["child0.train.accuracy"].astype(float), 1 - g["child0.test.accuracy"].astype(float)
    rows.append([s, len(g), _cell_text(train_err), _cell_text(test_err), _cell_text(test_err - train_err),
                 _cell_text(g["child0.train.loss"].astype(float))])
  out.append(md_table(["setting", "runs", "train error", "test error", "test-error gap (test − train)",
                       "train loss"], rows) + "\n")
  for metric in ("train.loss", "train.error", "test.error"):
    c = cells(t, metric)
    v = verdicts(c)
    out.append(f"## `{metric}` barrier: seed mean [min, max], and against the base\n")
    out.append("Each cell: the setting's barrier; below it, the ratio of seed means to the base's and whether "
               "the seed ranges separate (lower / higher / overlap).\n")
    cols = sorted({(r.t_epochs, r.sigma) for r in c.itertuples()})
    rows = []
    for s in order:
      cs = c[c["setting"] == s]
      if cs.empty:
        continue
      row = [s]
      for te, sigma in cols:
        hit = cs[(cs["t_epochs"] == te) & (cs["sigma"] == sigma)]
        if hit.empty:
          row.append("")
          continue
        text = _cell_text(hit["values"].iloc[0])
        vv = v[(v["setting"] == s) & (v["t_epochs"] == te) & (v["sigma"] == sigma)]
        if len(vv):
          text += f"<br>×{fmt_value(vv['ratio'].iloc[0])}, {vv['comparison'].iloc[0]}"
        row.append(text)
      rows.append(row)
    out.append(md_table(["setting"] + [f"t = {te:g} ep, σ = {sigma:g}" for te, sigma in cols], rows) + "\n")
    if metric == "train.loss":
      verdict_rows = [[s, claim, direction, claim_verdict(v, s, direction)] for s, direction, claim in CLAIMS]
  out.append("## Verdict per claim (train-loss barrier, every (t, σ > 0) cell)\n")
  out.append(md_table(["setting", "claim", "predicted barrier", "verdict"], verdict_rows) + "\n")
  out.append(init_instability(t))
  out.append(perturbation_decides(t))
  zero = t[t["sigma"] == 0]
  cols = [B.format(s, m) for s in ("train", "test") for m in ("loss", "error")] + ["vs_child0.l2"]
  worst = float(np.nanmax(np.abs(zero[cols].astype(float).to_numpy()))) if len(zero) else float("nan")
  out.append(f"## σ = 0 twins\n\n{len(zero)} pairs over every setting; the largest |barrier| or L2 among them: "
             f"{worst!r}.\n")
  if map_table is not None:
    out.append(against_map(t, map_table))
  return "\n".join(out)


def perturbation_decides(t: pd.DataFrame) -> str:
  """The runs whose child 0 did not learn, child by child: where a perturbed sibling learned, the
  perturbation decided whether training worked."""
  if "child0.train.accuracy" not in t or "train.accuracy" not in t:
    return ""
  dead = t[1 - t["child0.train.accuracy"].astype(float) > UNTRAINED_ERROR]
  if dead.empty:
    return "## Runs whose child 0 did not learn\n\nNone: child 0 learned in every run.\n"
  rows = [[r["setting"], int(r["seed"]), f"{float(r['t_epochs']):g}", f"{float(r['sigma']):g}",
           fmt_value(1 - float(r["child0.train.accuracy"])), fmt_value(1 - float(r["train.accuracy"])),
           fmt_value(float(r["train.loss"])) if "train.loss" in r else "",
           "yes" if 1 - float(r["train.accuracy"]) <= UNTRAINED_ERROR else "no"]
          for _, r in dead.sort_values(["setting", "seed", "t_epochs", "sigma"]).iterrows()]
  return (f"## Runs whose child 0 did not learn (train error > {UNTRAINED_ERROR:g}), child by child\n\n"
          + md_table(["setting", "seed", "t (ep)", "σ", "child 0 train error", "child train error",
                      "child train loss", "child learned"], rows) + "\n")


def init_instability(t: pd.DataFrame) -> str:
  """The poster: even the most stable combination does not remove the instability at initialisation."""
  g = t[(t["t_epochs"].astype(float) == 0) & (t["sigma"] > 0)]
  rows = []
  for s in ("base", "combined"):
    gs = g[g["setting"] == s]
    for sigma, gg in gs.groupby("sigma"):
      rows.append([s, f"{sigma:g}", _cell_text(gg[B.format("train", "loss")].astype(float)),
                   _cell_text(gg[B.format("train", "error")].astype(float)), len(gg)])
  if not rows:
    return "## Instability at initialisation\n\nNo runs at t = 0.\n"
  return ("## Instability at initialisation: base and combined, t = 0\n\n"
          + md_table(["setting", "σ", "train-loss barrier", "train-error barrier", "n"], rows) + "\n")


def against_map(t: pd.DataFrame, m: pd.DataFrame) -> str:
  """The base's pairs are the same recipe as the map's pairs at the same (seed, t, σ), and members do not
  depend on their siblings: where child 0 is bitwise the same network in both, the barriers must be equal.
  Where child 0 differs, the two ran under other bits (another host CPU: BUILD_NOTES.md, "Known limits")."""
  m = pairs(m)
  m = m[m["kind"] == "batch"]
  key = ["seed", "t", "sigma"]
  cols = [B.format("train", "loss"), "vs_child0.l2", "child0.train.loss"]
  base = t[t["setting"] == "base"][key + cols]
  both = base.merge(m[key + cols], on=key, suffixes=("_study", "_map"))
  if both.empty:
    return "## The base against the map\n\nNo pair of the base is in the map table.\n"
  same0 = both["child0.train.loss_study"].astype(float) == both["child0.train.loss_map"].astype(float)
  equal = same0.copy()
  for c in cols[:2]:
    equal &= both[c + "_study"].astype(float) == both[c + "_map"].astype(float)
  differ = both[~same0]
  text = (f"## The base against the map\n\n{len(both)} pairs of the base are also in the map (same seed, t and σ; "
          f"the map's family has more siblings). In {int(same0.sum())} of them child 0 is bitwise the same "
          f"network in both, and {int(equal.sum())} of those have equal barriers and L2 (bitwise).")
  if len(differ):
    gap = float(np.abs(differ[cols[0] + "_study"].astype(float) - differ[cols[0] + "_map"].astype(float)).max())
    text += (f" In the other {len(differ)} (seeds {sorted(int(x) for x in differ['seed'].unique())}) child 0 "
             f"itself differs (train loss {differ['child0.train.loss_study'].iloc[0]:.6f} here against "
             f"{differ['child0.train.loss_map'].iloc[0]:.6f} in the map): those map runs computed other bits "
             f"from the same recipe, and their train-loss barriers differ by up to {gap:.4f}.")
  return text + "\n"
