"""The report page: ``index.html``, one self-contained file with the report's figures and captions, its summary,
a readable part of the table, the instability map's tables and the provenance, to open offline or send on
(docs/reports.md, "The report page").

Self-contained: every figure is embedded as a base64 ``data:`` URI, the style is inline, and there is no script,
font or image to fetch; the only links are to the report's own files beside the page (the tables as CSV and
Parquet, each figure's PDF). The page is rendered from the files the report wrote: the captions from
``figures.md`` and ``map.md`` (their one home; :func:`figure_line` writes a caption's line, :func:`read_figure`
reads it back), the map's tables from ``map.md``. The page adds no date or time to what those files hold: written
again from the same files, it is the same page.

The standard library writes it (html, base64): no template or Markdown package, and no matplotlib (a report with
``--no-figures`` has its page too).
"""

import base64
import html
import numbers
import platform
import re
from pathlib import Path

import jax

from butterfly_jax.io import results as results_lib
from butterfly_jax.io.rundir import loaded_revision
from butterfly_jax.report.table import summary
from butterfly_jax.version import __version__

NAME = "index.html"
# The columns of the page's table where the table has them: what a pair is and its main numbers (every column is
# in table.csv).
COLUMNS = ("run", "status", "definitions", "perturbation", "seed", "t", "t_epochs", "child", "perturb.scale",
           "barrier_status", "vs_child0.barrier.train.loss", "vs_child0.barrier.test.loss",
           "vs_child0.barrier.train.error", "vs_child0.barrier.test.error", "vs_child0.l2", "vs_child0.cka",
           "test.accuracy", "child0.test.accuracy", "last_step")
MAX_ROWS = 1000  # the page's table stops here (table.csv has every row): a page of a few MB at most
# A run's provenance (results.json "provenance"), one column each in the page's provenance table.
PROVENANCE = (("package_version", "butterfly_jax"), ("git_revision", "git revision"), ("jax_version", "jax"),
              ("backend", "backend"), ("devices", "devices"), ("host_cpu", "host CPU"), ("xla_flags", "XLA_FLAGS"))

_FIGURE = re.compile(r"^- \*\*(?P<name>[A-Za-z0-9._-]+)\*\* \((?P<links>\[\w+\]\([^()\s]+\)(?:, \[\w+\]\([^()\s]+\))*)"
                     r"\): (?P<caption>.*)$")
