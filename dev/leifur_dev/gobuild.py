"""Build kube-apiserver, kubectl, etcd, helm, MetalLB and krew's manifest validator from the wrapper
Go modules under tests/controlplane/.

Binaries go into a cache outside the checkout, keyed by component version and a hash of
the wrapper module, so a second run (or a second checkout) reuses them.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SOURCE_ENV = "LEIFUR_CONTROLPLANE_SRC"
CACHE_ENV = "LEIFUR_CACHE_DIR"


@dataclass(frozen=True)
class Component:
    name: str
    source: str  # the wrapper module's directory under source_root()
    module: str  # the required module whose version names the build
    package: str  # the main package to build


def _kube_ldflags(version: str) -> tuple[str, ...]:
    major, minor = version.lstrip("v").split(".")[:2]
    pkg = "k8s.io/component-base/version"
    return (
        f"-X {pkg}.gitVersion={version}",
        f"-X {pkg}.gitMajor={major}",
        f"-X {pkg}.gitMinor={minor}",
        f"-X {pkg}.gitTreeState=clean",
    )


COMPONENTS = {
    c.name: c
    for c in (
        Component("kube-apiserver", "kubernetes", "k8s.io/kubernetes", "k8s.io/kubernetes/cmd/kube-apiserver"),
        Component("kubectl", "kubernetes", "k8s.io/kubernetes", "k8s.io/kubernetes/cmd/kubectl"),
        Component("etcd", "etcd", "go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/server/v3"),
        Component("metallb-controller", "metallb", "go.universe.tf/metallb", "go.universe.tf/metallb/controller"),
        # MetalLB's layer 2 announcer, for the netns lab (tests/netns/test_metallb_speaker.py).
        Component("metallb-speaker", "metallb", "go.universe.tf/metallb", "go.universe.tf/metallb/speaker"),
        # The chart's tests (tests/integration/test_helm_*.py): helm lint, template, install, uninstall.
        Component("helm", "helm", "helm.sh/helm/v4", "helm.sh/helm/v4/cmd/helm"),
        # The kubectl plugin's krew manifest (tests/packaging/test_krew_manifest.py), checked as krew-index does.
        Component("validate-krew-manifest", "krew", "sigs.k8s.io/krew", "sigs.k8s.io/krew/cmd/validate-krew-manifest"),
    )
}


def source_root() -> Path:
    """Where the wrapper modules live: $LEIFUR_CONTROLPLANE_SRC or the checkout's tests/controlplane."""
    env = os.environ.get(SOURCE_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "tests" / "controlplane"


def cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "leifur"


def module_version(gomod: str, module: str) -> str:
    """The version a go.mod requires of a module."""
    m = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", gomod, re.MULTILINE)
    if not m:
        raise ValueError(f"go.mod does not require {module}")
    return m.group(1)


def component_version(name: str) -> str:
    """The upstream version the wrapper module pins, e.g. v1.34.4."""
    comp = COMPONENTS[name]
    return module_version((source_root() / comp.source / "go.mod").read_text(), comp.module)


def binary_path(name: str) -> Path:
    """Where the binary for this component and wrapper module lives (built or not)."""
    src = source_root() / COMPONENTS[name].source
    gomod = (src / "go.mod").read_text()
    version = component_version(name)
    digest = hashlib.sha256(gomod.encode() + (src / "go.sum").read_bytes()).hexdigest()[:12]
    return cache_root() / "bin" / f"{name}-{version}-{digest}" / name


def ensure_built(name: str, log=None) -> Path:
    """Return the cached binary, building it first if it is not there yet."""
    out = binary_path(name)
    if out.exists():
        return out
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.parent / ".lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same binary
        if out.exists():
            return out
        _build(COMPONENTS[name], out, log)
    return out


def _go() -> str:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if not go:
        raise RuntimeError("the Go toolchain is needed to build the control plane: install Go (>= 1.24)")
    return go


def _build(comp: Component, out: Path, log) -> None:
    src = source_root() / comp.source
    version = component_version(comp.name)
    ldflags = ["-s", "-w"]
    if comp.module == "k8s.io/kubernetes":
        ldflags += list(_kube_ldflags(version))
    if comp.module == "helm.sh/helm/v4":
        # What helm's own Makefile stamps for a release (`helm version` says v4.x.y, not "v4.3").
        ldflags += [f"-X helm.sh/helm/v4/internal/version.version={version}"]
    env = dict(os.environ, CGO_ENABLED="0")
    go = _go()
    log(f"[build] {comp.name} {version}: resolving packages (first build takes several minutes)")
    listed = subprocess.run(
        [go, "list", "-deps", comp.package], cwd=src, env=env, capture_output=True, text=True
    )
    if listed.returncode != 0:
        raise RuntimeError(f"go list failed for {comp.name}:\n{listed.stderr}")
    total = len(listed.stdout.split())
    tmp = out.with_name(out.name + ".tmp")
    cmd = [go, "build", "-v", "-trimpath", "-ldflags", " ".join(ldflags), "-o", str(tmp), comp.package]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=src, env=env, stderr=subprocess.PIPE, text=True)
    done = 0
    errors: list[str] = []
    last = 0.0
    stop = threading.Event()

    def ticker() -> None:
        # `go build -v` prints nothing while linking; keep the user informed.
        while not stop.wait(15):
            log(f"[build] {comp.name}: {done}/{total} packages, {time.monotonic() - started:.0f}s")

    t = threading.Thread(target=ticker, daemon=True)
    t.start()
    assert proc.stderr is not None
    for line in proc.stderr:
        line = line.rstrip()
        if re.fullmatch(r"[\w./~+-]+", line):
            done += 1
        else:
            errors.append(line)
        now = time.monotonic()
        if now - last > 5:
            last = now
            log(f"[build] {comp.name}: {done}/{total} packages, {now - started:.0f}s")
    rc = proc.wait()
    stop.set()
    if rc != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"go build failed for {comp.name} (exit {rc}):\n" + "\n".join(errors[-40:]))
    tmp.rename(out)
    size = out.stat().st_size / 2**20
    log(f"[build] {comp.name} {version} built in {time.monotonic() - started:.0f}s ({size:.0f} MiB): {out}")


def main(argv: list[str] | None = None) -> int:
    for name in argv or list(COMPONENTS):
        cached = binary_path(name).exists()
        print(f"{'cached' if cached else 'built '}  {ensure_built(name)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
