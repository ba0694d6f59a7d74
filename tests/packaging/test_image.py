"""The Dockerfile, as far as it can be checked without a container engine: its shape (stages,
user, what the final stage holds), its entry point run for real, and the package installed from
constraints.txt into a clean virtual environment the way the image's build stage installs it.
(The image built and run: tests/integration/test_image_runs.py, tests/netns/test_agent_image.py.)"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

import leifur

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SCRIPTS: dict[str, str] = PYPROJECT["project"]["scripts"]
# kubectl-leifur is leifurctl under the name kubectl runs it by as a plugin: for the operator's
# machine, not a program of the image's entry point.
PROGRAMS = [name for name in SCRIPTS if not name.startswith("kubectl-")]


def usage_line(script: str) -> str:
    """How a console script's usage starts: kubectl-leifur calls itself `kubectl leifur`."""
    return "usage: " + ("kubectl " + script.removeprefix("kubectl-") if script.startswith("kubectl-") else script)


@dataclass
class Instruction:
    keyword: str
    args: str
    heredoc: str | None = None

    def flags(self) -> dict[str, str]:
        return dict(re.findall(r"--([a-z-]+)=(\S+)", self.args))

    def words(self) -> list[str]:
        """The arguments without --flags."""
        return [w for w in shlex.split(self.args, comments=False) if not w.startswith("--")]


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and heredoc bodies attached; comments dropped."""
    lines = text.splitlines()
    out: list[Instruction] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        while line.endswith("\\"):
            nxt = lines[i].strip()
            i += 1
            if not nxt.startswith("#"):
                line = line[:-1] + " " + nxt
        keyword, _, args = line.partition(" ")
        heredoc = None
        m = re.search(r"<<-?(['\"]?)(\w+)\1", args)
        if m:
            end = lines.index(m.group(2), i)
            heredoc = "\n".join(lines[i:end]) + "\n"
            i = end + 1
            args = args[:m.start()] + args[m.end():]
        out.append(Instruction(keyword.upper(), args.strip(), heredoc))
    return out


DOCKERFILE = parse_dockerfile((REPO / "Dockerfile").read_text())


def stages() -> list[list[Instruction]]:
    out: list[list[Instruction]] = []
    for ins in DOCKERFILE:
        if ins.keyword == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def test_wheels_for_an_offline_build_stay_in_the_build_stage():
    build, final = stages()[0], stages()[-1]
    copies = [ins.words() for ins in build if ins.keyword == "COPY"]
    assert ["image/wheelhouse", "/wheels"] in copies
    assert "PIP_FIND_LINKS" in {w.partition("=")[0] for ins in build if ins.keyword == "ENV"
                                for w in shlex.split(ins.args)}
    assert not any("wheel" in ins.args for ins in final)
    # The repository's wheelhouse holds no wheel: a registry build installs from the index.
    assert not list((REPO / "image" / "wheelhouse").glob("*.whl"))


def test_the_image_build_hashes_every_file_the_dockerfile_copies():
    """hack/image.sh's cache is keyed by its build context: a COPY source outside it would change
    the image without a rebuild."""
    from leifur_dev.image import CONTEXT

    for stage in stages():
        for ins in stage:
            if ins.keyword == "COPY" and "from" not in ins.flags():
                for source in ins.words()[:-1]:
                    assert source.split("/")[0] in CONTEXT, source


def args_defaults() -> dict[str, str]:
    """ARG defaults, global and per stage (names are unique in our Dockerfile)."""
    out = {}
    for ins in DOCKERFILE:
        if ins.keyword == "ARG" and "=" in ins.args:
            name, _, value = ins.args.partition("=")
            out[name] = value
    return out


def resolve(text: str) -> str:
    defaults = args_defaults()
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults.get(m.group(1) or m.group(2), m.group(0)), text)


def final_env() -> dict[str, str]:
    env = {}
    for ins in stages()[-1]:
        if ins.keyword == "ENV":
            for word in shlex.split(ins.args):
                name, _, value = word.partition("=")
                env[name] = value
    return env


def read_constraints() -> dict[str, str]:
    pins = {}
    for raw in (REPO / "constraints.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        spec = list(req.specifier)
        # Exact pins only: a range would let the image drift from what the tests ran.
        assert len(spec) == 1 and spec[0].operator == "==", f"not an exact pin: {raw}"
        name = canonicalize_name(req.name)
        assert name not in pins, f"pinned twice: {name}"
        pins[name] = spec[0].version
    return pins


# -- the Dockerfile's shape -------------------------------------------------------------------------


def test_the_image_is_built_in_stages_from_one_python_base():
    froms = [resolve(s[0].args) for s in stages()]
    assert len(froms) >= 2
    images = {f.split()[0] for f in froms}
    # One base for all stages: the virtual environment's interpreter path must exist in the final one.
    assert len(images) == 1, images
    image = images.pop()
    m = re.fullmatch(r"python:(\d+)\.(\d+)-slim(-\w+)?", image)
    assert m, f"expected a slim Python base, got {image}"
    version = f"{m.group(1)}.{m.group(2)}"
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(version)
    # constraints.txt says which interpreter its pins were frozen with; the image must run that one.
    assert f"Python {version}" in (REPO / "constraints.txt").read_text()


def test_the_final_stage_carries_the_environment_and_no_build_tools():
    build, final = stages()[0], stages()[-1]
    for ins in final:
        if ins.keyword == "RUN":
            assert not re.search(r"\b(gcc|g\+\+|cc|make|build-essential|pip|setuptools)\b", ins.args), ins
            # apt-get only to add FRR to a base without it, and its lists removed in the same layer.
            if "apt-get" in ins.args:
                assert re.search(r"if \[ ! -x /usr/lib/frr/bgpd \]", ins.args), ins
                installs = [i.strip() for i in re.findall(r"apt-get install ([^&;]+)", ins.args)]
                assert installs == ['-y --no-install-recommends $(echo "$FRR_PACKAGES" | tr , " ")'], ins
                assert "rm -rf /var/lib/apt/lists/*" in ins.args
        if ins.keyword == "COPY" and "from" in ins.flags():
            assert ins.words() == ["/opt/leifur", "/opt/leifur"], ins
    # Wheels only in the build stage: nothing compiled, so no compiler anywhere.
    installs = [ins.args for ins in build if ins.keyword == "RUN" and "--python /opt/leifur" in ins.args
                and " install " in ins.args]
    assert installs and all("--only-binary=:all:" in args for args in installs)
    # The environment has no pip of its own: nothing in it can install at run time.
    assert any("venv --without-pip /opt/leifur" in ins.args for ins in build if ins.keyword == "RUN")
    assert final_env()["PATH"].split(":")[0] == "/opt/leifur/bin"


def test_the_default_user_is_not_root():
    users = [ins.args for ins in stages()[-1] if ins.keyword == "USER"]
    assert users, "the final stage sets no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    # Numeric, so that the kubelet can check runAsNonRoot without an /etc/passwd entry.
    assert uid.isdigit() and int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)


def test_constraints_pin_every_dependency_within_what_pyproject_allows():
    pins = read_constraints()
    for dep in PYPROJECT["project"]["dependencies"]:
        req = Requirement(dep)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} does not satisfy {dep}"
    # Development and test tools never reach the image.
    dev = tomllib.loads((REPO / "dev" / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in dev:
        name = canonicalize_name(Requirement(dep).name)
        assert name == "leifur" or name not in pins, dep


def test_the_frr_packages_are_debians_and_named_once():
    """hack/image.sh's base gets the packages the Dockerfile installs into a base without them."""
    from leifur_dev.image import BASE_RECIPE

    assert args_defaults()["FRR_PACKAGES"] == "frr,frr-pythontools"
    assert "--include=python3,frr,frr-pythontools" in BASE_RECIPE


