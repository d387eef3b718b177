"""The report: the pair table from real smoke runs, its files, the figures and the command line."""

import base64
import functools
import html
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd  # the test extra installs pandas, pyarrow and matplotlib
import jax
import pytest

from butterfly_jax import report
from butterfly_jax.core.evaluate import barrier_from_curve
from butterfly_jax.report import figures, page, plotting
from butterfly_jax.report.table import read_metrics, write_table
from butterfly_jax.version import __version__

SCALES = (0.0, 1e-3, 1e-1)
DIVERGING_SCALE = 1e30   # the perturbed weights overflow float32 within a few steps: a genuinely diverged child


def _config(**fields):
  """The smoke config without checkpoints (not needed here), with ``fields`` set (dotted names)."""
  from butterfly_jax.run.configs_embedded import smoke
  c = smoke()
  c.checkpoint.trunk = c.checkpoint.children = False
  if "every_steps" in c.checkpoint:
    c.checkpoint.every_steps = "0"
  for name, value in fields.items():
    *parents, leaf = name.split(".")
    node = c
    for part in parents:
      node = node[part]
    node[leaf] = value
  return c


def make_runs(root: Path) -> Path:
  """Real smoke runs under ``root`` (about a minute on 2 CPU cores): seed x perturbation time x kind (8 runs
  under ``sweep/``, sigma in SCALES, no alignment; ``sweep/seed0_t10_batch`` has an extra child with
  sigma = 1e30, which diverges), one single-weight run with alignment, and ``incomplete/run``: a copy of a run
  without results.json and with a torn last metrics line."""
  from butterfly_jax.run.experiment import run
  for seed in (0, 1):
    for time in ("0", "10"):
      for kind in ("batch", "gaussian"):
        diverging = (DIVERGING_SCALE,) if (seed, time, kind) == (0, "10", "batch") else ()
        run(_config(**{"seed": seed, "perturb.time": time, "perturb.kind": kind, "perturb.scales": SCALES + diverging,
                       "eval.every_steps": 10, "eval.align": False}),
            root / "sweep" / f"seed{seed}_t{time}_{kind}")
  run(_config(**{"perturb.time": "0", "perturb.mask.single": "random", "perturb.scales": (0.0, 1e-1),
                 "eval.align": True}), root / "single" / "seed0_t0_batch_single")
  incomplete = root / "incomplete" / "run"
  incomplete.mkdir(parents=True)
  for name in ("config.json", "metrics.jsonl"):
    shutil.copy(root / "sweep" / "seed1_t0_gaussian" / name, incomplete / name)
  with open(incomplete / "metrics.jsonl", "a") as f:
    f.write('{"phase": "chil')  # killed mid-write
  return root


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
  return make_runs(tmp_path_factory.mktemp("report_runs"))


@pytest.fixture(scope="session")
def table(runs):
  return report.load_table(runs)


@pytest.fixture(scope="session")
def trajectories(runs):
  return report.load_trajectories(runs)


