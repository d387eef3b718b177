"""The instability map (butterfly_jax/report/instability.py) and its command: σ*(t) with its bracket and censoring,
the seeds' spread, the seed-bootstrap Spearman statistics, the σ*(t) figure's panels and markers, and
``python -m butterfly_jax.report --table=... --map`` on small made-up tables."""

import json
import math

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from butterfly_jax.report import ReportError, instability  # noqa: E402
from butterfly_jax.report.__main__ import main as report_main  # noqa: E402

SPE = 100  # steps per epoch of the made-up tables


def _table(values, kind="batch", single="", extra=None, test_error=False):
  """SYNTHETIC: a report table; ``values[t][seed][sigma]`` = the train-loss barrier, ``inf`` a diverged pair. Each
  (t, seed) is one run with child 0, the σ = 0 twin (barrier 0) and a child per σ; ``extra``: more columns;
  ``test_error``: a test-error barrier column too, a fifth of the train loss."""
  rows = []
  for t, by_seed in values.items():
    for seed, by_sigma in by_seed.items():
      for child, (sigma, v) in enumerate([(0.0, 0.0)] + sorted(by_sigma.items()), start=1):
        diverged = not np.isfinite(v)
        rows.append({"run": f"t={t},seed={seed},{kind}", "status": "finished", "child": child, "seed": seed, "t": t,
                     "steps_per_epoch": SPE, "perturb.scale": sigma, "perturb.kind": kind,
                     "perturb.mask.single": single, "perturbation": kind + ("/single-weight" if single else ""),
                     "pair_diverged": diverged, "vs_child0.barrier.train.loss": np.nan if diverged else v,
                     "vs_child0.l2": np.nan if diverged else 10 * v + sigma, "vs_child0.cka": 0.1 * v,
                     **({"vs_child0.barrier.test.error": np.nan if diverged else v / 5} if test_error else {}),
                     **(extra or {})})
  return pd.DataFrame(rows)


# t = 0: every σ already reaches 0.01; t = 100: the seed mean crosses between 1e-4 and 1e-2; t = 200: seed 1 diverges
# at σ = 1 (the mean is infinite there: above any threshold); t = 400: no σ reaches 0.01
CROSSING = {0: {0: {1e-4: 0.05, 1e-2: 0.06, 1.0: 0.5}, 1: {1e-4: 0.04, 1e-2: 0.05, 1.0: 0.6}},
            100: {0: {1e-4: 0.002, 1e-2: 0.1, 1.0: 0.5}, 1: {1e-4: 0.0, 1e-2: 0.02, 1.0: 0.4}},
            200: {0: {1e-4: 0.0, 1e-2: 0.001, 1.0: 0.002}, 1: {1e-4: 0.0, 1e-2: 0.001, 1.0: math.inf}},
            400: {0: {1e-4: 0.0, 1e-2: 0.0, 1.0: 0.001}, 1: {1e-4: 0.0, 1e-2: 0.0, 1.0: 0.003}}}


def test_sigma_star_is_bracketed_by_two_measured_sigma_or_censored_at_the_grid():
  star = instability.sigma_star(instability.pairs(_table(CROSSING)), "train.loss", 0.01).set_index("t")
  assert list(star["status"]) == ["above", "bracketed", "bracketed", "below"]
  assert (star["lo"] == 1e-4).all() and (star["hi"] == 1.0).all()
  r = star.loc[100]  # seed means 0.001 at 1e-4 and 0.06 at 1e-2: log-linear between them
  assert (r["bracket_lo"], r["bracket_hi"]) == (1e-4, 1e-2)
  frac = (0.01 - 0.001) / (0.06 - 0.001)
  assert r["sigma_star"] == pytest.approx(10 ** (-4 + 2 * frac))
  assert r["bracket_lo"] < r["sigma_star"] < r["bracket_hi"]
  assert star.loc[200, "sigma_star"] == 1.0 and star.loc[200, "bracket_lo"] == 1e-2  # a diverged pair: the upper σ
  for t in (0, 400):  # censored: no estimate and no bracket
    assert np.isnan(star.loc[t, "sigma_star"]) and np.isnan(star.loc[t, "bracket_lo"]) and star.loc[t, "bracket"] is None
  assert [v[0].split(":")[0] for v in star.loc[100, "per_seed"].values()] == ["bracketed", "bracketed"]
  lines = instability.star_table(star.reset_index(), "train.loss", 0.01)
  assert "| batch | 0 | < 0.0001 | 0: < 0.0001, 1: < 0.0001 |" in lines
  assert "| batch | 4 ep | > 1 | 0: > 1, 1: > 1 |" in lines
  assert any(line.startswith("| batch | 1 ep | 0.000") for line in lines)