_NUM = ' class="num"'  # a right-aligned, numeric column
_LINK = re.compile(r"\[(\w+)\]\(([^()\s]+)\)")
_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 1em 2em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
nav a { margin-right: 1em; }
pre, code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
figure { margin: 1.5em 0; padding: 0.5em; border: 1px solid #e4e4e4; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { font-size: 0.9em; margin-top: 0.5em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: left; white-space: nowrap; }
th { background: #f0f0f0; position: sticky; top: 0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.missing { color: #a00; }
"""


# ---------------------------------------------------------------------------------------------------------
# A figure's line in figures.md and map.md: written by the figures' makers, read by the page.


def figure_line(name: str, caption: str, formats=("png", "pdf")) -> str:
  """A figure's line in a Markdown list of figures (``figures.md``, ``map.md``): its name in bold, links to its
  files (``NAME.png``, ...) and its caption. Returned as text; one format, so that :func:`read_figure` reads back
  the name and the caption exactly."""
  links = ", ".join(f"[{ext}]({name}.{ext})" for ext in formats)
  return f"- **{name}** ({links}): {caption}"


def read_figure(line: str):
  """(name, {format: file name}, caption) of a :func:`figure_line`, or None for any other line: the page embeds
  the figure and shows the caption the Markdown file holds."""
  m = _FIGURE.match(line)
  if not m:
    return None
  return m["name"], dict(_LINK.findall(m["links"])), m["caption"]


# ---------------------------------------------------------------------------------------------------------
# The Markdown the report writes, as HTML.


def _inline(text: str) -> str:
  """Escaped ``text`` with the Markdown the report's files use inline: `code`, **bold** and [text](file) links."""
  out = html.escape(text, quote=True)
  out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
  out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
  return re.sub(r"\[([^\]]+)\]\(([^()\s]+)\)", r'<a href="\2">\1</a>', out)


def png_data_uri(path: Path) -> str:
  """The PNG at ``path`` as a ``data:image/png;base64,...`` URI: the page holds the image itself, so that it opens
  without the folder."""
  return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _figure(folder: Path, name: str, files: dict, caption: str) -> str:
  """A <figure>: the PNG embedded, the caption, links to the other formats; a note where the PNG is missing."""
  png = folder / files.get("png", f"{name}.png")
  if png.is_file():
    image = f'<img alt="{html.escape(name)}" src="{png_data_uri(png)}">'
  else:
    image = f'<p class="missing">{html.escape(png.name)} is missing: it was not beside {NAME} when written.</p>'
  others = ", ".join(f'<a href="{html.escape(f)}">{html.escape(ext)}</a>' for ext, f in files.items() if ext != "png")
  head = f"<strong>{html.escape(name)}</strong>" + (f" ({others})" if others else "")
  return (f'<figure id="{html.escape(name)}">{image}<figcaption>{head}: '
          f'<span class="caption">{_inline(caption)}</span></figcaption></figure>')


def _split_row(line: str) -> list:
  return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _md_table(lines: list) -> str:
  """A Markdown table (header, ``| --- | ---: |`` separator, rows) as an HTML table; ``---:`` columns right-aligned."""
  header, rule, rows = _split_row(lines[0]), _split_row(lines[1]), [_split_row(r) for r in lines[2:]]
  cls = [_NUM if r.endswith(":") else "" for r in rule]
  out = ["<div class=\"scroll\"><table><thead><tr>"]
  out += [f"<th{cls[i] if i < len(cls) else ''}>{_inline(h)}</th>" for i, h in enumerate(header)]
  out.append("</tr></thead><tbody>")
  for row in rows:
    out.append("<tr>" + "".join(f"<td{cls[i] if i < len(cls) else ''}>{_inline(c)}</td>"
                                for i, c in enumerate(row)) + "</tr>")
  out.append("</tbody></table></div>")
  return "".join(out)


def markdown_html(text: str, folder, shift: int = 1) -> str:
  """The report's Markdown (``figures.md``, ``map.md``) as HTML: headings (``#`` one level deeper per ``shift``),
  paragraphs, lists, tables and inline code, bold and links; a :func:`figure_line` becomes a <figure> with the PNG
  from ``folder`` embedded. Returns the HTML."""
  folder = Path(folder)
  out, para, items = [], [], []

  def flush():
    if para:
      out.append(f"<p>{_inline(' '.join(para))}</p>")
      para.clear()
    if items:
      out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
      items.clear()

  lines = text.splitlines()
  i = 0
  while i < len(lines):
    line = lines[i]
    heading = re.match(r"^(#{1,6})\s+(.*)$", line)
    figure = read_figure(line)
    if heading:
      flush()
      level = min(6, len(heading[1]) + shift)
      out.append(f"<h{level}>{_inline(heading[2])}</h{level}>")
    elif figure:
      flush()
      out.append(_figure(folder, *figure))
    elif line.startswith("|"):
      flush()
      j = i
      while j < len(lines) and lines[j].startswith("|"):
        j += 1
      out.append(_md_table(lines[i:j]) if j - i >= 2 else f"<p>{_inline(line)}</p>")
      i = j
      continue
    elif line.startswith("- "):
      if para:
        flush()
      items.append(line[2:])
    elif not line.strip():
      flush()
    else:
      if items:
        flush()
      para.append(line.strip())
    i += 1
  flush()
  return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------
# The table, the summary and the provenance.


def _cell(value) -> tuple:
  """(text, numeric?) of a table cell: floats to 4 significant digits, missing values empty."""
  if value is None:
    return "", False
  if isinstance(value, bool):  # an Integral; numpy's bool is no number and falls through to str
    return str(value), False
  if isinstance(value, numbers.Integral):
    return str(int(value)), True
  if isinstance(value, numbers.Real):
    return ("" if value != value else f"{float(value):.4g}"), True
  return str(value), False


def table_html(table, max_rows: int = MAX_ROWS) -> str:
  """The columns of :data:`COLUMNS` the table has, its first ``max_rows`` rows, as an HTML table with a line saying
  how much of the table it shows."""
  cols = [c for c in COLUMNS if c in table.columns]
  shown = table[cols].head(max_rows)
  shown = shown.astype(object).where(shown.notna(), None)
  rows = [[_cell(v) for v in row] for row in shown.itertuples(index=False)]
  numeric = [any(r[i][1] for r in rows) for i in range(len(cols))]
  out = ["<div class=\"scroll\"><table><thead><tr>"]
  out += [f"<th{_NUM if numeric[i] else ''}>{html.escape(c)}</th>" for i, c in enumerate(cols)]
  out.append("</tr></thead><tbody>")
  for r in rows:
    out.append("<tr>" + "".join(f"<td{_NUM if numeric[i] else ''}>{html.escape(text)}</td>"
                                for i, (text, _) in enumerate(r)) + "</tr>")
  out.append("</tbody></table></div>")
  what = (f"{len(shown)} of {len(table)} rows" if len(table) > len(shown) else f"all {len(table)} rows")
  return (f"<p>{len(cols)} of the table's {len(table.columns)} columns, {what} (one per child pair of a finished "
          "run, one per unfinished run); floats to 4 significant digits.</p>" + "".join(out))


def runs_provenance(table, runs_dir) -> list:
  """(provenance values per :data:`PROVENANCE`, number of runs, one run's name) for each distinct provenance of
  the finished runs' results.json (under ``runs_dir``), most runs first: which code, jax and devices made the
  numbers."""
  groups = {}
  finished = table.loc[table["status"] == "finished", "run"].drop_duplicates()
  for run in finished:
    try:
      prov = results_lib.load(Path(runs_dir) / run / "results.json").get("provenance") or {}
    except (OSError, ValueError):  # unreadable since the table was read: the table's status says so next time
      prov = {}
    key = tuple(", ".join(map(str, v)) if isinstance(v, list) else ("" if v is None else str(v))
                for v in (prov.get(k) for k, _ in PROVENANCE))
    n, first = groups.get(key, (0, run))
    groups[key] = (n + 1, first)
  return sorted(((key, n, first) for key, (n, first) in groups.items()), key=lambda g: (-g[1], g[2]))


def provenance_html(table, runs_dir) -> str:
  """The provenance: what wrote the page, the definitions labels of the runs, and the code, jax, backend and
  devices that made the runs' numbers (:func:`runs_provenance`)."""
  rev = loaded_revision() or "not a git checkout"
  out = [f"<p>This page: butterfly_jax {html.escape(__version__)} (git {html.escape(rev)}), jax "
         f"{html.escape(jax.__version__)}, Python {html.escape(platform.python_version())}, from "
         f"<code>{html.escape(str(runs_dir))}</code>.</p>"]
  runs = table.drop_duplicates("run")
  if "definitions" in runs:
    labels = runs["definitions"].fillna("?").value_counts().sort_index()
    out.append("<p>Definitions (what σ, the batch direction and CKA mean; BUILD_NOTES.md, \"Definitions and "
               "recipes\"): " + ", ".join(f"<code>{html.escape(str(k))}</code>: {n} run{'s' if n != 1 else ''}"
                                          for k, n in labels.items())
               + (" — compare runs only within one label." if len(labels) > 1 else ".") + "</p>")
  groups = runs_provenance(table, runs_dir)
  if groups:
    out.append("<p>The finished runs' provenance (results.json), one row per distinct combination:</p>")
    out.append("<div class=\"scroll\"><table><thead><tr><th class=\"num\">runs</th><th>one of them</th>"
               + "".join(f"<th>{html.escape(label)}</th>" for _, label in PROVENANCE) + "</tr></thead><tbody>")
    for key, n, first in groups:
      out.append(f"<tr><td class=\"num\">{n}</td><td>{html.escape(first)}</td>"
                 + "".join(f"<td>{html.escape(v)}</td>" for v in key) + "</tr>")
    out.append("</tbody></table></div>")
  else:
    out.append("<p>No finished runs: no run provenance.</p>")
  return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------
# The page.


def _relative(path: Path, out: Path) -> str:
  try:
    return path.relative_to(out).as_posix()
  except ValueError:
    return path.as_posix()


def _map_title(path: Path) -> str:
  """``map__optim.name-adam.md`` -> ``optim.name-adam``: the setting a map file is of ("" for ``map.md``)."""
  return path.stem.partition("__")[2]


def page_html(table, out_dir, paths, runs_dir) -> str:
  """The page's HTML (:func:`write_page`). Returns the text."""
  out = Path(out_dir)
  paths = [Path(p) for p in paths]
  md = {p.name: p for p in paths if p.suffix == ".md"}
  maps = sorted((p for name, p in md.items() if name.startswith("map") and p.is_file()), key=lambda p: p.name)
  data = [p for p in paths if p.suffix in (".csv", ".parquet")]
  sections = [("summary", "Summary")] + ([("figures", "Figures")] if "figures.md" in md else []) + (
      [("map", "Instability map")] if maps else []) + [("table", "Table"), ("provenance", "Provenance")]
  title = f"butterfly_jax report: {Path(runs_dir).name or str(runs_dir)}"
  body = [f"<h1>{html.escape(title)}</h1>",
          "<nav>" + "".join(f'<a href="#{k}">{v}</a>' for k, v in sections) + "</nav>",
          '<section id="summary"><h2>Summary</h2>', f"<pre>{html.escape(summary(table))}</pre>"]
  if data:
    body.append("<p>The tables, beside this page: " + ", ".join(
        f'<a href="{html.escape(_relative(p, out))}">{html.escape(_relative(p, out))}</a>' for p in data) + ".</p>")
  body.append("</section>")
  if "figures.md" in md:
    body += ['<section id="figures">', markdown_html(md["figures.md"].read_text(), md["figures.md"].parent),
             "</section>"]
  if maps:
    body.append('<section id="map"><h2>Instability map</h2>')
    for p in maps:
      link = f'<a href="{html.escape(_relative(p, out))}">{html.escape(p.name)}</a>'
      setting = _map_title(p)
      body.append(f"<h3>{html.escape(setting)} ({link})</h3>" if setting else f"<p>From {link}.</p>")
      body.append(markdown_html(p.read_text(), p.parent, shift=1))
    body.append("</section>")
  body += ['<section id="table"><h2>Table</h2>', table_html(table), "</section>",
           '<section id="provenance"><h2>Provenance</h2>', provenance_html(table, runs_dir), "</section>"]
  return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
          f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
          + "\n".join(body) + "\n</body>\n</html>\n")


def write_page(table, out_dir, paths, runs_dir) -> Path:
  """Writes ``index.html`` into ``out_dir``: the report of ``table`` (:func:`butterfly_jax.report.load_table` of
  ``runs_dir``) from the files it wrote, ``paths`` (the figures of its ``figures.md`` and ``map*.md``, embedded,
  with their captions; its tables linked), and the provenance of the runs under ``runs_dir``. Only the files in
  ``paths`` are shown, so that an older ``figures.md`` or map left in the folder is not. Returns the page's path."""
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  path = out / NAME
  path.write_text(page_html(table, out, paths, runs_dir), encoding="utf-8")
  return path