@pytest.fixture(scope="session")
def cli_report(runs, tmp_path_factory):
  """The command line run once on the runs: (output folder, completed process)."""
  out = tmp_path_factory.mktemp("cli") / "report"
  done = subprocess.run([sys.executable, "-m", "butterfly_jax.report", "--runs", str(runs), "--out", str(out)],
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  return out, done


def _results(runs, run):
  return json.loads((runs / run / "results.json").read_text())


def _row(table, run, child):
  rows = table[(table["run"] == run) & (table["child"] == child)]
  assert len(rows) == 1
  return rows.iloc[0]


def test_one_row_per_child_pair_and_one_per_incomplete_run(runs, table):
  finished = table[table["status"] == "finished"]
  expected = {}
  for path in sorted(runs.rglob("results.json")):
    run = path.parent.relative_to(runs).as_posix()
    expected[run] = len(json.loads(path.read_text())["children"]) - 1
  assert finished.groupby("run").size().to_dict() == expected
  assert len(expected) == 9
  assert sorted(finished["child"].unique()) == [1, 2, 3, 4]
  assert (table["status"] == "incomplete").sum() == 1


def test_expected_columns(table):
  for col in ("run", "status", "perturbation", "seed", "perturb.time", "perturb.kind", "perturb.mask.single",
              "model.name", "train.batch_size", "optim.name", "optim.weight_decay", "perturb.rewind_lr", "t", "T",
              "steps_per_epoch", "t_epochs", "child", "perturb.scale", "num_perturbed", "noise_l2", "diverged",
              "pair_diverged", "child0.diverged", "train.loss", "train.accuracy", "test.loss", "test.accuracy",
              "vs_child0.l2", "vs_child0.cka", "vs_child0.ensemble.accuracy", "vs_child0.disagreement",
              "child0.test.accuracy", "last_step"):
    assert col in table.columns, col
  for split in ("train", "test"):
    for metric in ("loss", "error"):
      assert f"vs_child0.barrier.{split}.{metric}" in table.columns
  assert not any("curves" in c for c in table.columns)
  assert list(table.columns[:4]) == ["run", "status", "definitions", "perturbation"]
  assert set(table["definitions"]) == {"v3"}


def test_a_row_matches_results_json(runs, table):
  run = "sweep/seed1_t10_gaussian"
  res = _results(runs, run)
  child = res["children"][3]
  row = _row(table, run, 3)
  assert row["status"] == "finished"
  assert (row["seed"], row["perturb.kind"], row["perturb.time"], row["model.name"]) == (1, "gaussian", "10", "mlp")
  assert row["perturbation"] == "gaussian"
  assert row["model.kwargs.hidden"] == "(32,)" and row["perturb.scales"] == str(SCALES)
  steps = res["steps"]
  assert (row["t"], row["T"], row["steps_per_epoch"]) == (steps["t"], steps["T"], steps["steps_per_epoch"])
  assert (row["t"], row["T"], row["steps_per_epoch"]) == (10, 40, 93)
  assert row["t_epochs"] == pytest.approx(10 / 93)
  assert row["perturb.scale"] == child["perturb"]["scale"] == 0.1
  assert row["noise_l2"] == child["perturb"]["noise_l2"]
  assert row["num_perturbed"] == child["perturb"]["num_perturbed"]
  assert not row["diverged"] and not row["pair_diverged"]
  v = child["vs_child0"]
  assert row["vs_child0.l2"] == v["l2"]
  for split in ("train", "test"):
    assert row[f"{split}.loss"] == child[split]["loss"]
    assert row[f"{split}.accuracy"] == child[split]["accuracy"]
    assert row[f"child0.{split}.accuracy"] == res["children"][0][split]["accuracy"]
    for metric in ("loss", "error"):
      assert row[f"vs_child0.barrier.{split}.{metric}"] == v["barrier"][split][metric]
  assert row["vs_child0.cka"] == v["cka"]
  assert row["vs_child0.ensemble.accuracy"] == v["ensemble"]["accuracy"]
  assert row["vs_child0.disagreement"] == v["disagreement"]
  for key in ("git_revision", "backend", "host_cpu", "xla_flags"):  # the program the run executed
    assert row[key] == res["provenance"][key], key
  assert row["xla_flags"] and row["host_cpu"]


def test_incomplete_run_is_flagged_with_its_progress(runs, table):
  row = table[table["status"] == "incomplete"].iloc[0]
  assert row["run"] == "incomplete/run"
  last = json.loads((runs / "incomplete" / "run" / "metrics.jsonl").read_text().splitlines()[-2])
  assert (row["last_step"], row["last_phase"]) == (last["step"], "children") == (40, "children")
  assert (row["t"], row["T"], row["seed"]) == (0, 40, 1)
  assert pd.isna(row["child"]) and pd.isna(row["vs_child0.l2"])


def test_diverged_child_is_flagged_with_null_metrics(runs, table):
  res = _results(runs, "sweep/seed0_t10_batch")
  assert res["children"][4]["diverged"] and res["children"][4]["perturb"]["scale"] == DIVERGING_SCALE
  row = _row(table, "sweep/seed0_t10_batch", 4)
  assert row["diverged"] and row["pair_diverged"] and not row["child0.diverged"]
  assert row["barrier_status"] == "pair_diverged"
  assert pd.isna(row["vs_child0.barrier.train.loss"]) and pd.isna(row["vs_child0.l2"])
  assert table["pair_diverged"].fillna(False).sum() == 1
  finished = table[table["status"] == "finished"]
  assert set(finished.loc[~finished["pair_diverged"].astype(bool), "barrier_status"]) == {"ok"}


def test_sigma_zero_twins_have_zero_barrier_and_distance(table):
  zero = table[(table["status"] == "finished") & (table["perturb.scale"] == 0.0)]
  assert len(zero) == 9
  for col in [c for c in table.columns if c.startswith("vs_child0.barrier.")] + ["vs_child0.l2", "noise_l2",
                                                                                  "vs_child0.disagreement"]:
    assert (zero[col] == 0.0).all(), col
  assert (table.loc[table["perturb.scale"] > 0, "vs_child0.l2"].dropna() > 0).all()


def test_single_weight_perturbation_is_labelled(table):
  single = table[table["run"] == "single/seed0_t0_batch_single"]
  assert set(single["perturbation"]) == {"batch/single-weight"}
  assert set(single["num_perturbed"]) == {1}
  (weight,) = set(single["perturb.weight"])  # the weight drawn, as perturb.mask.single would name it
  assert re.fullmatch(r"[\w/]+/kernel\[\d+(,\d+)*\]", weight), weight
  assert table.loc[table["run"].str.startswith("sweep/"), "perturb.weight"].isna().all()
  assert set(table.loc[table["run"].str.startswith("sweep/"), "perturbation"]) == {"batch", "gaussian"}


def test_csv_and_parquet_round_trip(table, tmp_path):
  paths = write_table(table, tmp_path)
  assert [p.name for p in paths] == ["table.csv", "table.parquet"]
  pd.testing.assert_frame_equal(pd.read_parquet(paths[1]), table)
  csv = pd.read_csv(paths[0])
  assert list(csv.columns) == list(table.columns)
  numeric = [c for c in table.columns if pd.api.types.is_float_dtype(table[c])]
  np.testing.assert_array_equal(csv[numeric].to_numpy(float), table[numeric].to_numpy(float))  # exact floats
  assert list(csv["run"]) == list(table["run"]) and list(csv["status"]) == list(table["status"])


def test_trajectories_one_row_per_logged_member(runs, trajectories):
  tr = trajectories[trajectories["run"] == "sweep/seed0_t10_batch"]
  records = read_metrics(runs / "sweep" / "seed0_t10_batch" / "metrics.jsonl")
  assert len(tr) == sum(len(r["l2_from_init"]) for r in records)
  last = tr[(tr["step"] == 40) & (tr["phase"] == "children")].set_index("member")
  assert last.loc[2, "l2_to_child0"] == records[-1]["l2_to_child0"][2]
  assert last.loc[2, "barrier.train.loss"] == records[-1]["barrier"][1]["train"]["loss"]
  assert last.loc[4, "diverged"] and math.isnan(last.loc[4, "barrier.train.error"])  # not the logged 0.58 of NaN nets
  assert last.loc[4, "perturb.scale"] == DIVERGING_SCALE


def test_curves_are_a_long_table_of_every_finished_pairs_path(runs, table):
  """The α-curves of results.json, long: one row per (run, child, aligned, split, metric, α); the barrier of a
  curve recomputed from its rows is the table's."""
  curves = report.load_curves(runs)
  assert list(curves.columns) == ["run", "child", "perturb.scale", "aligned", "split", "metric", "alpha", "value"]
  results = json.loads((runs / "sweep" / "seed0_t10_batch" / "results.json").read_text())
  one = curves[(curves["run"] == "sweep/seed0_t10_batch") & (curves["child"] == 2) & ~curves["aligned"]
               & (curves["split"] == "train") & (curves["metric"] == "loss")].sort_values("alpha")
  assert list(one["alpha"]) == results["alphas"]
  assert list(one["value"]) == results["children"][2]["vs_child0"]["curves"]["train"]["loss"]
  assert barrier_from_curve(np.asarray(one["alpha"]), np.asarray(one["value"])) == pytest.approx(
      results["children"][2]["vs_child0"]["barrier"]["train"]["loss"], abs=1e-12)
  assert curves["aligned"].any() and set(curves["child"]) >= {1, 2}


EXPECTED_FIGURES = ("barrier_vs_sigma_batch", "barrier_vs_sigma_gaussian", "barrier_vs_time_batch",
                    "barrier_vs_time_gaussian", "barrier_vs_l2", "l2_from_init_batch", "l2_from_init_gaussian",
                    "barrier_over_training_batch", "barrier_over_training_gaussian", "cka_vs_barrier",
                    "ensemble_vs_barrier", "fixed_points", "aligned_barrier")


def test_every_figure_is_written_as_png_and_pdf_with_a_caption(cli_report):
  out, done = cli_report
  names = {Path(line).stem for line in done.stdout.splitlines() if line.endswith((".png", ".pdf"))}
  assert names == set(EXPECTED_FIGURES)
  for name in EXPECTED_FIGURES:
    for ext in ("png", "pdf"):
      assert (out / f"{name}.{ext}").stat().st_size > 1000, f"{name}.{ext}"
  captions = (out / "figures.md").read_text()
  for name in EXPECTED_FIGURES:
    assert f"**{name}**" in captions
  assert "min–max over seeds" in captions and "σ = 0" in captions and "Single-weight" in captions
  for line in captions.splitlines():
    if line.startswith("- **"):  # every caption says how many pairs or runs it shows
      assert "n = " in line, line
  assert captions.endswith("Skipped:\n\n- barrier_vs_pretraining: fewer than two amounts of pre-training\n")  # no such runs


# A figure's line in figures.md and map.md, read here without the page's own reader.
FIGURE_LINE = re.compile(r"^- \*\*(?P<name>[^*]+)\*\* \((?P<links>.*?)\): (?P<caption>.*)$")
PNG = b"\x89PNG\r\n\x1a\n"
DATA_PNG = "data:image/png;base64,"


class _Page(HTMLParser):
  """What a report page holds, read with the standard library's HTML parser: every tag with its attributes, the
  text of its headings, table cells and <pre> blocks, its figures (id, images, caption text) and all its text."""

  VOID = {"img", "meta", "link", "br", "hr", "input", "source", "embed"}
  CAPTURE = {"h1", "h2", "h3", "h4", "h5", "h6", "td", "th", "pre"}

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.tags, self.headings, self.cells, self.pres, self.figures, self.texts = [], [], [], [], [], []
    self._open, self._captures = [], []

  @classmethod
  def read(cls, path):
    parsed = cls()
    parsed.feed(Path(path).read_text(encoding="utf-8"))
    parsed.close()
    return parsed

  @property
  def images(self):
    return [attrs for tag, attrs in self.tags if tag == "img"]

  @property
  def text(self):
    return "".join(self.texts)

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    self.tags.append((tag, attrs))
    if tag == "figure":
      self.figures.append({"id": attrs.get("id"), "images": [], "caption": ""})
    if tag == "img" and any(t == "figure" for t, _ in self._open):
      self.figures[-1]["images"].append(attrs)
    if tag in self.CAPTURE or (tag == "span" and attrs.get("class") == "caption"):
      self._captures.append((tag, []))
    if tag not in self.VOID:
      self._open.append((tag, attrs))

  def handle_endtag(self, tag):
    while self._open and self._open.pop()[0] != tag:
      pass
    if self._captures and self._captures[-1][0] == tag:
      _, parts = self._captures.pop()
      text = "".join(parts)
      if tag == "span":
        self.figures[-1]["caption"] = text
      elif tag == "pre":
        self.pres.append(text)
      else:
        (self.headings if tag.startswith("h") else self.cells).append(text)

  def handle_data(self, data):
    self.texts.append(data)
    for _, parts in self._captures:
      parts.append(data)


def _captions(md_path) -> dict:
  """name -> caption of every figure line of a Markdown file the report wrote."""
  return {m["name"]: m["caption"] for m in map(FIGURE_LINE.match, Path(md_path).read_text().splitlines()) if m}


def _check_self_contained(path, parsed):
  """The page at ``path`` fetches nothing: no script, stylesheet, frame or object; every src a data: URI; every
  link an anchor on the page or a file beside it (no scheme, no folder); no http(s): or file: anywhere."""
  raw = Path(path).read_text(encoding="utf-8")
  for scheme in ("http:", "https:", "file:", "url(", "@import"):
    assert scheme not in raw, scheme
  for tag, attrs in parsed.tags:
    assert tag not in ("script", "link", "iframe", "object", "embed", "audio", "video"), tag
    if "src" in attrs:
      assert attrs["src"].startswith(DATA_PNG), (tag, attrs["src"][:80])
    href = attrs.get("href")
    if href is not None and not href.startswith("#"):
      assert "/" not in href and ":" not in href and (Path(path).parent / href).is_file(), href
  anchors = {attrs["id"] for _, attrs in parsed.tags if "id" in attrs}
  assert {attrs["href"][1:] for _, attrs in parsed.tags if attrs.get("href", "").startswith("#")} <= anchors


def _check_figures(parsed, folder, captions):
  """Every figure of ``captions`` (name -> caption) is on the page once, with that caption, and its one image is
  the PNG beside the page, byte for byte, as a data: URI."""
  assert sorted(f["id"] for f in parsed.figures) == sorted(captions)
  for figure in parsed.figures:
    assert figure["caption"] == captions[figure["id"]], figure["id"]
    (image,) = figure["images"]
    assert image["alt"] == figure["id"] and image["src"].startswith(DATA_PNG)
    data = base64.b64decode(image["src"][len(DATA_PNG):], validate=True)
    written = (Path(folder) / f"{figure['id']}.png").read_bytes()
    assert data.startswith(PNG) and len(data) == len(written) and data == written, figure["id"]


def test_the_page_holds_the_figures_with_their_captions_and_fetches_nothing(cli_report, runs, table):
  """index.html, which the command writes last: every figure of figures.md embedded (the very bytes of its PNG)
  with figures.md's caption, the summary as printed, the table's main columns with a link to the CSV, and the
  provenance of the page and of the runs; nothing outside the file fetched."""
  out, done = cli_report
  path = out / "index.html"
  assert done.stdout.splitlines()[-1] == str(path)
  parsed = _Page.read(path)
  _check_self_contained(path, parsed)
  captions = _captions(out / "figures.md")
  assert set(captions) == set(EXPECTED_FIGURES)
  _check_figures(parsed, out, captions)
  assert parsed.headings[:2] == [f"butterfly_jax report: {runs.name}", "Summary"]
  assert "Instability map" not in parsed.headings  # no --map
  assert parsed.pres == [report.summary(table)] and parsed.pres[0] in done.stdout
  hrefs = {attrs["href"] for tag, attrs in parsed.tags if tag == "a"}
  assert {"table.csv", "table.parquet", "curves.csv", "barrier_vs_l2.pdf"} <= hrefs
  assert f"all {len(table)} rows" in parsed.text
  for cell in ("vs_child0.barrier.train.loss", "sweep/seed0_t10_batch", "incomplete/run", "pair_diverged"):
    assert cell in parsed.cells, cell
  (key, n, _), = page.runs_provenance(table, runs)  # one process wrote every run
  assert n == 9 and key[0] == __version__ and key[2] == jax.__version__ and key[3] == "cpu"
  assert all(value in parsed.cells for value in key if value)
  assert f"butterfly_jax {__version__} (git " in parsed.text and f"jax {jax.__version__}" in parsed.text
  assert "v3: 10 runs" in parsed.text


def test_the_page_embeds_the_maps_figures_with_the_captions_in_map_md(cli_report, runs, table, tmp_path,
                                                                      monkeypatch):
  """With the map: its tables and its figures, captioned in map.md (their one home), on the page beside the
  report's; only the files the report wrote are shown (an older file left in the folder is not)."""
  from butterfly_jax.report import instability
  # the relations' seed-bootstrap intervals from 20 resamples, not 2,000: the page is tested here, not them
  monkeypatch.setattr(instability, "spearman_by_seed", functools.partial(instability.spearman_by_seed, n_boot=20))
  out, _ = cli_report
  folder = tmp_path / "report"
  shutil.copytree(out, folder)
  paths = [folder / name for name in ("table.csv", "figures.md")] + report.make_map(table, folder,
                                                                                    thresholds=(0.001,))
  path = page.write_page(table, folder, paths, runs)
  parsed = _Page.read(path)
  _check_self_contained(path, parsed)
  maps = _captions(folder / "map.md")
  assert set(maps) == {"map_batch", "map_gaussian", "map_single", "threshold", "relations_batch",
                       "relations_gaussian", "relations_single", "figure1_batch", "figure1_gaussian"}
  assert "one random weight" in maps["map_single"] and "reaches each threshold (0.001" in maps["threshold"]
  assert all("n = " in caption for caption in maps.values())
  _check_figures(parsed, folder, {**_captions(folder / "figures.md"), **maps})
  assert "Instability map" in parsed.headings and any(cell.endswith(" d=1") for cell in parsed.cells)
  hrefs = {attrs["href"] for tag, attrs in parsed.tags if tag == "a"}
  assert "table.csv" in hrefs and "trajectories.csv" not in hrefs  # in the folder, but not in paths


def test_figure_lines_read_back_and_the_page_escapes_what_it_shows(tmp_path):
  line = page.figure_line("barrier_vs_l2__optim.name-adam", "a <b> & `c`", ("png", "pdf"))
  assert line == ("- **barrier_vs_l2__optim.name-adam** ([png](barrier_vs_l2__optim.name-adam.png), "
                  "[pdf](barrier_vs_l2__optim.name-adam.pdf)): a <b> & `c`")
  assert page.read_figure(line) == ("barrier_vs_l2__optim.name-adam", {
      "png": "barrier_vs_l2__optim.name-adam.png", "pdf": "barrier_vs_l2__optim.name-adam.pdf"}, "a <b> & `c`")
  assert page.read_figure("- **name**: no links") is None
  shown = page.markdown_html(line + "\n\n| t | σ |\n| --- | ---: |\n| 0 | <1e-05 |\n", tmp_path)
  assert "a &lt;b&gt; &amp; <code>c</code>" in shown and "<img" not in shown and "is missing" in shown
  assert '<td class="num">&lt;1e-05</td>' in shown and "<th>t</th>" in shown


def _chromium() -> str:
  """The headless browser of the page test: Debian's chromium (``apt-get install -y chromium``). Where it is
  missing the test is skipped with that reason, or fails where BUTTERFLY_JAX_TEST_CHROMIUM=required (.ci/run)."""
  browser = shutil.which("chromium") or shutil.which("chromium-browser")
  if browser is None:
    why = "no chromium or chromium-browser on PATH: install Debian's chromium (apt-get install -y chromium)"
    if os.environ.get("BUTTERFLY_JAX_TEST_CHROMIUM") == "required":
      pytest.fail(why + "; BUTTERFLY_JAX_TEST_CHROMIUM=required (.ci/run installs it)")
    pytest.skip(why)
  return browser


# After the load event (every image decoded or failed), the page's title, its figures and for each image its
# name, whether it loaded, its natural size and its width on the page, into the DOM that --dump-dom prints.
PROBE = """<script>
window.addEventListener("load", () => {
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({title: document.title, figures: document.querySelectorAll("figure").length,
    images: [...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight,
                                           i.getBoundingClientRect().width])});
  document.body.appendChild(probe);
});
</script>"""


@pytest.mark.slow
def test_the_page_opens_in_headless_chromium_and_every_figure_renders(runs, tmp_path, monkeypatch):
  """The command's page, with the map, copied alone into an empty folder (no PNG beside it) and opened in headless
  Chromium without network: it loads, and every image decodes at the size of the PNG the report wrote."""
  browser = _chromium()
  from butterfly_jax.report import instability
  from butterfly_jax.report.__main__ import main
  monkeypatch.setattr(instability, "spearman_by_seed", functools.partial(instability.spearman_by_seed, n_boot=20))
  out = tmp_path / "report"
  assert main(["--runs", str(runs), "--out", str(out), "--map", "--map-thresholds=0.001"]) == 0
  expected = {}
  for md in ("figures.md", "map.md"):
    for name in _captions(out / md):
      width, height = struct.unpack(">II", (out / f"{name}.png").read_bytes()[16:24])  # the PNG's IHDR
      expected[name] = (width, height)
  assert len(expected) == len(EXPECTED_FIGURES) + 9  # the map: 3 heatmaps, threshold, 3 relations, 2 figure 1s
  alone = tmp_path / "alone" / "index.html"
  alone.parent.mkdir()
  alone.write_text((out / "index.html").read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                   encoding="utf-8")
  done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                         "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=30000", "--dump-dom",
                         alone.as_uri()], capture_output=True, text=True, timeout=300)
  found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
  assert done.returncode == 0 and found, f"rc {done.returncode}; {done.stderr[-3000:]}"
  probe = json.loads(html.unescape(found[1]))
  assert probe["title"] == f"butterfly_jax report: {runs.name}" and probe["figures"] == len(expected)
  shown = {alt: (complete, width, height, on_page) for alt, complete, width, height, on_page in probe["images"]}
  assert len(shown) == len(probe["images"]) == len(expected)
  for name, size in expected.items():
    complete, width, height, on_page = shown[name]
    assert complete and (width, height) == size and on_page > 100, (name, shown[name], size)