def test_seed_spread_counts_censored_seeds_and_spreads_only_the_bracketed():
  t = instability.pairs(_table(CROSSING))
  spread = instability.seed_spread(instability.sigma_star(t, "train.loss", 0.01)).set_index("t")
  assert (spread["seeds"] == 2).all()
  assert spread.loc[0, ["bracketed", "below_grid", "above_grid"]].tolist() == [0, 2, 0]
  assert spread.loc[400, ["bracketed", "below_grid", "above_grid"]].tolist() == [0, 0, 2]
  assert spread.loc[200, ["bracketed", "above_grid"]].tolist() == [1, 1]  # seed 0 never reaches 0.01
  assert np.isnan(spread.loc[200, "ratio"])  # one bracketed seed: no spread
  r = spread.loc[100]
  assert r["bracketed"] == 2 and r["ratio"] == pytest.approx(r["max"] / r["min"]) and r["ratio"] > 1


def test_cells_count_diverged_pairs_instead_of_dropping_them():
  cells = instability.cells(instability.pairs(_table(CROSSING)), "train.loss").set_index(["t", "sigma"])
  assert cells.loc[(200, 1.0), "diverged"] == 1 and cells.loc[(200, 1.0), "n"] == 2
  assert cells.loc[(200, 1.0), "mean"] == pytest.approx(0.002)  # over the seed that did not diverge
  text = instability.markdown(cells.reset_index(), {}, "train.loss")
  assert "| 2 ep | " in text and "n=2 d=1" in text


def test_pairs_tell_single_weights_and_masked_variants_from_the_plain_kinds():
  plain = _table({0: {0: {1e-2: 0.1, 1.0: 0.2}}})
  single = _table({0: {0: {1e-2: 0.1, 1.0: 0.2}}}, kind="gaussian", single="random")
  masked = _table({0: {0: {1e-2: 0.1, 1.0: 0.2}}}).assign(perturbation="batch/fraction=0.1")
  t = instability.pairs(pd.concat([plain, single, masked]))
  assert sorted(t["kind"].unique()) == ["batch", "batch_fraction-0.1", "single"]
  assert (t["child"] > 0).all() and t["sigma"].dtype == float


def test_spearman_by_seed_is_the_pooled_rho_with_an_interval_from_whole_seeds():
  rng = np.random.default_rng(0)
  seeds = np.repeat([0, 1, 2], 6)
  x = rng.normal(size=18)
  r = instability.spearman_by_seed(x, 2 * x + 1, seeds)
  assert r["rho"] == pytest.approx(1.0) and r["n"] == 18 and r["seeds"] == 3
  assert r["lo"] == pytest.approx(1.0) and r["hi"] == pytest.approx(1.0)  # every resample is monotone too
  noisy = instability.spearman_by_seed(x, x + rng.normal(size=18), seeds)
  assert noisy["lo"] <= noisy["rho"] <= noisy["hi"] and noisy["lo"] < noisy["hi"]


def test_spearman_by_seed_says_why_it_has_no_interval_or_no_rho():
  one_seed = instability.spearman_by_seed([1, 2, 3, 4], [1, 3, 2, 4], [0, 0, 0, 0])
  assert np.isfinite(one_seed["rho"]) and np.isnan(one_seed["lo"])
  assert "no interval: 1 seed" in instability.fmt_rho(one_seed)
  constant = instability.spearman_by_seed([1, 1, 1, 1], [1, 2, 3, 4], [0, 0, 1, 1])
  assert np.isnan(constant["rho"]) and constant["note"] == "a variable is constant"
  assert instability.fmt_rho(constant).startswith("undefined")
  with_nan = instability.spearman_by_seed([1, 2, np.nan, 4], [1, 2, 3, 4], [0, 0, 1, 1])
  assert with_nan["n"] == 3  # a non-finite value drops its pair, not the statistic


def _visible(labels):
  return [x.get_text() for x in labels if x.get_visible() and x.get_text()]


