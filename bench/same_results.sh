#!/bin/bash
# Six fixed configs (quickstart, smoke, gaussian, one weight, aligned with biases, tiny BERT) run into DIR with the
# butterfly_jax that Python imports here; run it before and after a change that must not change results, then
# `python bench/same_results.py BEFORE AFTER` compares the results.json files (provenance and timing aside).
# For the "before" side from an exported revision: CODE=/path/to/export PYTHONPATH=/path/to/export bench/same_results.sh DIR
set -e
OUT=$(realpath -m "$1"); mkdir -p "$OUT"
cd "${CODE:-$(dirname "$0")/..}"
run() { name=$1; shift; rm -rf "$OUT/$name"
  python -m butterfly_jax.main --workdir="$OUT/$name" "$@" > "$OUT/$name.log" 2>&1 || { echo "FAILED $name"; tail -5 "$OUT/$name.log"; }; }
run quickstart
run smoke --config=configs/smoke.py
run gaussian --config=configs/smoke.py --config.perturb.kind=gaussian
run single --config=configs/smoke.py --config.perturb.kind=gaussian --config.perturb.mask.single=random \
    --config.perturb.scales='(0.0,0.1,10.0)'
run aligned --config=configs/smoke.py --config.eval.align_bias=True
run text --config=configs/glue_tiny.py