def test_real_aligned_metrics_are_columns_where_alignment_ran(table):
  aligned = table["run"] == "single/seed0_t0_batch_single"
  for col in ("vs_child0.aligned.l2", "vs_child0.aligned.fixed_point_fraction", "vs_child0.aligned.barrier.test.error"):
    assert table.loc[aligned, col].notna().all() and table.loc[~aligned, col].isna().all(), col
  assert any(c.startswith("vs_child0.aligned.fixed_point_fractions.") for c in table.columns)
  zero = aligned & (table["perturb.scale"] == 0)
  assert (table.loc[zero, "vs_child0.aligned.fixed_point_fraction"] == 1.0).all()


def test_aligned_figures_from_synthetic_aligned_columns(table, tmp_path):
  """SYNTHETIC: the runs above have no alignment, so vs_child0.aligned.* columns are made up here (fixed-point
  fraction falling with L2, aligned barriers half the unaligned ones) only to exercise the aligned figures."""
  synthetic = table.copy()
  l2 = synthetic["vs_child0.l2"].astype(float)
  synthetic["vs_child0.aligned.fixed_point_fraction"] = 1.0 - l2 / np.nanmax(l2)
  synthetic["vs_child0.aligned.l2"] = 0.8 * l2
  for split in ("train", "test"):
    for metric in ("loss", "error"):
      synthetic[f"vs_child0.aligned.barrier.{split}.{metric}"] = 0.5 * synthetic[f"vs_child0.barrier.{split}.{metric}"]
  names = ("fixed_points", "aligned_barrier")
  paths = figures.make_figures(synthetic, tmp_path, only=names)
  assert sorted(p.name for p in paths) == ["aligned_barrier.pdf", "aligned_barrier.png", "figures.md",
                                           "fixed_points.pdf", "fixed_points.png"]
  for path in paths:
    assert path.stat().st_size > 1000 or path.suffix == ".md"
  captions = (tmp_path / "figures.md").read_text()
  assert "**fixed_points**" in captions and "**aligned_barrier**" in captions