def test_threshold_figure_labels_every_panel_and_draws_interpolated_sigma_star_hollow_inside_its_bracket():
  whole = _table(CROSSING)
  single = _table({0: CROSSING[0], 100: CROSSING[100]}, kind="gaussian", single="random")
  t = instability.pairs(pd.concat([whole, single]))
  stars = {level: instability.sigma_star(t, "train.loss", level) for level in (0.005, 0.01)}
  fig = instability.threshold_figure(stars, "train.loss", 2)
  axes = [ax for ax in fig.axes if ax.get_title()]
  assert len(axes) == 4  # rows: the whole network, one weight; columns: the thresholds
  fig.canvas.draw()
  for i, ax in enumerate(axes):  # every panel says which t and σ it shows, the top row as much as the bottom one
    steps = sorted(set(t[t["kind"] == ("batch" if i < 2 else "single")]["t"]))
    assert _visible(ax.get_xticklabels()) == [instability.time_label(s, SPE).replace(" steps", "") for s in steps]
    assert _visible(ax.get_yticklabels()), ax.get_title()
  assert len({ax.get_xlim() for ax in axes}) == 1  # one t range in every panel
  ax = axes[1]  # whole network, threshold 0.01
  star = stars[0.01][stars[0.01]["kind"] == "batch"]
  ok = star[star["status"] == "bracketed"]
  line = next(x for x in ax.get_lines() if x.get_label() == instability.KIND_LABEL["batch"])
  assert list(line.get_ydata()) == pytest.approx(list(ok["sigma_star"]))
  assert line.get_marker() == "o" and line.get_markerfacecolor() in ("white", (1.0, 1.0, 1.0, 1.0))  # hollow
  bars = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
  assert len(bars) == 1
  spans = sorted((float(min(s[:, 1])), float(max(s[:, 1]))) for s in bars[0].lines[2][0].get_segments())
  want = sorted(zip(ok["bracket_lo"], ok["bracket_hi"]))  # the bar: the two measured σ, not the estimate
  assert [v for span in spans for v in span] == pytest.approx([v for span in want for v in span], rel=1e-12)
  legend = " ".join(x.get_text() for x in fig.legends[0].get_texts())
  assert "interpolated" in legend and "not measured" in legend and "bracket" in legend
  assert "σ* below the grid" in legend and "σ* above the grid" in legend


def test_make_map_writes_the_map_per_setting_and_says_which_settings_have_none(tmp_path, capsys):
  sgd = _table(CROSSING, extra={"optim.name": "sgd"})
  adam = _table({0: CROSSING[0]}, extra={"optim.name": "adam"})  # one t: no map
  paths = instability.make_map(pd.concat([sgd, adam]), tmp_path, thresholds=(0.01,), figures=False)
  assert [p.name for p in paths] == ["map__optim.name-sgd.md"]
  assert "optim.name=adam: the pairs do not vary both perturb.time and σ" in capsys.readouterr().out
  assert "σ*(t): the σ at which the seed-mean `train.loss` barrier reaches 0.01" in paths[0].read_text()
  with pytest.raises(ReportError, match="no instability map"):
    instability.make_map(adam, tmp_path)
  with pytest.raises(ReportError, match="no vs_child0.barrier.test.error column"):
    instability.make_map(sgd, tmp_path, metric="test.error")


def test_the_command_draws_the_map_of_a_written_table(tmp_path, capsys):
  table = tmp_path / "report" / "table.csv"
  table.parent.mkdir()
  _table(CROSSING).to_csv(table, index=False)
  assert report_main(["--table", str(table), "--map_thresholds=0.005,0.01"]) == 0  # out: the table's folder
  names = sorted(p.name for p in table.parent.iterdir())
  assert names == ["figure1_batch.png", "map.md", "map_batch.png", "relations_batch.png", "table.csv", "threshold.png"]
  printed = capsys.readouterr().out
  assert all(str(table.parent / n) in printed for n in names if n != "table.csv")
  text = (table.parent / "map.md").read_text()
  assert "reaches 0.005" in text and "reaches 0.01" in text and "reaches 0.02" not in text
  assert report_main(["--table", str(table), "--map", "--out", str(tmp_path / "md"), "--no-figures",
                      "--map-metric=train.loss"]) == 0
  assert sorted(p.name for p in (tmp_path / "md").iterdir()) == ["map.md"]
  written = (tmp_path / "md" / "map.md").read_text()
  assert written.startswith(instability.markdown(
      instability.cells(instability.pairs(_table(CROSSING)), "train.loss"),
      {v: instability.sigma_star(instability.pairs(_table(CROSSING)), "train.loss", v) for v in (0.005, 0.01, 0.02)},
      "train.loss"))
  assert "\n".join(instability.relations_table(instability.pairs(_table(CROSSING)), "batch", "train.loss")) in written
  flat = tmp_path / "flat.csv"
  _table({0: CROSSING[0]}).to_csv(flat, index=False)
  assert report_main(["--table", str(flat), "--out", str(tmp_path / "none")]) == 2
  assert "do not vary both perturb.time and σ" in capsys.readouterr().err
  assert report_main(["--table", str(tmp_path / "missing.csv")]) == 2
  with pytest.raises(SystemExit):  # a usage error: not a number
    report_main(["--table", str(table), "--map-thresholds=0.01,x"])


