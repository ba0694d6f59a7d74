"""The documentation against the code, so that neither can drift from the other.

docs/reference.md promises every CRD field, Service annotation, flag and metric. Each test
loads one source of truth from the code (the CRDs' openAPIV3Schema, leifur/model/names.py, the
programs' argparse parsers, the Prometheus registry) and checks that the page lists all of
it, and, for fields, annotations, flags and metrics, that the page lists nothing else. Flag
defaults and environment variables are checked too: they are what drifts most quietly.
Finally the site must build with `mkdocs build --strict` (broken links, anchors, pages left
out of the nav).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import leifur.agent.main
import leifur.controller.main
from leifur.controller import allocation
from leifur.ipam import allocator
from leifur.kube import observability
from leifur.model import names, service
from leifur.model.settings import AgentSettings, ControllerSettings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference.md"
REF = "docs/reference.md"

# Defaults computed from the host at start-up (hostname-pid): the page describes them in words.
DYNAMIC_DEFAULTS = {("leifur-controller", "identity")}

PROGRAMS = {
    "leifur-controller": leifur.controller.main.build_parser,
    "leifur-agent": leifur.agent.main.build_parser,
}
# The in-depth pages keep their own flag tables; nothing in them may name a flag that is gone.
FLAG_PAGES = {"controller.md": "leifur-controller", "agent.md": "leifur-agent"}


# -- reading the Markdown -------------------------------------------------------------------


def section(text: str, heading: str, where: str = REF) -> str:
    """The text under `heading` (a whole line such as '### IPAddressPool') up to the next heading
    of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        pytest.fail(f"{where} has no heading {heading!r}; the reference checks look for it by that exact line")
    out = []
    fenced = False
    for line in lines[start + 1:]:
        if line.lstrip().startswith("```"):
            fenced = not fenced  # a shell comment in a code block is not a heading
        m = None if fenced else re.match(r"(#+) ", line)
        if m and len(m.group(1)) <= level:
            break
        out.append(line)
    return "\n".join(out)


def table_rows(text: str) -> list[dict[str, str]]:
    """Every row of every Markdown table in `text`, as {lower-cased header: cell}."""
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
        elif all(re.fullmatch(r":?-+:?", c) for c in cells):
            continue
        else:
            rows.append(dict(zip(header, cells, strict=False)))
    return rows


def code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def column(rows: list[dict[str, str]], name: str) -> set[str]:
    return {span for row in rows for span in code_spans(row.get(name, ""))}


@pytest.fixture(scope="module")
def reference() -> str:
    return REFERENCE.read_text()


# -- custom resources -----------------------------------------------------------------------


def schema_paths(schema: dict, prefix: str = "") -> dict[str, bool]:
    """Every field path of an openAPIV3Schema (`spec.a.b`, `status.list[].x`) -> whether it is a leaf.

    A label selector (x-kubernetes-map-type: atomic) counts as one field: its matchLabels and
    matchExpressions are the standard Kubernetes ones, documented once as "label selector".
    """
    out: dict[str, bool] = {}
    for name, sub in (schema.get("properties") or {}).items():
        if not prefix and name in ("apiVersion", "kind", "metadata"):
            continue
        path = f"{prefix}.{name}" if prefix else name
        inner, inner_prefix = sub, path
        if sub.get("type") == "array":
            inner, inner_prefix = sub.get("items") or {}, path + "[]"
        if sub.get("x-kubernetes-map-type") == "atomic" or inner.get("x-kubernetes-map-type") == "atomic":
            out[path] = True
            continue
        children = schema_paths(inner, inner_prefix)
        out[path] = not children
        out.update(children)
    return out


CRDS = sorted((ROOT / "deploy" / "crds").glob("*.yaml"))


@pytest.mark.parametrize("crd_file", CRDS, ids=lambda p: p.name)
def test_every_crd_field_is_in_the_reference_and_nothing_else(crd_file: Path, reference: str) -> None:
    crd = yaml.safe_load(crd_file.read_text())
    kind = crd["spec"]["names"]["kind"]
    paths: dict[str, bool] = {}
    for version in crd["spec"]["versions"]:
        paths.update(schema_paths(version["schema"]["openAPIV3Schema"]))
    heading = f"### {kind}"
    shorts = ", ".join(f"`{n}`" for n in crd["spec"]["names"].get("shortNames", []))
    assert f"Short name {shorts}." in section(reference, heading), (
        f"{REF}, under {heading!r}: say 'Short name {shorts}.', as {crd_file.relative_to(ROOT)} has it")
    documented = column(table_rows(section(reference, heading)), "field")

    missing = sorted(p for p, leaf in paths.items() if leaf and p not in documented)
    assert not missing, (
        f"{REF}, table under {heading!r}: add a row for each field of {crd_file.relative_to(ROOT)} "
        f"that is not documented: {', '.join(missing)}")
    unknown = sorted(documented - paths.keys())
    assert not unknown, (
        f"{REF}, table under {heading!r} documents fields that {crd_file.relative_to(ROOT)} does not have: "
        f"{', '.join(unknown)}; remove or rename those rows")