def test_pretraining_figure_from_synthetic_checkpoint_steps(table, tmp_path):
  """SYNTHETIC: the runs above start from fresh inits; an init.checkpoint column is made up here (the seed
  standing in for the amount of pre-training) only to exercise the figure. tests/test_finetune.py runs real
  pre-training and fine-tuning."""
  from butterfly_jax.report.finetune import pretraining_steps
  assert pretraining_steps("runs/pre:1170") == 1170 and np.isnan(pretraining_steps(""))
  synthetic = table.assign(**{"init.checkpoint": [f"runs/pre:{100 * int(s)}" for s in table["seed"].fillna(0)]})
  paths = figures.make_figures(synthetic, tmp_path, only=("barrier_vs_pretraining",))
  assert sorted(p.name for p in paths) == ["barrier_vs_pretraining.pdf", "barrier_vs_pretraining.png", "figures.md"]
  assert paths[0].stat().st_size > 1000


def test_figures_without_trajectories_or_finished_runs_are_skipped_with_a_note(table, tmp_path, capsys):
  paths = figures.make_figures(table, tmp_path / "a", only=("l2_from_init", "barrier_over_training"))
  assert [p.name for p in paths] == ["figures.md"]
  assert "skipped figure l2_from_init_batch: no metrics.jsonl trajectories" in capsys.readouterr().out
  paths = figures.make_figures(table[table["status"] == "incomplete"], tmp_path / "b")
  assert [p.name for p in paths] == ["figures.md"] and "no finished runs" in paths[0].read_text()
  with pytest.raises(ValueError, match="unknown figures"):
    figures.make_figures(table, tmp_path / "c", only=("barrier_vs_nothing",))


