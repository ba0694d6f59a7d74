"""The container image, built from the repository's Dockerfile with podman: no daemon, no registry.

The base is Debian bookworm made by mmdebstrap from Debian packages (its python3 is the 3.11
constraints.txt was frozen with) and `podman import`ed; the wheels are downloaded on the host,
where the package index is reachable, and installed offline in the build. Base, wheels and image
are cached outside the checkout (gobuild.cache_root()), keyed by their inputs, so a second run
with the same Dockerfile, constraints, sources and base recipe builds nothing.

podman runs as root with runc (crun refuses this machine's hybrid cgroups) and explicit ulimits
(without CAP_SYS_RESOURCE, podman's defaults cannot be set).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import leifur
from leifur_dev import netlab, runtime
from leifur_dev.gobuild import cache_root

REPO = Path(__file__).resolve().parents[2]
NAME = "localhost/leifur"
BASE_NAME = "localhost/leifur-base"
# What the Dockerfile's build copies from the checkout (its COPY sources): the build context.
CONTEXT = ("Dockerfile", ".dockerignore", "constraints.txt", "pyproject.toml", "README.md", "leifur", "agent",
           "image")


def dockerfile_arg(name: str) -> str:
    """An ARG's default in the Dockerfile: the pins of pip and setuptools and the FRR packages
    are written there once."""
    m = re.search(rf"^ARG {name}=(\S+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    if not m:
        raise ValueError(f"the Dockerfile has no ARG {name}=...")
    return m.group(1)


# The base: Debian's python3, FRR for BGP mode's sidecar (the packages the Dockerfile's
# FRR_PACKAGES names, which a base without them installs there) and the essential packages (a
# shell for the entry point and the build's RUN lines), no apt, no documentation but the
# copyright files.
BASE_SUITE = "bookworm"
BASE_RECIPE = (
    "--variant=essential", f"--include=python3,{dockerfile_arg('FRR_PACKAGES')}",
    # merged /usr by a hook rather than the usrmerge package, which would bring perl.
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-include=/usr/share/doc/*/copyright",
)
# FRR's accounts with the ids the manifests name, made before the frr package is installed.
ACCOUNTS = REPO / "image" / "frr-accounts"
# The machine's Debian mirror, as apt on the host uses it; without this file, mmdebstrap's default
# (deb.debian.org).
APT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")


def apt_sources() -> str:
    return APT_SOURCES.read_text() if APT_SOURCES.exists() else ""


# Enough for the programs; podman's default (the hard limit) is refused without CAP_SYS_RESOURCE.
NPROC = 4096

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def podman(*args: str) -> list[str]:
    """The podman command line, with the runtime this machine needs."""
    return ["podman", "--runtime", "runc", *args]


def ulimits() -> list[str]:
    """--ulimit flags a container may have here: no more than this process has."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={NPROC}:{NPROC}"]


def run_args() -> list[str]:
    """`podman run` and the flags every container of ours gets."""
    return [*podman("run"), *ulimits()]


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big") + part)
    return h.hexdigest()[:16]


def _files(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for path in sorted(root.rglob("*")):
        if path.is_file() and not any(p == "__pycache__" or p.endswith(".egg-info") for p in path.parts) \
                and path.suffix not in (".pyc", ".whl"):
            yield path


def base_key() -> str:
    return _digest(BASE_SUITE.encode(), json.dumps(BASE_RECIPE).encode(), ACCOUNTS.read_bytes(),
                   apt_sources().encode())


def wheels_key() -> str:
    return _digest((REPO / "constraints.txt").read_bytes(), dockerfile_arg("PIP_VERSION").encode(),
                   dockerfile_arg("SETUPTOOLS_VERSION").encode())


def image_key() -> str:
    """Everything the image is made from: the base, the wheels, every file of the build context."""
    parts = [base_key().encode(), wheels_key().encode()]
    for top in CONTEXT:
        for path in _files(REPO / top):
            mode = oct(path.stat().st_mode & 0o111)
            parts += [str(path.relative_to(REPO)).encode(), path.read_bytes(), mode.encode()]
    return _digest(*parts)


def image_exists(ref: str) -> bool:
    return subprocess.run(podman("image", "exists", ref), capture_output=True).returncode == 0


def _run(cmd: list[str], log: Log, what: str, **kw) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if res.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {res.returncode}): {' '.join(cmd)}\n"
                           f"{res.stdout[-4000:]}\n{res.stderr[-4000:]}")