# ---------------------------------------------------------------------------------------------------------
# Thresholds that mean something: a per-t value, a per-network scale, each t's plateau; and figure 1.


def test_sigma_star_takes_a_number_a_per_t_value_or_a_per_network_scale():
  t = instability.pairs(_table(CROSSING))
  number = instability.sigma_star(t, "train.loss", 0.01)
  same = instability.sigma_star(t, "train.loss", {0: 0.01, 100: 0.01, 200: 0.01, 400: 0.01})
  assert list(same["sigma_star"].fillna(-1)) == list(number["sigma_star"].fillna(-1))  # exactly, not approximately
  assert list(same["status"]) == list(number["status"]) and (number["threshold"] == 0.01).all()
  # per t, a (kind, t) key winning over a plain t: t = 0 held against 1.0 (nothing reaches it), t = 400 against
  # 0.0005 (seed means 0, 0, 0.002: crossed between 1e-2 and 1)
  per_t = instability.sigma_star(t, "train.loss", {0: 0.01, ("batch", 0): 1.0, 100: 0.01, 200: 0.01, 400: 0.0005})
  per_t = per_t.set_index("t")
  assert per_t.loc[0, "status"] == "below" and per_t.loc[0, "threshold"] == 1.0
  assert per_t.loc[400, "status"] == "bracketed" and (per_t.loc[400, "bracket_lo"], per_t.loc[400, "bracket_hi"]) == (
      1e-2, 1.0)
  assert per_t.loc[400, "per_seed"][1][1] == [1e-2, 1.0]  # each seed against the same per-t value
  # per network: seed 0 against 0.01 × 1, seed 1 against 0.01 × 10; the seed mean is of barrier / scale
  scale = instability.NetworkScale({0: 1.0, 1: 10.0}, fraction=0.01)
  star = instability.sigma_star(t, "train.loss", scale).set_index("t")
  r = star.loc[100]  # barrier / scale: seed 0 (0.002, 0.1, 0.5), seed 1 (0, 0.002, 0.04); means 0.001, 0.051, 0.27
  frac = (0.01 - 0.001) / (0.051 - 0.001)
  assert r["status"] == "bracketed" and r["sigma_star"] == pytest.approx(10 ** (-4 + 2 * frac))
  assert r["threshold"] == pytest.approx(0.01 * 5.5)  # the mean network's threshold, for tables
  assert r["per_seed"][0][1] == [1e-4, 1e-2] and r["per_seed"][1][1] == [1e-2, 1.0]  # seed 1 against 0.1
  assert star.loc[0, "status"] == "above"  # 0.05 / 1 and 0.04 / 10 average 0.027 at 1e-4: above 0.01 already
  with pytest.raises(ValueError, match="no value for seed"):
    instability.sigma_star(t, "train.loss", instability.NetworkScale({0: 1.0}, 0.01))
  with pytest.raises(ValueError, match="no value for t = 400"):
    instability.sigma_star(t, "train.loss", {0: 0.01, 100: 0.01, 200: 0.01})
  with pytest.raises(ValueError, match="positive finite"):
    instability.sigma_star(t, "train.loss", {0: 0.01, 100: 0.0, 200: 0.01, 400: 0.01})


def test_plateau_threshold_doubles_each_ts_plateau_above_a_floor():
  t = instability.pairs(_table(CROSSING))
  plateau = instability.plateau(t, "train.loss").set_index("t")
  assert (plateau["sigma"] == 1e-4).all()  # the grid's smallest σ
  assert plateau.loc[0, "mean"] == pytest.approx(0.045) and plateau.loc[100, "mean"] == pytest.approx(0.001)
  levels = instability.plateau_threshold(t, "train.loss", factor=2.0, floor=0.003)
  assert levels == pytest.approx({("batch", 0): 0.09, ("batch", 100): 0.003, ("batch", 200): 0.003,
                                  ("batch", 400): 0.003})  # 2 × 0.001 is under the floor: the floor
  star = instability.sigma_star(t, "train.loss", levels).set_index("t")
  assert star.loc[0, "status"] == "bracketed" and star.loc[0, "bracket_lo"] == 1e-2  # leaves the plateau at 1e-2+
  assert star.loc[0, "threshold"] == pytest.approx(0.09)
  with pytest.raises(ValueError, match="give a floor > 0"):  # t = 200 and 400: a plateau of 0
    instability.plateau_threshold(t, "train.loss")
  with pytest.raises(ValueError, match="factor must be > 1"):
    instability.plateau_threshold(t, "train.loss", factor=1.0, floor=0.01)