def test_settings_split_figures_by_config_fields_that_vary(table):
  df = table[table["status"] == "finished"].copy()
  assert [label for label, _ in figures.settings(df)] == [""]
  df["optim.name"] = np.where(df["seed"] == 0, "sgd", "adam")
  df["seed"] = 0  # seed is averaged over, never a setting
  groups = figures.settings(df)
  assert [label for label, _ in groups] == ["optim.name=adam", "optim.name=sgd"]
  assert sum(len(rows) for _, rows in groups) == len(df)


def test_no_runs_is_a_clear_error(tmp_path):
  with pytest.raises(report.ReportError, match="no run directories"):
    report.load_table(tmp_path)


def test_command_line(cli_report, tmp_path):
  out, done = cli_report
  assert "runs found: 10  finished: 9  incomplete: 1" in done.stdout
  assert "diverged pairs: 1" in done.stdout and "incomplete: incomplete/run (last logged step 40)" in done.stdout
  for name in ("table.csv", "table.parquet", "trajectories.csv", "trajectories.parquet", "figures.md"):
    assert (out / name).is_file(), name
    assert str(out / name) in done.stdout
  bad = subprocess.run([sys.executable, "-m", "butterfly_jax.report", "--runs", str(tmp_path / "missing")],
                       capture_output=True, text=True, timeout=600)
  assert bad.returncode == 2 and "not a directory" in bad.stderr