class _Locked:
    """An exclusive lock on a file in the cache: another process may be building the same thing."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "w")  # noqa: SIM115 - closed in __exit__

    def __enter__(self) -> None:
        fcntl.flock(self.file, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def ensure_base(log: Log = _stderr) -> str:
    """The base image's reference, made (mmdebstrap, podman import) if it is not there yet."""
    key = base_key()
    ref = f"{BASE_NAME}:{key}"
    if image_exists(ref):
        return ref
    cache = cache_root() / "image"
    tarball = cache / f"base-{BASE_SUITE}-{key}.tar"
    with _Locked(cache / ".base.lock"):
        if not tarball.exists():
            log(f"[image] base: mmdebstrap {BASE_SUITE} (python3, FRR, essential packages)")
            started = time.monotonic()
            tmp = tarball.with_suffix(".tmp.tar")
            sources = apt_sources()
            _run(["mmdebstrap", *BASE_RECIPE, f'--essential-hook=sh {ACCOUNTS} "$1"', BASE_SUITE, str(tmp),
                  *(["-"] if sources else [])], log, "mmdebstrap",
                 input=sources, timeout=1200)
            tmp.rename(tarball)
            log(f"[image] base made in {time.monotonic() - started:.0f}s ({tarball.stat().st_size / 2**20:.0f} MiB)")
        if not image_exists(ref):
            _run(podman("import", "--change", 'CMD ["/bin/sh"]', str(tarball), ref), log, "podman import",
                 timeout=300)
    return ref


def ensure_wheels(log: Log = _stderr) -> Path:
    """A directory of every wheel the build installs: the pins, pip and setuptools."""
    out = cache_root() / "wheels" / wheels_key()
    if (out / ".complete").exists():
        return out
    with _Locked(out.parent / ".lock"):
        if (out / ".complete").exists():
            return out
        log("[image] wheels: pip download (constraints.txt, pip, setuptools)")
        # The host runs the base's Python (3.11) on the same Debian release, so the wheels pip
        # picks for it here are the ones the build would pick.
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(out),
              "-r", str(REPO / "constraints.txt"), f"pip=={dockerfile_arg('PIP_VERSION')}",
              f"setuptools=={dockerfile_arg('SETUPTOOLS_VERSION')}"], log, "pip download", timeout=600)
        (out / ".complete").touch()
    return out


# Where the build context holds the wheels (empty in the repository: the Dockerfile says why).
WHEELHOUSE = Path("image") / "wheelhouse"


def stage_context(dest: Path, wheels: Path) -> None:
    """The build context: the checkout's files the Dockerfile copies, the wheels in WHEELHOUSE."""
    for top in CONTEXT:
        src = REPO / top
        if src.is_dir():
            shutil.copytree(src, dest / top, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc",
                                                                           "*.whl"))
        else:
            shutil.copy2(src, dest / top)
    shutil.copytree(wheels, dest / WHEELHOUSE, ignore=shutil.ignore_patterns(".complete"), dirs_exist_ok=True)


def git_revision() -> str:
    """The commit the checkout is at, with -dirty if its files differ from it."""
    def git(*args: str) -> str:
        res = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return res.stdout.strip() if res.returncode == 0 else ""
    head = git("rev-parse", "HEAD")
    if not head:
        return "unknown"
    return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def git_source() -> str:
    res = subprocess.run(["git", "remote", "get-url", "origin"], cwd=REPO, capture_output=True, text=True)
    return res.stdout.strip() or "unknown"


@dataclass(frozen=True)
class Image:
    ref: str
    key: str
    archive: Path


