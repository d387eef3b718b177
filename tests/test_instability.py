"""The instability map (butterfly_jax/report/instability.py) and its command: σ*(t) with its bracket and censoring,
the seeds' spread, the seed-bootstrap Spearman statistics, the σ*(t) figure's panels and markers, and
``python -m butterfly_jax.report --table=... --map`` on small made-up tables."""

import math

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from butterfly_jax.report import ReportError, instability  # noqa: E402
from butterfly_jax.report.__main__ import main as report_main  # noqa: E402

SPE = 100  # steps per epoch of the made-up tables


def _table(values, kind="batch", single="", extra=None):
  """SYNTHETIC: a report table; ``values[t][seed][sigma]`` = the train-loss barrier, ``inf`` a diverged pair. Each
  (t, seed) is one run with child 0, the σ = 0 twin (barrier 0) and a child per σ; ``extra``: more columns."""
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
  assert names == ["map.md", "map_batch.png", "relations_batch.png", "table.csv", "threshold.png"]
  printed = capsys.readouterr().out
  assert all(str(table.parent / n) in printed for n in names if n != "table.csv")
  text = (table.parent / "map.md").read_text()
  assert "reaches 0.005" in text and "reaches 0.01" in text and "reaches 0.02" not in text
  assert report_main(["--table", str(table), "--map", "--out", str(tmp_path / "md"), "--no-figures",
                      "--map-metric=train.loss"]) == 0
  assert sorted(p.name for p in (tmp_path / "md").iterdir()) == ["map.md"]
  assert (tmp_path / "md" / "map.md").read_text() == instability.markdown(
      instability.cells(instability.pairs(_table(CROSSING)), "train.loss"),
      {v: instability.sigma_star(instability.pairs(_table(CROSSING)), "train.loss", v) for v in (0.005, 0.01, 0.02)},
      "train.loss")
  flat = tmp_path / "flat.csv"
  _table({0: CROSSING[0]}).to_csv(flat, index=False)
  assert report_main(["--table", str(flat), "--out", str(tmp_path / "none")]) == 2
  assert "do not vary both perturb.time and σ" in capsys.readouterr().err
  assert report_main(["--table", str(tmp_path / "missing.csv")]) == 2
  with pytest.raises(SystemExit):  # a usage error: not a number
    report_main(["--table", str(table), "--map-thresholds=0.01,x"])