def _proxy_run(root, name, seed, rows):
  """SYNTHETIC: a run directory holding config.json (its seed) and proxy.json ``rows`` of (fraction, train loss)."""
  run = root / name
  run.mkdir(parents=True)
  (run / "config.json").write_text(json.dumps({"seed": seed}))
  (run / "proxy.json").write_text(json.dumps({"child": 0, "seed": 0, "rows": [
      {"target_fraction": f, "seed": i, "barrier": {"train": {"loss": v, "error": v / 4},
                                                    "test": {"loss": v / 2, "error": v / 8}}}
      for i, (f, v) in enumerate(rows)]}))
  return run


def test_read_scale_averages_the_full_permutations_per_network(tmp_path):
  _proxy_run(tmp_path, "seed=0", 0, [(0.0, 1.0), (0.0, 3.0), (0.5, 100.0)])  # fraction 0.5: not the full permutation
  run = _proxy_run(tmp_path, "seed=1", 1, [(0.0, 4.0)])
  scale = instability.read_scale(tmp_path)
  assert scale["train.loss"] == {0: 2.0, 1: 4.0} and scale["test.error"] == {0: 0.25, 1: 0.5}
  assert instability.read_scale(run)["train.loss"] == {1: 4.0}  # one run directory
  _proxy_run(tmp_path, "again", 1, [(0.0, 5.0)])
  with pytest.raises(ValueError, match="hold seed 1"):
    instability.read_scale(tmp_path)
  with pytest.raises(ValueError, match="no proxy.json"):
    instability.read_scale(tmp_path / "seed=0" / "missing")


def test_reaching_counts_pairs_at_the_threshold_and_diverged_ones_among_them():
  t = instability.pairs(_table(CROSSING))
  small = instability.reaching(t, "train.loss", 0.01, max_sigma=1e-2).set_index("t")
  assert small.loc[0, ["n", "reached"]].tolist() == [4, 4] and small.loc[100, ["n", "reached"]].tolist() == [4, 2]
  assert small.loc[400, "reached"] == 0 and small.loc[100, "max"] == pytest.approx(0.1)
  every = instability.reaching(t, "train.loss", 0.01).set_index("t")
  assert every.loc[200, ["n", "reached", "diverged"]].tolist() == [6, 1, 1]  # the diverged pair reaches it


def test_star_ratio_is_what_the_brackets_allow_and_censoring_leaves_an_end_open():
  star = instability.sigma_star(instability.pairs(_table(CROSSING)), "train.loss", 0.01)
  ratio = lambda a, b, **kw: instability.star_ratio(star, "batch", a, b, **kw)  # noqa: E731
  assert ratio(100, 200) == pytest.approx((1.0, 1e4))  # [1e-4, 1e-2] to [1e-2, 1]
  assert ratio(100, 400) == (100.0, math.inf)  # above the grid (> 1) from at most 1e-2
  assert ratio(0, 100) == (1.0, math.inf)  # below the grid (< 1e-4): open above
  assert ratio(0, 0) == (0.0, math.inf)
  est = star.set_index("t")["sigma_star"]
  assert ratio(100, 200, estimate=True) == pytest.approx((est[200] / est[100],) * 2)
  assert instability.fmt_ratio(*ratio(100, 200)) == "between ×1 and ×10,000"
  assert instability.fmt_ratio(*ratio(100, 400)) == "at least ×100"
  assert instability.fmt_ratio(*ratio(0, 0)).startswith("not bounded")
  assert instability.fmt_ratio(0.0, 1e-3) == "at most ×0.001"
  lines = instability.threshold_table(star, "### at 0.01")
  assert lines[0] == "### at 0.01"
  assert "| batch | 0 | 0.01 | < 0.0001 (below the grid) | 0: < 0.0001, 1: < 0.0001 |" in lines
  assert "| batch | 4 ep | 0.01 | > 1 (above the grid) | 0: > 1, 1: > 1 |" in lines
  assert any(line.startswith("| batch | 1 ep | 0.01 | 0.000") and "[0.0001, 0.01]" in line for line in lines)