# -- annotations and other names ------------------------------------------------------------


def test_every_service_annotation_is_in_the_reference_and_nothing_else(reference: str) -> None:
    in_code = {value for name, value in vars(names).items() if name.startswith("ANN_")}
    in_code |= {alias for aliases in names.METALLB_ALIASES.values() for alias in aliases}
    heading = "### Annotations"
    documented = {a for a in column(table_rows(section(reference, heading)), "annotation") if "/" in a}
    missing = sorted(in_code - documented)
    assert not missing, (f"{REF}, table under {heading!r}: add a row for the annotations of leifur/model/names.py "
                         f"(ANN_* and METALLB_ALIASES) that are not documented: {', '.join(missing)}")
    unknown = sorted(documented - in_code)
    assert not unknown, (f"{REF}, table under {heading!r} documents annotations that leifur/model/names.py does not "
                         f"define (ANN_*): {', '.join(unknown)}; remove or rename those rows")


def test_finalizers_labels_conditions_and_reasons_are_in_the_reference(reference: str) -> None:
    # The words users meet on their objects: finalizers, the node label, condition types, and
    # the reasons of conditions and Events.
    prefixes = ("SERVICE_FINALIZER", "POOL_FINALIZER", "LABEL_", "COND_", "REASON_")
    wanted = {f"leifur/model/names.py {n}": v for n, v in vars(names).items() if n.startswith(prefixes)}
    wanted |= {f"leifur/ipam/allocator.py REASONS ({r})": r for r in allocator.REASONS}
    wanted |= {"leifur/model/service.py REASON_INVALID_REQUEST": service.REASON_INVALID_REQUEST,
               "leifur/controller/allocation.py REASON_ALLOCATED": allocation.REASON_ALLOCATED,
               "leifur/controller/allocation.py REASON_PARTIAL": allocation.REASON_PARTIAL}
    spans = set(code_spans(reference))
    missing = sorted(f"`{v}` ({where})" for where, v in wanted.items() if v not in spans)
    assert not missing, (f"{REF} does not mention these names (as `code`): {', '.join(missing)}; add them to "
                         "the sections 'Services', 'Conditions' or 'Events'")


# -- flags ----------------------------------------------------------------------------------


def env_names(cell: str) -> set[str]:
    """The environment variables named in a table cell."""
    return {s for s in code_spans(cell) if re.fullmatch(r"[A-Z_][A-Z0-9_]*", s)}