def test_the_report_adds_the_instability_map_only_when_asked(runs, cli_report, tmp_path, capsys):
  """``--map``: the sweep varies t (0, 10 steps) and σ, so the report writes the map beside its tables (with
  ``--no-figures``, map.md alone), its diverged pair counted in its cell; without ``--map``, no map."""
  from butterfly_jax.report.__main__ import main
  out, _ = cli_report
  assert not list(out.glob("map*")) and not (out / "threshold.png").exists()
  assert main(["--runs", str(runs), "--out", str(tmp_path / "cli"), "--no-figures", "--map",
               "--map-thresholds=0.001"]) == 0
  printed = capsys.readouterr().out
  assert "runs found: 10" in printed and str(tmp_path / "cli" / "map.md") in printed
  assert sorted(p.name for p in (tmp_path / "cli").glob("map*")) == ["map.md"]
  text = (tmp_path / "cli" / "map.md").read_text()
  assert "### batch direction (+∇ℓ)" in text and "### one random weight" in text and "reaches 0.001" in text
  assert text.count(" d=1") == 1  # the σ = 1e30 child that diverged: in its cell, not dropped
  assert "### Figures" not in text  # no figures, no captions
  shown = _Page.read(tmp_path / "cli" / "index.html")  # the map's tables on the page, no figures
  assert shown.images == [] and "Instability map" in shown.headings and "Figures" not in shown.headings
  assert "reaches 0.001" in shown.text and shown.cells.count("0 [0, 0] n=2") >= 4
  assert any(cell.endswith(" d=1") for cell in shown.cells)
  _, paths = report.make_report(runs, tmp_path / "fn", figures=False, instability_map=True)
  assert [p.name for p in paths[-2:]] == ["map.md", "index.html"]  # the default thresholds; the page last
  assert all(f"reaches {v}" in paths[-2].read_text() for v in ("0.005", "0.01", "0.02"))