# t = 0: every σ is at or above 2% test error (σ* below the grid); t = 100 crosses between 1e-2 and 1; t = 200 has a
# diverged pair at σ = 1; t = 400 never reaches it (σ* above the grid). Test error: a fifth of the train loss.
FIGURE = {0: {0: {1e-4: 0.2, 1e-2: 0.3, 1.0: 0.9}, 1: {1e-4: 0.15, 1e-2: 0.25, 1.0: 1.0}},
          100: CROSSING[100], 200: CROSSING[200], 400: CROSSING[400]}


def _texts(fig):
  from matplotlib.text import Text
  fig.draw_without_rendering()  # the tick labels are set at drawing
  return [x for x in fig.findobj(Text) if x.get_visible() and x.get_text().strip()]


def test_figure1_sigmas_are_few_and_two_decades_apart():
  assert instability.figure1_sigmas([1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]) == [1e-5, 1e-3, 1e-1]
  assert instability.figure1_sigmas([0.0, 1e-4, 3e-4, 1e-2, 3e-2], most=4) == [1e-4, 1e-2]
  assert instability.figure1_sigmas([1e-6, 1e-4, 1e-2, 1.0, 100.0], most=2) == [1e-6, 1e-4]


def test_figure1_draws_barrier_against_t_per_sigma_with_the_criterion_the_scale_and_sigma_star():
  t = instability.pairs(_table(FIGURE, test_error=True))
  scale = {"train.loss": {0: 1.0, 1: 2.0}, "test.error": {0: 0.3, 1: 0.5}}
  fig = instability.figure1(t, "batch", scale=scale)
  assert fig.get_size_inches()[0] == pytest.approx(3.3)  # a column's width
  axes = [ax for ax in fig.axes if ax.get_title(loc="left")]
  assert [ax.get_title(loc="left")[:3] for ax in axes] == ["(a)", "(b)", "(c)"]
  assert "train-loss" in axes[0].get_title(loc="left") and "test-error" in axes[1].get_title(loc="left")
  assert "2% test-error" in axes[2].get_title(loc="left")
  cells = {m: instability.cells(t, m) for m in ("train.loss", "test.error")}
  for ax, metric in zip(axes[:2], cells):
    lines = {x.get_label(): x for x in ax.get_lines() if x.get_label().startswith("σ =")}
    assert sorted(lines) == ["σ = 0.0001", "σ = 0.01", "σ = 1"]  # one line per σ, few
    c = cells[metric][cells[metric]["sigma"] == 1.0].sort_values("t")
    assert list(lines["σ = 1"].get_xdata()) == list(c["t"])  # in steps
    assert list(lines["σ = 1"].get_ydata()) == pytest.approx(list(c["mean"]))  # the seed mean, diverged left out
    assert [x for x in ax.get_children() if x.get_gid() == "excluded"]  # ✕ for the diverged pair at t = 200
    assert ax.get_xscale() == "symlog" and ax.get_yscale() == "symlog"
    assert ax.get_xlim()[0] < 0 < 10 < ax.get_xlim()[1]  # t = 0 inside the axis, at its left end
  perm = [x for x in axes[0].get_lines() if x.get_label().startswith("full permutation")]
  assert len(perm) == 1 and list(perm[0].get_ydata()) == [1.5, 1.5]  # the networks' mean
  band = [p for p in axes[0].patches if hasattr(p, "get_height")]
  assert [(p.get_y(), p.get_y() + p.get_height()) for p in band] == [(1.0, 2.0)]  # min to max
  criterion = [x for x in axes[1].get_lines() if "LMC criterion" in x.get_label()]
  assert len(criterion) == 1 and list(criterion[0].get_ydata()) == [0.02, 0.02] and "2%" in criterion[0].get_label()
  assert not [x for x in axes[0].get_lines() if "criterion" in x.get_label()]  # on the error panel only
  star = instability.sigma_star(t, "test.error", 0.02)
  assert list(star["status"]) == ["above", "bracketed", "bracketed", "below"]
  ok = star[star["status"] == "bracketed"]
  line = next(x for x in axes[2].get_lines() if x.get_marker() == "o" and len(x.get_xdata()) == len(ok))
  assert list(line.get_ydata()) == pytest.approx(list(ok["sigma_star"]))
  bars = [c for c in axes[2].containers if type(c).__name__ == "ErrorbarContainer"]
  spans = sorted((float(min(s[:, 1])), float(max(s[:, 1]))) for s in bars[0].lines[2][0].get_segments())
  want = sorted(zip(ok["bracket_lo"], ok["bracket_hi"]))  # the bar: the two measured σ
  assert [v for span in spans for v in span] == pytest.approx([v for span in want for v in span])
  censored = {x.get_marker(): list(x.get_ydata()) for x in axes[2].get_lines() if x.get_marker() in ("v", "^")}
  assert censored == {"v": [1e-4], "^": [1.0]}  # ▽ at the grid's smallest σ, △ at its largest
  texts = _texts(fig)
  assert min(x.get_fontsize() for x in texts) >= 7  # readable at a column's width
  shown = [x.get_text() for x in texts]
  assert {"0", "$\\mathregular{10^{1}}$", "$\\mathregular{10^{2}}$"} <= set(shown)  # t's decades, and t = 0
  assert {"epoch", "1", "2", "4"} <= set(shown)  # the whole epochs marked
  legend = " ".join(x.get_text() for x in fig.legends[0].get_texts())
  assert "σ* below the grid" in legend and "σ* above the grid" in legend and "full permutation (2 networks)" in legend