def env_reads(program: str) -> set[str]:
    """The environment variables a program's parser takes defaults from (os.environ.get in its source)."""
    source = inspect.getsource(PROGRAMS[program]) + inspect.getsource(observability.add_common_flags)
    return set(re.findall(r"os\.environ\.get\(\s*[\"']([A-Za-z0-9_]+)[\"']", source))


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {opt: a for a in parser._actions for opt in a.option_strings if opt not in ("-h", "--help", "--version")}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, reference: str) -> pytest.MonkeyPatch:
    # Defaults are read from the environment when the parser is built: without these variables
    # the parser shows the defaults the page documents.
    every = {name for row in table_rows(reference) for name in env_names(row.get("env", ""))}
    for name in every | {env for program in PROGRAMS for env in env_reads(program)}:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _row_of(rows: list[dict[str, str]], action: argparse.Action) -> dict[str, str] | None:
    return next((r for r in rows if set(action.option_strings) & set(code_spans(r.get("flag", "")))), None)


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_every_flag_is_in_the_reference_and_nothing_else(program: str, reference: str, clean_env) -> None:
    flags = options(PROGRAMS[program]())
    heading = f"### {program}"
    rows = table_rows(section(reference, heading))
    documented = {f for f in column(rows, "flag") if f.startswith("--")}
    missing = sorted(flags.keys() - documented)
    assert not missing, (f"{REF}, table under {heading!r}: add a row for each flag of {program} that is not "
                         f"documented: {', '.join(missing)} (see its build_parser())")
    unknown = sorted(documented - flags.keys())
    assert not unknown, (f"{REF}, table under {heading!r} documents flags that {program} does not have: "
                         f"{', '.join(unknown)}; remove or rename those rows")


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_flag_defaults_in_the_reference_match_the_code(program: str, reference: str, clean_env) -> None:
    heading = f"### {program}"
    rows = table_rows(section(reference, heading))
    wrong = []
    for action in {id(a): a for a in options(PROGRAMS[program]()).values()}.values():
        flag = action.option_strings[0]
        row = _row_of(rows, action)
        if row is None or (program, action.dest) in DYNAMIC_DEFAULTS:
            continue  # an undocumented flag is reported by the test above
        cell = row.get("default", "")
        spans, default = code_spans(cell), action.default
        if isinstance(default, bool):
            # BooleanOptionalAction: the page says "on" or "off".
            if ("on" if default else "off") not in cell.split():
                wrong.append(f"{flag}: the code's default is {'on' if default else 'off'}, the page says {cell!r}")
        elif default is None:
            if spans:
                wrong.append(f"{flag}: the code has no default, the page says {cell!r} (write 'unset' or 'required')")
        elif isinstance(default, int | float):
            if not spans or float(spans[0]) != float(default):
                wrong.append(f"{flag}: the code's default is {default:g}, the page says {cell!r} (write `{default:g}`)")
        elif not spans or spans[0] != default:
            wrong.append(f"{flag}: the code's default is {default!r}, the page says {cell!r} (write `{default}`)")
    assert not wrong, f"{REF}, table under {heading!r}, column 'default':\n  " + "\n  ".join(wrong)


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_flag_environment_variables_in_the_reference_match_the_code(program: str, reference: str,
                                                                     clean_env) -> None:
    heading = f"### {program}"
    rows = table_rows(section(reference, heading))
    documented = {(flag, env) for row in rows for flag in code_spans(row.get("flag", "")) if flag.startswith("--")
                  for env in env_names(row.get("env", ""))}
    # What the code does: set each variable it reads, or the page names, and see which default follows.
    in_code = set()
    for env in env_reads(program) | {env for _, env in documented}:
        sentinel = f"from-{env.lower()}"
        clean_env.setenv(env, sentinel)
        in_code |= {(flag, env) for flag, action in options(PROGRAMS[program]()).items() if action.default == sentinel}
        clean_env.delenv(env)
    missing = sorted(f"{flag} reads {env}" for flag, env in in_code - documented)
    assert not missing, f"{REF}, table under {heading!r}, column 'env': add\n  " + "\n  ".join(missing)
    unknown = sorted(f"{flag}: setting {env} does not change its default" for flag, env in documented - in_code)
    assert not unknown, (f"{REF}, table under {heading!r}, column 'env' names variables the code does not read:\n  "
                         + "\n  ".join(unknown))


@pytest.mark.parametrize("page", sorted(FLAG_PAGES))
def test_flag_tables_of_the_in_depth_pages_name_only_existing_flags(page: str, clean_env) -> None:
    program = FLAG_PAGES[page]
    where = f"docs/{page}"
    rows = table_rows(section((DOCS / page).read_text(), "## Flags", where))
    documented = {f for f in column(rows, "flag") if f.startswith("--")}
    unknown = sorted(documented - options(PROGRAMS[program]()).keys())
    assert not unknown, f"{where}, table under '## Flags' names flags {program} does not have: {', '.join(unknown)}"


# -- ports ----------------------------------------------------------------------------------


def test_the_ports_table_lists_the_ports_the_programs_open_by_default(reference: str) -> None:
    c, a = ControllerSettings(), AgentSettings()
    in_code = {
        (c.metrics_port, "TCP", "controller"), (observability.parse_address(c.health_address)[1], "TCP", "controller"),
        (a.metrics_port, "TCP", "agent"), (observability.parse_address(a.health_address)[1], "TCP", "agent"),
        (a.heartbeat.port, "UDP", "agent"),
    }
    heading = "## Ports"
    rows = table_rows(section(reference, heading))
    documented = {(int(r["port"]), r["protocol"], r["program"]) for r in rows}
    assert documented == in_code, (f"{REF}, table under {heading!r}: missing {sorted(in_code - documented)}; "
                                   f"not opened by default: {sorted(documented - in_code)} (leifur/model/settings.py)")