def test_make_report_writes_the_tables_and_imports_matplotlib_only_for_figures(runs, table, tmp_path):
  made, paths = report.make_report(runs, tmp_path / "out", figures=False)
  assert [p.name for p in paths] == ["table.csv", "table.parquet", "trajectories.csv", "trajectories.parquet",
                                    "curves.csv", "curves.parquet", "index.html"]
  pd.testing.assert_frame_equal(made, table)
  from butterfly_jax.report.__main__ import main
  assert main(["--runs", str(runs), "--out", str(tmp_path / "none"), "--no-figures", "--no_page"]) == 0
  assert (tmp_path / "none" / "table.csv").is_file() and not (tmp_path / "none" / "index.html").exists()
  code = ("import sys, butterfly_jax.report as r; assert 'matplotlib' not in sys.modules; r.make_figures; "
          "assert 'matplotlib' in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True, timeout=600)


def _table_with_pairs_without_barriers():
  """SYNTHETIC: a pair table made up to exercise how figures show pairs without a barrier: 3 seeds x σ in
  (0, 1e-2, 1) x t in (0, 10 steps); at t = 10, seed 2's σ = 1 pair diverged and seed 1's σ = 1e-2 pair has a
  non-finite test path (its test barriers are null, its train barriers are numbers)."""
  rows = []
  for t, t_epochs in ((0, 0.0), (10, 0.1)):
    for seed in range(3):
      for child, sigma in enumerate((0.0, 1e-2, 1.0), start=1):
        barriers = {figures.C.barrier_col(split, metric): 0.1 * sigma + 0.01 * seed
                    for split in ("train", "test") for metric in ("loss", "error")}
        diverged, status = t == 10 and seed == 2 and sigma == 1.0, "ok"
        if diverged:
          barriers, status = {k: None for k in barriers}, "pair_diverged"
        elif t == 10 and seed == 1 and sigma == 1e-2:
          barriers.update({k: None for k in barriers if ".test." in k})
          status = "path_not_finite"
        rows.append({"run": f"t{t}_seed{seed}", "status": "finished", "definitions": "v3", "perturbation": "batch",
                     "seed": seed, "t": t, "t_epochs": t_epochs, "T": 40, "child": child, "perturb.scale": sigma,
                     "pair_diverged": diverged, "barrier_status": status, **barriers})
  return pd.DataFrame(rows)


def test_pairs_without_a_barrier_are_drawn_and_listed_not_dropped(tmp_path, monkeypatch):
  made = {}
  monkeypatch.setattr(plotting, "save", lambda fig, out_dir, name: made.setdefault(name, fig) and [])
  figures.make_figures(_table_with_pairs_without_barriers(), tmp_path, only=("barrier_vs_sigma", "barrier_vs_time"))

  def crosses(ax):
    return sorted((float(line.get_xdata()[0]), line.get_color()) for line in ax.lines if line.get_gid() == "excluded")

  t10 = plotting.TimeStyles([0, 10])(10)  # the colour of t = 10 steps (t = 0 the other)
  # panels: train loss, test loss, train error, test error; ✕ at each σ that lost a pair, in the colour of t = 10
  by_sigma = [crosses(ax) for ax in made["barrier_vs_sigma_batch"].axes[:4]]
  assert by_sigma == [[(1.0, t10)], [(0.01, t10), (1.0, t10)], [(1.0, t10)], [(0.01, t10), (1.0, t10)]]
  by_time = [sorted(x for x, _ in crosses(ax)) for ax in made["barrier_vs_time_batch"].axes[:4]]
  assert by_time == [[0.1], [0.1, 0.1], [0.1], [0.1, 0.1]]  # σ = 1e-2 and σ = 1 at t = 0.1 epochs, stacked
  captions = (tmp_path / "figures.md").read_text()
  assert captions.count("Pairs without a barrier are left out of the means (which are over the remaining seeds) and "
                        "drawn as ✕ at the top of the panel") == 2
  assert "σ = 1e-2: 1 with a non-finite interpolation path; σ = 1e+0: 1 diverged." in captions
  assert "drawn as ✕ at the top of the panels" in made["barrier_vs_sigma_batch"]._suptitle.get_text()


def _made_figures(table, tmp_path, monkeypatch, only):
  """The figures ``only`` of ``table`` as matplotlib Figures by name (not saved)."""
  made = {}
  monkeypatch.setattr(plotting, "save", lambda fig, out_dir, name: made.setdefault(name, fig) and [])
  figures.make_figures(table, tmp_path, only=only)
  return made


def test_barriers_are_on_symlog_axes_that_say_so(tmp_path, monkeypatch):
  made = _made_figures(_table_with_pairs_without_barriers(), tmp_path, monkeypatch,
                       ("barrier_vs_sigma", "barrier_vs_time"))
  for name in ("barrier_vs_sigma_batch", "barrier_vs_time_batch"):
    axes = made[name].axes[:4]
    for ax in axes:
      assert ax.get_yscale() == "symlog" and ax.yaxis.get_transform().linthresh == plotting.BARRIER_LINTHRESH, name
    assert "symlog" in axes[0].get_ylabel() and "symlog" in axes[2].get_ylabel()
    assert axes[0].get_ylim() == axes[1].get_ylim()  # train and test share a row's axis


def test_sigma_and_time_styles_are_distinct_and_sigma_styles_fixed():
  sigmas = [0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 3e-3]
  styles = plotting.SigmaStyles(sigmas)
  assert len({styles(s) for s in sigmas}) == len(sigmas) and len({styles.marker(s) for s in sigmas}) == len(sigmas)
  assert styles(0.0) == plotting.ZERO_COLOR
  for s in (1e-5, 1e-4, 1e-3):  # the same colour and marker whichever other σ a figure holds
    assert plotting.SigmaStyles([s]).style(s) == styles.style(s) == plotting.SigmaStyles().style(s)
  times = plotting.TimeStyles([0, 10, 50, 100, 250, 468, 936, 1872])
  assert len({times.style(t) for t in times.values}) == 8 and plotting.ZERO_COLOR not in {times(t) for t in times.values}


def _scatter_x(ax):
  return sorted(float(x) for c in ax.collections if str(c.get_gid()).startswith("pairs:") for x in c.get_offsets()[:, 0])


def test_relation_figures_plot_the_train_loss_barrier(table, tmp_path, monkeypatch):
  made = _made_figures(table, tmp_path, monkeypatch, ("cka_vs_barrier", "ensemble_vs_barrier"))
  rows = table[(table["status"] == "finished")]
  train = figures.C.barrier_col("train", "loss")
  cka = rows[np.isfinite(rows[train].astype(float)) & np.isfinite(rows["vs_child0.cka"].astype(float))]
  (ax,) = made["cka_vs_barrier"].axes
  assert _scatter_x(ax) == sorted(cka[train].astype(float)) and len(cka) > 0
  assert ax.get_xscale() == "symlog" and "train loss barrier" in ax.get_xlabel() and "symlog" in ax.get_xlabel()
  ens = rows[np.isfinite(rows[train].astype(float)) & np.isfinite(rows["vs_child0.ensemble.accuracy"].astype(float))]
  left = made["ensemble_vs_barrier"].axes[0]
  assert _scatter_x(left) == sorted(ens[train].astype(float)) and "train loss barrier" in left.get_xlabel()
  assert f"n = {len(cka)} pairs" in made["cka_vs_barrier"]._suptitle.get_text()


def test_pretraining_panels_share_one_y_axis_from_zero(table, tmp_path, monkeypatch):
  synthetic = table.assign(**{"init.checkpoint": [f"runs/pre:{100 * int(s)}" for s in table["seed"].fillna(0)]})
  axes = _made_figures(synthetic, tmp_path, monkeypatch, ("barrier_vs_pretraining",))["barrier_vs_pretraining"].axes
  assert len(axes) > 1
  for ax in axes:
    assert ax.get_shared_y_axes().joined(axes[0], ax) and ax.get_yscale() == "symlog" and ax.get_ylim()[0] == 0


def test_symlog_axes_label_zero_and_decades_only():
  """A symlog axis whose linear range ends at a data value (7.2e-5) labels 0 and the decades, never that value;
  its linear range starts at the decade below."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from butterfly_jax.report import plotting as P
  fig, ax = plt.subplots()
  ax.plot([0, 7.20327e-5, 1e-3, 0.5], [0, 1e-4, 0.02, 1.3])
  P.symlog(ax, "x", linthresh=7.20327e-5)
  P.symlog(ax, "y")
  fig.canvas.draw()
  for axis in (ax.xaxis, ax.yaxis):
    labels = [t.get_text() for t in axis.get_ticklabels() if t.get_text()]
    assert "0" in labels and len(labels) >= 3
    assert all(l == "0" or l.startswith(("$\\mathregular{10^", "$\\mathregular{-10^")) for l in labels), labels
  assert ax.xaxis.get_transform().linthresh == 1e-5
  assert P.decade_label(7.20327e-5) == "" and P.decade_label(1e-3) == "$\\mathregular{10^{-3}}$"
  plt.close(fig)