def reference(key: str) -> str:
    return f"{NAME}:{leifur.__version__}-{key}"


def ensure_image(log: Log = _stderr, revision: str | None = None) -> Image:
    """The image of this checkout: from podman's storage, else loaded from the cache, else built.
    The revision is not part of the key (a new commit with the same sources builds nothing): a
    cached image says which commit it was built from; `revision` forces a build that says this one."""
    key = image_key() if revision is None else f"{image_key()}-{_digest(revision.encode())[:8]}"
    ref = reference(key)
    cache = cache_root() / "image"
    archive = cache / f"leifur-{leifur.__version__}-{key}.oci.tar"
    with _Locked(cache / ".image.lock"):
        if not image_exists(ref) and archive.exists():
            # Saved with its name: this machine's podman storage was emptied, the cache was not.
            _run(podman("load", "--input", str(archive)), log, "podman load", timeout=300)
        if not image_exists(ref):
            build(ref, revision or git_revision(), log)
            if revision is None:  # a release's image goes into its release, not the cache
                tmp = archive.with_suffix(".tmp")
                _run(podman("save", "--format", "oci-archive", "--output", str(tmp), ref), log, "podman save",
                     timeout=300)
                tmp.rename(archive)
            prune(cache, keep=ref)
    return Image(ref, key, archive)


# How many images of older inputs are kept (archives in the cache, tags in podman's storage), so
# that switching between a few checkouts or branches builds nothing.
KEEP = 3


def prune(cache: Path, keep: str) -> None:
    """Drop all but the KEEP newest images of ours; `keep` is never dropped."""
    archives = sorted(cache.glob(f"leifur-{leifur.__version__}-*.oci.tar"), key=lambda p: p.stat().st_mtime)
    for old in archives[:-KEEP]:
        old.unlink(missing_ok=True)
    res = subprocess.run(podman("images", "--format", "{{.Repository}}:{{.Tag}} {{.CreatedAt}}", NAME),
                         capture_output=True, text=True)
    lines = sorted(res.stdout.splitlines(), key=lambda line: line.split(" ", 1)[1])
    # Only what ensure_image names (NAME:VERSION-KEY): a release's own tag stays.
    ours = re.compile(rf"{re.escape(NAME)}:[^:]+-[0-9a-f]{{16}}(-[0-9a-f]{{8}})?")
    refs = [ref for line in lines if ours.fullmatch(ref := line.split(" ", 1)[0]) and ref != keep]
    for old in refs[:-KEEP]:
        # An image a container still runs stays (podman refuses).
        subprocess.run(podman("rmi", old), capture_output=True)


def stamp(revision: str) -> list[str]:
    """The build's version, revision and source: as the Dockerfile's ARGs, and again as --label and
    --env, because buildah 1.28 keys its layer cache on the text of ENV and LABEL, not on the ARG
    values in them: a build differing only in these would reuse layers holding the old values.
    On the command line they are set on the image committed, whatever the cache gave."""
    values = {"VERSION": leifur.__version__, "REVISION": revision, "SOURCE": git_source()}
    out = [arg for name, value in values.items() for arg in ("--build-arg", f"{name}={value}")]
    for name in ("version", "revision", "source"):
        out += ["--label", f"org.opencontainers.image.{name}={values[name.upper()]}"]
    return [*out, "--env", f"LEIFUR_REVISION={revision}"]


def build(ref: str, revision: str, log: Log) -> None:
    base = ensure_base(log)
    wheels = ensure_wheels(log)
    context = cache_root() / "image" / f"context-{os.getpid()}"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    try:
        stage_context(context, wheels)
        log(f"[image] podman build {ref}")
        started = time.monotonic()
        _run(podman("build", *ulimits(), "--layers", "--tag", ref,
                    "--build-arg", f"PYTHON_IMAGE={base}", "--build-arg", "PIP_NO_INDEX=1",
                    *stamp(revision), str(context)), log, "podman build", timeout=1800)
        log(f"[image] built {ref} in {time.monotonic() - started:.0f}s ({size_mib(ref):.0f} MiB)")
    finally:
        shutil.rmtree(context, ignore_errors=True)


