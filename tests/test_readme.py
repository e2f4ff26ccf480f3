"""The README and the pages under docs/ stay true to the code.

- The README's Configuration table names every setting's environment variable, with the default the
  code has, and names nothing the code does not read: a setting added, renamed or given a new default
  fails here until the table says so.
- Every variable the code reads straight from the environment (`os.environ.get("NAME")`, outside
  `providers/settings.py`) is in the table too.
- Every relative link in the README, docs/ and bench/README.md resolves, to a file and, with a `#`, to a
  heading there (GitHub's anchors); every repository path written in backticks exists.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, fields

import pytest

from providers.settings import _ENV_NAMES, Settings
from tests.support import ROOT

README = ROOT / "README.md"
PAGES = [README, ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# The packages whose code may read the environment (bench/ scripts take flags; their Pipecat server is
# configured by the comparison script, not by a user).
SOURCE_DIRS = ("gateway", "dialog", "providers", "audio", "loadgen", "emulators")
# Read by gateway/tracing.py (the OpenTelemetry SDK reads the rest of OTEL_* itself).
TRACING_VARIABLES = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED",
                     "OTEL_TRACES_EXPORTER", "OTEL_SERVICE_NAME"}
# Top-level folders a path in backticks may start with; other backticked text with a slash is not a path.
REPO_DIRS = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")}
GENERATED = ("artifacts/",)  # written by test runs, git-ignored


def section(text: str, heading: str) -> str:
    """The text under a `## heading`, up to the next `## `."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"README has no '## {heading}' section"
    return match.group(1)


def configuration_table() -> dict[str, str]:
    """{variable: default cell} from the Configuration section's table."""
    rows = {}
    for line in section(README.read_text(), "Configuration").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"`[A-Z][A-Z0-9_]*`", cells[0]):
            name = cells[0].strip("`")
            assert name not in rows, f"{name} is in the table twice"
            rows[name] = cells[1]
    return rows


def env_names(field_name: str) -> tuple[str, ...]:
    return _ENV_NAMES.get(field_name, (field_name.upper(),))


def documented_default(cell: str, kind: type) -> object:
    if cell == "unset":
        return ""
    match = re.fullmatch(r"`([^`]*)`", cell)
    assert match, f"a default is `value` or unset, not {cell!r}"
    value = match.group(1)
    if kind is bool:
        return {"true": True, "false": False}[value]
    if kind in (int, float):
        return kind(value)
    return value


def test_every_setting_is_in_the_configuration_table_with_its_default():
    table = configuration_table()
    for f in fields(Settings):
        names = env_names(f.name)
        assert names[0] in table, f"README Configuration: add {names[0]} (Settings.{f.name})"
        assert f.default is not MISSING
        documented = documented_default(table[names[0]], type(f.default))
        assert documented == f.default, f"README Configuration: {names[0]} defaults to {f.default!r}, not {documented!r}"


def read_from_environment() -> set[str]:
    """Names the code reads with os.environ / os.getenv outside the settings object, and the tracing ones."""
    names = set()
    pattern = re.compile(r"""(?:os\.environ\.get|os\.getenv|os\.environ\[)\(?\s*["']([A-Z][A-Z0-9_]*)["']""")
    constant = re.compile(r"""^[A-Z_]*ENV[A-Z_]*\s*=\s*["']([A-Z][A-Z0-9_]*)["']""", flags=re.MULTILINE)
    for folder in SOURCE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "settings.py":
                continue
            text = path.read_text()
            names |= set(pattern.findall(text)) | set(constant.findall(text))
    tracing = (ROOT / "gateway" / "tracing.py").read_text()
    assert all(name in tracing for name in TRACING_VARIABLES), "a tracing variable is no longer read in gateway/tracing.py"
    return names | TRACING_VARIABLES


def test_variables_read_outside_the_settings_are_in_the_table():
    table = configuration_table()
    missing = sorted(read_from_environment() - set(table))
    assert not missing, f"README Configuration: add {missing}"


def test_the_table_names_only_variables_the_code_reads():
    settings_names = {name for f in fields(Settings) for name in env_names(f.name)}
    unknown = sorted(set(configuration_table()) - settings_names - read_from_environment())
    assert not unknown, f"README Configuration names variables nothing reads: {unknown}"


def anchors(path) -> set[str]:
    """GitHub's heading anchors for a Markdown file: lower-case, punctuation dropped, spaces to hyphens,
    a repeated heading numbered."""
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        match = re.match(r"#{1,6} (.*)", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def prose(path) -> str:
    """The file without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(page)):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_paths_in_backticks_exist(page):
    missing = []
    for token in re.findall(r"`([^`\s]+)`", prose(page)):
        if "/" not in token or re.search(r"[*{}<>$:=]", token) or ".venv" in token or token.startswith(GENERATED):
            continue
        if not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)*/?", token):
            continue
        first = token.split("/")[0]
        candidates = [ROOT / token] if first in REPO_DIRS else []
        candidates.append(page.parent / token)
        if first not in REPO_DIRS and not (page.parent / first).exists():
            continue  # not a path of this repository (a MIME type, a unit, "and/or")
        if not any(c.exists() for c in candidates):
            missing.append(token)
    assert not missing, f"{page.relative_to(ROOT)}: no such paths {missing}"