def copied_to_path() -> dict[str, str]:
    """Programs the final stage copies into /usr/local/bin: name -> the checkout's file."""
    return {Path(ins.words()[-1]).name: ins.words()[0] for ins in stages()[-1]
            if ins.keyword == "COPY" and ins.words()[-1].startswith("/usr/local/bin/")}


def test_the_manifests_start_console_scripts_the_image_puts_on_its_path():
    # BGP mode's sidecar runs the image's FRR script (image/leifur-frr), copied onto the PATH.
    programs = set(SCRIPTS) | {"leifur-frr"}
    assert copied_to_path()["leifur-frr"] == "image/leifur-frr"
    for path in ("deploy/controller/deployment.yaml", "deploy/agent/daemonset.yaml"):
        doc = yaml.safe_load((REPO / path).read_text())
        for container in doc["spec"]["template"]["spec"]["containers"]:
            command = container["command"]
            assert command[0] in SCRIPTS, f"{path}: {command[0]} is no console script"
    for patch in (REPO / "deploy" / "bgp").glob("*.yaml"):
        for doc in yaml.safe_load_all(patch.read_text()):
            spec = (((doc or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
            for container in spec.get("initContainers", []) + spec.get("containers", []):
                if "command" in container:
                    assert container["command"][0] in programs, f"{patch}: {container['command'][0]}"
    # PATH leads to the scripts (checked above): command: [leifur-agent] finds /opt/leifur/bin/leifur-agent.


# -- what runs ----------------------------------------------------------------------------------------


def entry_point_script(tmp_path: Path) -> Path:
    entrypoint = [ins for ins in stages()[-1] if ins.keyword == "ENTRYPOINT"]
    assert entrypoint, "no ENTRYPOINT"
    target = json.loads(entrypoint[-1].args)[0]
    # A file of the checkout (podman's builder here takes no heredocs).
    sources = [ins.words()[0] for ins in stages()[-1] if ins.keyword == "COPY" and ins.words()[-1] == target]
    assert sources, f"the entry point {target} is not copied in the final stage"
    return REPO / sources[-1]


def run_entry_point(script: Path, *args: str) -> subprocess.CompletedProcess:
    # The image's PATH in miniature: this environment's console scripts first, as /opt/leifur/bin is.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    return subprocess.run(["sh", str(script), *args], capture_output=True, text=True, timeout=60, env=env)


def test_the_entry_point_runs_each_program_by_name(tmp_path):
    script = entry_point_script(tmp_path)
    for name in PROGRAMS:
        res = run_entry_point(script, name, "--help")
        assert res.returncode == 0, (name, res.stderr)
        assert res.stdout.startswith(f"usage: {name}"), res.stdout[:200]


def test_the_entry_point_runs_the_frr_sidecar_by_name(tmp_path):
    script = entry_point_script(tmp_path)
    # The sidecar's own usage (no DIR): the entry point ran it rather than refusing it.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "leifur-frr").symlink_to(REPO / copied_to_path()["leifur-frr"])
    env = {**os.environ, "PATH": f"{bindir}:/usr/bin:/bin"}
    res = subprocess.run(["sh", str(script), "leifur-frr"], capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 2 and res.stderr == "usage: leifur-frr DIR\n", res.stderr
    res = subprocess.run(["sh", str(script), "leifur-frr", str(tmp_path / "absent")], capture_output=True,
                         text=True, timeout=60, env=env)
    assert res.returncode == 2 and res.stderr == "usage: leifur-frr DIR\n", res.stderr


def test_the_entry_point_refuses_what_is_not_a_program(tmp_path):
    script = entry_point_script(tmp_path)
    cmd = json.loads(next(ins.args for ins in stages()[-1] if ins.keyword == "CMD"))
    res = run_entry_point(script, *cmd)
    assert res.returncode == 0 and "leifur-agent" in res.stdout, "docker run IMAGE should print the usage"
    for args in ([], ["sh", "-c", "id"], ["leifur-agentx"]):
        res = run_entry_point(script, *args)
        assert res.returncode == 2, args
        assert "usage:" in res.stderr and not res.stdout


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_console_script_answers_help(name):
    module, _, func = SCRIPTS[name].partition(":")
    code = f"import sys; sys.argv = [{name!r}, '--help']; from {module} import {func}; sys.exit({func}())"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(usage_line(name))


def test_the_wheel_installs_from_the_constraints_into_a_clean_environment_and_holds_only_the_product(tmp_path):
    """The build stage's steps, outside a container: the same files, the same pip commands."""
    src = tmp_path / "src"
    build = stages()[0]
    # The build context as the build stage's COPY lines lay it out under /src.
    for ins in build:
        if ins.keyword != "COPY" or ins.heredoc or "from" in ins.flags():
            continue
        *sources, dest = ins.words()
        if dest == "/wheels":
            continue  # the offline build's wheels; here pip reaches the index
        assert dest.startswith("/src")
        for source in sources:
            target = tmp_path / dest.lstrip("/")
            if dest.endswith("/"):
                target = target / Path(source).name
            target.parent.mkdir(parents=True, exist_ok=True)
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                shutil.copy2(REPO / source, target)
    setuptools = args_defaults()["SETUPTOOLS_VERSION"]
    (tmp_path / "build-constraints.txt").write_text(f"setuptools=={setuptools}\n")
    venv = tmp_path / "venv"
    python = str(venv / "bin" / "python")

    def run(*cmd: str) -> str:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        return res.stdout

    pip = [sys.executable, "-m", "pip", "--python", python]
    run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    run(*pip, "install", "--only-binary=:all:", "-r", str(src / "constraints.txt"))
    run(*pip, "install", "--only-binary=:all:", "--constraint", str(src / "constraints.txt"),
        "--build-constraint", str(tmp_path / "build-constraints.txt"), str(src))
    run(*pip, "check")

    # Exactly the pins (and leifur): nothing resolved outside constraints.txt, and no stale pin
    # (a dependency dropped from pyproject.toml must leave constraints.txt and the image too).
    installed = {canonicalize_name(d["name"]): d["version"] for d in json.loads(run(*pip, "list", "--format=json"))}
    assert installed.pop("leifur") == leifur.__version__
    assert installed == read_constraints()
    # The pinned build backend built the wheel (pip applied --build-constraint).
    wheel = next((venv / "lib").glob("python3.*/site-packages/leifur-*.dist-info/WHEEL")).read_text()
    assert f"Generator: setuptools ({setuptools})" in wheel

    # The wheel holds the product and only it: every module of leifur/, agent/ as leifur/agent,
    # no dev tooling, no top-level `agent`.
    site = next((venv / "lib").glob("python3.*/site-packages"))
    record = next(site.glob("leifur-*.dist-info/RECORD")).read_text()
    shipped = {line.split(",")[0] for line in record.splitlines() if line.split(",")[0].endswith(".py")}
    assert shipped == expected_modules()
    # Every runtime module imports with the runtime dependencies alone (no scapy, no pytest...).
    modules = sorted(p.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for p in shipped)
    code = ("import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\n"
            "print('imported', len(sys.argv) - 1)")
    assert run(python, "-I", "-c", code, *modules).strip() == f"imported {len(modules)}"
    for name in SCRIPTS:
        res = subprocess.run([str(venv / "bin" / name), "--help"], capture_output=True, text=True, timeout=60,
                             cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith(usage_line(name))


def expected_modules() -> set[str]:
    """The .py files the wheel must hold, derived from the source tree and the package mapping."""
    tool = PYPROJECT["tool"]["setuptools"]
    out = set()
    for package in tool["packages"]:
        folder = REPO / tool.get("package-dir", {}).get(package, package.replace(".", "/"))
        out |= {f"{package.replace('.', '/')}/{f.name}" for f in folder.glob("*.py")}
    assert not any(p.startswith(("agent/", "leifur/dev/", "leifur_dev/")) for p in out)
    # Every package folder of the product is listed, so nothing is left out of the wheel by accident.
    folders = {p.parent for p in (REPO / "leifur").rglob("__init__.py")} | {REPO / "agent"}
    mapped = {REPO / tool.get("package-dir", {}).get(p, p.replace(".", "/")) for p in tool["packages"]}
    assert folders == mapped, folders ^ mapped
    return out