# Containers the tests start are named so, so that a leftover can be found (tests/after_suite),
# and labelled with the process that started them, so that the next run removes them if it died.
CONTAINER_PREFIX = "leifur-test"
OWNER_LABEL = "io.leifur.test-owner"


def container_command(ref: str, name: str, program: str, *, network: str, user: str | None = None,
                      caps: tuple[str, ...] = (), volumes: tuple[Path, ...] = (), groups: tuple[int, ...] = (),
                      writable: Mapping[str, Path] | None = None) -> list[str]:
    """`podman run` of one program of the image, confined as deploy/ runs it: read-only root
    filesystem (and, as in Kubernetes, no tmpfs on /tmp either), every capability dropped but
    `caps`, no privilege escalation; each of `volumes` read-only at its own path (so that paths in
    the program's arguments hold); `groups` supplementary; `writable`: a path in the container ->
    the host directory mounted there read-write (as an emptyDir). The program's arguments follow."""
    argv = [*run_args(), "--rm", "--name", name, "--label", f"{OWNER_LABEL}={json.dumps(runtime.owner_record())}",
            "--network", network, "--read-only", "--read-only-tmpfs=false", "--cap-drop", "all",
            "--security-opt", "no-new-privileges"]
    for cap in caps:
        argv += ["--cap-add", cap]
    if user is not None:
        argv += ["--user", user]
    for gid in groups:
        argv += ["--group-add", str(gid)]
    for volume in volumes:
        argv += ["--volume", f"{volume}:{volume}:ro"]
    for inside, directory in (writable or {}).items():
        argv += ["--volume", f"{directory}:{inside}"]
    return [*argv, ref, program]


@dataclass(frozen=True)
class BGPPod:
    """What deploy/bgp (the component that adds BGP mode) gives the agent's Pod, read from its files
    so that the lab runs the containers as the manifests do."""

    sidecar: dict  # the frr init container (native sidecar)
    agent_args: tuple[str, ...]  # what the component appends to the agent's args
    groups: tuple[int, ...]  # the Pod's supplementalGroups
    volume_path: str  # where both containers mount the shared directory


def bgp_pod() -> BGPPod:
    import yaml

    component = REPO / "deploy" / "bgp"
    patch = yaml.safe_load((component / "frr-sidecar.yaml").read_text())["spec"]["template"]["spec"]
    (sidecar,) = patch["initContainers"]
    (mount,) = sidecar["volumeMounts"]
    ops = [op for entry in yaml.safe_load((component / "kustomization.yaml").read_text())["patches"]
           if "patch" in entry for op in yaml.safe_load(entry["patch"])]
    args = tuple(op["value"] for op in ops if op["path"] == "/spec/template/spec/containers/0/args/-")
    return BGPPod(sidecar, args, tuple(patch["securityContext"]["supplementalGroups"]), mount["mountPath"])


def frr_command(ref: str, lab: netlab.Lab, host: netlab.Host, directory: Path) -> list[str]:
    """BGP mode's FRR sidecar from the image in `host`'s namespace, as deploy/bgp runs it (the
    user, capabilities, groups and command of its container); `directory` is the shared volume."""
    pod = bgp_pod()
    security = pod.sidecar["securityContext"]
    return [*container_command(ref, frr_container(lab, host), pod.sidecar["command"][0],
                               network=f"ns:/run/netns/{host.netns}", user=str(security["runAsUser"]),
                               caps=tuple(security["capabilities"]["add"]), groups=pod.groups,
                               writable={pod.volume_path: directory}), *pod.sidecar["args"]]