def test_figure1_without_an_error_barrier_or_a_scale_draws_what_the_table_has():
  t = instability.pairs(_table(FIGURE))
  fig = instability.figure1(t, "batch")
  axes = [ax for ax in fig.axes if ax.get_title(loc="left")]
  assert len(axes) == 1 and "train-loss" in axes[0].get_title(loc="left")  # no test error: no criterion, no σ*
  assert not [x for x in axes[0].get_lines() if x.get_label().startswith("full permutation")]
  with pytest.raises(ValueError, match="no pairs of kind"):
    instability.figure1(t, "gaussian")


def test_the_command_draws_the_full_permutation_barrier_it_is_given(tmp_path, capsys):
  table = tmp_path / "table.csv"
  _table(FIGURE, test_error=True).to_csv(table, index=False)
  scale = tmp_path / "scale"
  _proxy_run(scale, "seed=0", 0, [(0.0, 1.0)])
  _proxy_run(scale, "seed=1", 1, [(0.0, 2.0)])
  assert report_main(["--table", str(table), "--out", str(tmp_path / "out"), f"--map-scale={scale}"]) == 0
  assert (tmp_path / "out" / "figure1_batch.png").stat().st_size > 0
  assert report_main(["--table", str(table), "--out", str(tmp_path / "bad"), f"--map-scale={tmp_path / 'none'}"]) == 2
  assert "no proxy.json" in capsys.readouterr().err


def _search(tmp_path, kind="batch", with_kind=True, per_seed=True):
  """SYNTHETIC: a per-seed threshold search's threshold.json at 2% test error over t = 0 and 1 epoch (seed 0
  bracketed at both; seed 1 bracketed at t = 0 and above the searched range at 1 epoch), with one run directory
  whose config names the kind (a file from before threshold.json had ``kind``)."""
  def seed(status, bracket, est):
    return {"status": status, "bracket": bracket, "sigma_estimate": est, "points": []}
  out = {"threshold": 0.02, "metric": "test.error", "lo": 1e-5, "hi": 1.0, "rounds": 4, "points": 3,
         "seeds": [0, 1], "per_seed": per_seed, "factor": 2.0, "prior": None,
         "times": {"0": {"per_seed": {"0": seed("bracketed", [0.01, 0.02], 0.015),
                                      "1": seed("bracketed", [0.02, 0.04], 0.03)}, "spread": [0.015, 0.03]},
                   "1ep": {"per_seed": {"0": seed("bracketed", [0.1, 0.2], 0.125),
                                        "1": seed("below: the largest σ measured does not reach it", None, None)},
                           "spread": [0.125, 0.125]}}}
  if with_kind:
    out["kind"] = kind
  folder = tmp_path / f"search_{kind}"
  (folder / "t=0,seed=0,sigmas=x").mkdir(parents=True, exist_ok=True)
  (folder / "t=0,seed=0,sigmas=x" / "config.json").write_text(json.dumps({"perturb": {"kind": kind}}))
  (folder / "threshold.json").write_text(json.dumps(out))
  return folder


