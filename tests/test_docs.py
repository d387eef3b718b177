"""The documentation's references resolve: README.md, CHANGELOG.md and docs/*.md link only files (and headings)
that exist, quote only commands and config files that exist, and README.md stays short. No subprocesses."""

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_BYTES = 10_240

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
MODULE = re.compile(r"python -m (butterfly_jax(?:\.\w+)*)")
SCRIPT = re.compile(r"(?<![\w/.-])(butterfly-[a-z][a-z0-9-]*)(?![\w/.-])")
CONFIG = re.compile(r"(?<![\w/.])configs/(\w+)\.py\b")


def _split(text: str) -> tuple[str, str]:
  """(prose, code): the text without fenced blocks and inline code spans, and those blocks and spans."""
  code = [m.group(0) for m in FENCE.finditer(text)]
  prose = FENCE.sub("\n", text)
  code += [m.group(2) for m in INLINE.finditer(prose)]
  return INLINE.sub(" ", prose), "\n".join(code)


def _anchors(path: Path) -> set[str]:
  """GitHub's anchors of a markdown file's headings: lower case, punctuation dropped, spaces to hyphens, a
  repeated heading numbered -1, -2, ..."""
  seen: dict[str, int] = {}
  anchors = set()
  for line in FENCE.sub("\n", path.read_text()).splitlines():
    m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
    if not m:
      continue
    slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
    n = seen.get(slug, 0)
    seen[slug] = n + 1
    anchors.add(slug if n == 0 else f"{slug}-{n}")
  return anchors


def _name(page: Path) -> str:
  return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_relative_links_resolve_to_files_and_headings(page):
  prose, _ = _split(page.read_text())
  broken = []
  for target in LINK.findall(prose):
    if SCHEME.match(target):
      continue
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    if not resolved.exists():
      broken.append(f"{target}: no such file")
    elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
      broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
  assert not broken, f"{_name(page)}: broken links: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_quoted_commands_and_config_files_exist(page):
  text = page.read_text()
  _, code = _split(text)
  scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
  missing = []
  for module in sorted(set(MODULE.findall(code))):
    spec = importlib.util.find_spec(module)
    if spec is None:
      missing.append(f"python -m {module}: no such module")
    elif spec.submodule_search_locations is not None and importlib.util.find_spec(f"{module}.__main__") is None:
      missing.append(f"python -m {module}: a package without __main__")
  missing += [f"{s}: not in pyproject.toml's [project.scripts]" for s in sorted(set(SCRIPT.findall(code)))
              if s not in scripts]
  missing += [f"configs/{name}.py: no such file" for name in sorted(set(CONFIG.findall(text)))
              if not name.isupper() and not (ROOT / "configs" / f"{name}.py").is_file()]
  assert not missing, f"{_name(page)}: {missing}"


def test_readme_is_short_and_links_every_docs_page():
  readme = ROOT / "README.md"
  size = len(readme.read_bytes())
  assert size <= README_MAX_BYTES, f"README.md is {size} bytes, over {README_MAX_BYTES}: move text into docs/"
  prose, _ = _split(readme.read_text())
  linked = {(ROOT / t.partition("#")[0]).resolve() for t in LINK.findall(prose) if not SCHEME.match(t)}
  unlinked = [_name(p) for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
  assert not unlinked, f"README.md links no {unlinked}"
  index = ROOT / "docs" / "README.md"
  listed = {(index.parent / t.partition("#")[0]).resolve() for t in LINK.findall(_split(index.read_text())[0])
            if not SCHEME.match(t)}
  unlisted = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p != index and p.resolve() not in listed]
  assert not unlisted, f"docs/README.md's index lists no {unlisted}"


def test_the_checks_catch_what_they_look_for(tmp_path):
  """The patterns above find a broken link, a missing anchor, an unknown module, script and config."""
  (tmp_path / "a.md").write_text("# A page\n\n## Exit status\n")
  page = tmp_path / "b.md"
  page.write_text("[x](a.md#exit-status) [y](missing.md) [z](a.md#nowhere) [w](https://example.org)\n"
                  "`python -m butterfly_jax.nosuch` and `butterfly-nosuch`, configs/nosuch.py\n")
  prose, code = _split(page.read_text())
  assert LINK.findall(prose) == ["a.md#exit-status", "missing.md", "a.md#nowhere", "https://example.org"]
  assert _anchors(tmp_path / "a.md") == {"a-page", "exit-status"}
  assert MODULE.findall(code) == ["butterfly_jax.nosuch"] and importlib.util.find_spec("butterfly_jax.nosuch") is None
  assert SCRIPT.findall(code) == ["butterfly-nosuch"]
  assert CONFIG.findall(page.read_text()) == ["nosuch"]
  assert SCRIPT.findall("https://github.com/butterfly-jax/butterfly_jax") == []