def agent_command(ref: str, lab: netlab.Lab, volumes: tuple[Path, ...],
                  frr_dirs: Mapping[str, Path] | None = None) -> Callable[[netlab.Host], list[str]]:
    """For Stack.agent_command: the agent from the image in its node's namespace, as the DaemonSet
    runs it (uid 0 with NET_RAW and NET_ADMIN only); `volumes` hold what its arguments name. With
    `frr_dirs` (node name -> the directory its FRR sidecar was given), in BGP mode as deploy/bgp
    runs it: the shared directory, the vty group and the component's arguments."""
    def command(host: netlab.Host) -> list[str]:
        bgp = {}
        if frr_dirs is not None:
            pod = bgp_pod()
            bgp = {"groups": pod.groups, "writable": {pod.volume_path: frr_dirs[host.name]}}
        argv = container_command(ref, agent_container(lab, host), "leifur-agent",
                                 network=f"ns:/run/netns/{host.netns}", user="0", caps=("NET_RAW", "NET_ADMIN"),
                                 volumes=volumes, **bgp)
        return [*argv, *(bgp_pod().agent_args if frr_dirs is not None else ())]
    return command


def agent_container(lab: netlab.Lab, host: netlab.Host) -> str:
    return f"{CONTAINER_PREFIX}-{lab.id}-{host.name}"


def frr_container(lab: netlab.Lab, host: netlab.Host) -> str:
    return f"{CONTAINER_PREFIX}-{lab.id}-{host.name}-frr"


def remove_container(name: str) -> None:
    """Remove a container of ours whatever its state (its podman run may have been killed)."""
    subprocess.run(podman("rm", "--force", "--ignore", "--time", "5", name), capture_output=True, timeout=60)


def reap_orphan_containers() -> list[str]:
    """Remove the containers whose test run is gone (SIGKILLed: podman run died, the container did
    not); another run's live containers stay. Their names."""
    res = subprocess.run(podman("ps", "--all", "--filter", f"label={OWNER_LABEL}", "--format",
                                f'{{{{.Names}}}} {{{{index .Labels "{OWNER_LABEL}"}}}}'),
                         capture_output=True, text=True, timeout=60)
    reaped = []
    for line in res.stdout.splitlines():
        name, _, owner = line.partition(" ")
        try:
            alive = runtime.owner_alive(json.loads(owner))
        except ValueError:
            alive = False
        if not alive:
            remove_container(name)
            reaped.append(name)
    return reaped


def our_containers() -> list[str]:
    """The containers the tests started that still exist."""
    res = subprocess.run(podman("ps", "--all", "--format", "{{.Names}}", "--filter", f"name=^{CONTAINER_PREFIX}"),
                         capture_output=True, text=True, timeout=60)
    return res.stdout.split()


def missing() -> str:
    """What this machine lacks to build and run the image ('' if nothing)."""
    if os.geteuid() != 0:
        return "the image is built and run with podman as root (runs in CI as root)"
    absent = [tool for tool in ("podman", "runc", "mmdebstrap") if shutil.which(tool) is None]
    if absent:
        return f"{', '.join(absent)} missing: hack/bootstrap.sh installs them (apt-get install podman runc mmdebstrap)"
    return ""


def inspect(ref: str) -> dict:
    res = subprocess.run(podman("image", "inspect", ref), capture_output=True, text=True, check=True)
    return json.loads(res.stdout)[0]


def revision_label(ref: str) -> str:
    """The commit an image says it was built from."""
    return inspect(ref)["Config"]["Labels"]["org.opencontainers.image.revision"]


def size_mib(ref: str) -> float:
    return inspect(ref)["Size"] / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/image.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--revision", help="build anew, stamped with this revision (default: a cached image "
                                           "of the same sources, or the checkout's commit)")
    parser.add_argument("--save", metavar="PATH", help="also write the image there as an OCI archive")
    parser.add_argument("--tag", help="also tag the image so (e.g. registry.example.com/leifur:0.1.0)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    image = ensure_image(revision=args.revision)
    ref = image.ref
    if args.tag:
        subprocess.run(podman("tag", ref, args.tag), check=True)
        ref = args.tag
    if args.save:
        _run(podman("save", "--format", "oci-archive", "--output", args.save, ref), _stderr, "podman save")
    print(f"{image.ref}  {size_mib(image.ref):.0f} MiB  ({time.monotonic() - started:.1f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
