"""Compares the results.json of two runs of bench/same_results.sh (before and after a change), leaving out what
records where and when (provenance, timing) and the folders the runs and the package lay in.

    python bench/same_results.py BEFORE AFTER   # exit status 1 if any run differs or is missing
"""

import json
import re
import sys
from pathlib import Path

CODE = re.compile(r"[^:\s]*/(?=butterfly_jax/)")  # the package's folder, wherever it lay

SKIP = {"provenance", "timing"}


def strip(x, root):
  if isinstance(x, dict):
    return {k: strip(v, root) for k, v in x.items() if k not in SKIP}
  if isinstance(x, list):
    return [strip(v, root) for v in x]
  if isinstance(x, str):
    return CODE.sub("CODE/", x.replace(root, "ROOT"))
  return x


a, b = Path(sys.argv[1]), Path(sys.argv[2])
bad = 0
for run in sorted(p.name for p in a.iterdir() if p.is_dir()):
  ra, rb = a / run / "results.json", b / run / "results.json"
  if not rb.exists():
    print(f"{run}: missing after"); bad += 1; continue
  ja = strip(json.loads(ra.read_text()), str(a / run))
  jb = strip(json.loads(rb.read_text()), str(b / run))
  same = json.dumps(ja, sort_keys=True) == json.dumps(jb, sort_keys=True)
  if not same:
    bad += 1
    for k in sorted(set(ja) | set(jb)):
      if json.dumps(ja.get(k), sort_keys=True) != json.dumps(jb.get(k), sort_keys=True):
        print(f"{run}: differs in {k}")
  print(f"{run}: {'bitwise identical' if same else 'DIFFERENT'} (results.json without provenance and timing)")
sys.exit(1 if bad else 0)