# -- metrics --------------------------------------------------------------------------------


def code_metrics() -> dict[str, tuple[str, set[str]]]:
    """Every leifur_ metric both programs register: exposed name -> (type, label names).

    Metrics register themselves in the default registry on import. The two app modules pull in
    every module either program loads, so a metric defined outside the metrics modules is found too.
    """
    for module in ("leifur.controller.metrics", "leifur.kube.metrics", "leifur.agent.metrics",
                   "leifur.controller.app", "leifur.agent.app"):
        importlib.import_module(module)
    out = {}
    for family in REGISTRY.collect():
        if not family.name.startswith("leifur_"):
            continue
        # prometheus_client strips _total from a counter's family name; users see it with _total.
        exposed = family.name + "_total" if family.type == "counter" else family.name
        # _names_to_collectors is the registry's own index (leifur.kube.metrics relies on it too).
        collector = REGISTRY._names_to_collectors[exposed]
        out[exposed] = (family.type, set(getattr(collector, "_labelnames", ())))
    return out


def test_every_metric_is_in_the_reference_with_its_type_and_labels(reference: str) -> None:
    metrics = code_metrics()
    assert len(metrics) > 20, "the registry should hold both programs' metrics; did an import fail?"
    heading = "## Metrics"
    rows = table_rows(section(reference, heading))
    by_name = {code_spans(r["metric"])[0]: r for r in rows if code_spans(r.get("metric", ""))}

    missing = sorted(metrics.keys() - by_name.keys())
    assert not missing, (f"{REF}, table under {heading!r}: add a row (metric, type, labels, from, meaning) for "
                         f"each metric that is not documented: {', '.join(missing)}")
    unknown = sorted(by_name.keys() - metrics.keys())
    assert not unknown, (f"{REF}, table under {heading!r} documents metrics that no longer exist: "
                         f"{', '.join(unknown)}; remove or rename those rows")
    wrong = []
    for name, (kind, labels) in sorted(metrics.items()):
        row = by_name[name]
        if row.get("type", "").strip() != kind:
            wrong.append(f"{name}: type is {kind}, the page says {row.get('type')!r}")
        if set(code_spans(row.get("labels", ""))) != labels:
            wrong.append(f"{name}: labels are {sorted(labels) or 'none'}, the page says {row.get('labels')!r}")
    assert not wrong, f"{REF}, table under {heading!r}:\n  " + "\n  ".join(wrong)


METRIC_NAME = r"\bleifur_[a-z0-9_]*[a-z0-9]\b"
UPGRADES = DOCS / "operations" / "upgrades.md"
# The release notes list the renames too (a copy of CHANGELOG.md, tests/docs/test_release_notes.py).
RELEASE_NOTES = DOCS / "release-notes.md"


def renamed_metrics() -> set[str]:
    """The old names in the upgrade notes' rename table (column "before"): the one place where a
    page names a metric that is gone, so that operators can fix their own dashboards and alerts."""
    rows = table_rows(section(UPGRADES.read_text(), "### Metrics renamed", "docs/operations/upgrades.md"))
    return {name for row in rows for name in re.findall(METRIC_NAME, row.get("before", ""))}


def test_no_page_names_a_metric_that_does_not_exist() -> None:
    # Prose, tables and PromQL examples on every page: a renamed metric must be renamed there too.
    metrics = code_metrics()
    exposed = set(metrics)
    for name, (kind, _) in metrics.items():
        if kind == "histogram":
            exposed |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    renamed = renamed_metrics()
    assert not renamed & exposed, f"the upgrade notes list as renamed what still exists: {renamed & exposed}"
    wrong = []
    for page in sorted(DOCS.rglob("*.md")):
        allowed = exposed | (renamed if page in (UPGRADES, RELEASE_NOTES) else set())
        for token in sorted(set(re.findall(METRIC_NAME, page.read_text()))):
            # The development tooling's package (leifur_dev, leifur_dev.stack...) shares the prefix.
            if token not in allowed and token != "leifur_dev":
                wrong.append(f"{page.relative_to(ROOT)}: {token}")
    assert not wrong, "pages name metrics that do not exist:\n  " + "\n  ".join(wrong)


# -- the site -------------------------------------------------------------------------------


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    # strict: true in mkdocs.yml turns broken links and anchors and pages missing from the nav
    # into errors; --strict says so again in case someone drops it from the file.
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"mkdocs build --strict failed:\n{res.stdout}{res.stderr}"