def test_a_per_seed_search_gives_sigma_star_as_the_seeds_geometric_mean_inside_their_brackets(tmp_path):
  search = instability.read_search(_search(tmp_path, with_kind=False))
  assert search["kind"] == "batch"  # from its runs' config where the file predates the field
  star = instability.search_sigma_star(search, SPE).set_index("t")
  assert list(star.index) == [0, SPE]  # "1ep" in steps
  assert star.loc[0, "sigma_star"] == pytest.approx(math.sqrt(0.015 * 0.03))
  assert (star.loc[0, "bracket_lo"], star.loc[0, "bracket_hi"]) == (0.01, 0.04)  # spans both seeds' brackets
  # seed 1 above the searched range at 1 epoch: the bar reaches the range's end, the estimate is seed 0's alone
  assert (star.loc[SPE, "bracket_lo"], star.loc[SPE, "bracket_hi"]) == (0.1, 1.0)
  assert star.loc[SPE, "sigma_star"] == pytest.approx(0.125) and star.loc[SPE, "status"] == "bracketed"
  with pytest.raises(ValueError, match="search of the seed mean"):
    instability.read_search(_search(tmp_path / "mean", per_seed=False))


def test_figure1_draws_the_searched_sigma_star_of_its_own_kind_and_criterion(tmp_path, capsys):
  t = instability.pairs(_table(FIGURE, test_error=True))
  search = instability.read_search(_search(tmp_path))
  fig = instability.figure1(t, "batch", search=search)
  ax = [ax for ax in fig.axes if ax.get_title(loc="left")][-1]
  assert "searched per seed" in ax.get_title(loc="left")
  line = next(x for x in ax.get_lines() if x.get_marker() == "o" and len(x.get_xdata()) == 2)
  assert list(line.get_ydata()) == pytest.approx([math.sqrt(0.015 * 0.03), 0.125])
  assert ax.get_ylim() == pytest.approx((0.01 / 4, 1.0 * 4))  # zoomed to the brackets
  assert "seeds' brackets" in " ".join(x.get_text() for x in fig.legends[0].get_texts())
  with pytest.raises(ValueError, match="the search is of batch"):
    instability.figure1(t[t["kind"] == "batch"].assign(kind="gaussian"), "gaussian", search=search)
  table = tmp_path / "table.csv"
  _table(FIGURE, test_error=True).to_csv(table, index=False)
  assert report_main(["--table", str(table), "--out", str(tmp_path / "out"),
                      f"--map-search={_search(tmp_path)}"]) == 0
  assert "from a threshold search per seed" in (tmp_path / "out" / "map.md").read_text()  # the caption: σ* from where
  assert report_main(["--table", str(table), "--out", str(tmp_path / "two"), f"--map-search={_search(tmp_path)}",
                      f"--map-search={_search(tmp_path)}"]) == 2
  assert "two searches of the batch direction" in capsys.readouterr().err


def test_the_relations_figure_fits_a_column_and_its_rho_per_t_is_a_table(monkeypatch):
  """relations_<kind>.png at a column's width: a panel per relation, every pair in it coloured by its t (a legend
  entry per t), fonts readable; ρ within each t moved from the panels' titles to map.md's table."""
  import functools
  # 20 resamples, not 2,000: the table's layout is tested here, the interval elsewhere
  monkeypatch.setattr(instability, "spearman_by_seed", functools.partial(instability.spearman_by_seed, n_boot=20))
  t = instability.pairs(_table(CROSSING))
  fig = instability.relations_figure(t, "batch", "train.loss")
  assert fig.get_size_inches()[0] == pytest.approx(3.3)
  axes = [ax for ax in fig.axes if ax.get_xlabel()]
  assert [ax.get_xlabel() for ax in axes] == ["L2 distance to child 0", "angular CKA (radians)"]
  d = t[(t["sigma"] > 0) & ~t["pair_diverged"].astype(bool)]
  assert sum(len(c.get_offsets()) for c in axes[0].collections) == len(d)  # every pair, once
  assert [x.get_text() for x in fig.legends[0].get_texts()] == ["0", "1 ep", "2 ep", "4 ep"]  # SPE = 100 steps
  assert min(x.get_fontsize() for x in _texts(fig)) >= 7
  assert all(ax.get_ylim()[0] > -1e-3 for ax in axes)  # no negative barriers drawn
  lines = instability.relations_table(t, "batch", "train.loss")
  rho = instability.relations_rho(t, "batch", "train.loss")
  assert len([x for x in lines if x.startswith("| ") and not x.startswith(("| t ", "| ---"))]) == len(rho) == 4
  assert lines[-1].startswith("| 4 ep | " + instability.fmt_rho(rho.iloc[-1]["vs_child0.l2"]))
