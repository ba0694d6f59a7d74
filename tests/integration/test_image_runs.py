"""The image as hack/image.sh builds it, run with podman: each program's --help and --version, the
one version on its labels, a non-root default user, a read-only root filesystem, the runtime and
nothing else inside (but FRR for BGP mode's sidecar), and the controller from the image doing its
job against the real API server. (The agent and its FRR sidecar from the image in node
namespaces: tests/netns/test_agent_image.py.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
import uuid
from pathlib import Path

import pytest
import yaml
from packaging.utils import canonicalize_name

import leifur
from leifur_dev import image as images
from leifur_dev import runtime

REPO = Path(__file__).resolve().parents[2]
# The programs the image's entry point runs: kubectl-leifur, leifurctl as a kubectl plugin, is for
# the operator's machine.
PROGRAMS = sorted(name for name in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
                  if not name.startswith("kubectl-"))


def run(image: images.Image, *args: str, entrypoint: str | None = None) -> subprocess.CompletedProcess:
    """The image run as deploy/ runs it: default user, read-only root filesystem (no tmpfs on /tmp
    either), no network."""
    flags = ["--entrypoint", entrypoint] if entrypoint else []
    return subprocess.run([*images.run_args(), "--rm", "--read-only", "--read-only-tmpfs=false", "--network", "none",
                           *flags, image.ref, *args],
                          capture_output=True, text=True, timeout=120)


def pins() -> dict[str, str]:
    out = {}
    for raw in (REPO / "constraints.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[canonicalize_name(name)] = version
    return out


@pytest.mark.parametrize("program", PROGRAMS)
def test_each_program_answers_help_and_version(image, program):
    res = run(image, program, "--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"usage: {program}")
    res = run(image, program, "--version")
    assert res.returncode == 0, res.stderr
    revision = images.revision_label(image.ref)
    # argparse wraps --version to the terminal's width: compared word by word.
    assert res.stdout.split() == f"{program} {leifur.__version__} (revision {revision})".split()


def test_the_image_carries_the_one_version_and_runs_as_non_root(image):
    config = images.inspect(image.ref)["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == leifur.__version__
    revision = labels["org.opencontainers.image.revision"]
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", revision), revision
    assert labels["org.opencontainers.image.source"]
    # What --version, the first log line and leifur_build_info read.
    assert f"LEIFUR_REVISION={revision}" in config["Env"]
    res = run(image, "-u", entrypoint="id")
    assert res.returncode == 0 and int(res.stdout) != 0
    # The entry point refuses what is not a program.
    res = run(image, "sh", "-c", "id")
    assert res.returncode == 2 and "unknown program: sh" in res.stderr


def test_the_image_holds_the_runtime_and_nothing_else(image):
    code = ("import importlib.metadata as m, json\n"
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))")
    res = run(image, "-c", code, entrypoint="/opt/leifur/bin/python")
    assert res.returncode == 0, res.stderr
    installed = {canonicalize_name(k): v for k, v in json.loads(res.stdout).items()}
    # The pins and leifur: no installer, no build backend, no test tools.
    assert installed.pop("leifur") == leifur.__version__
    assert installed == pins()
    # Nor in the system's Python: the final stage is the bare base, and it has no compiler.
    res = run(image, "-c", "import sys, shutil; import pip", entrypoint="python3")
    assert res.returncode != 0 and "No module named 'pip'" in res.stderr
    res = run(image, "-c", "command -v cc gcc apt-get dpkg-deb >/dev/null && echo found || echo none",
              entrypoint="sh")
    assert res.stdout.strip() == "none"
    print(f"\nimage {image.ref}: {images.size_mib(image.ref):.0f} MiB")


def test_the_image_holds_frr_for_bgp_modes_sidecar(image):
    """What the sidecar runs and the agent drives: Debian's FRR 8.4 (the daemons, vtysh,
    frr-reload.py on the system's Python), and the accounts with the ids deploy/bgp names."""
    script = ("for d in zebra bgpd bfdd; do test -x /usr/lib/frr/$d || echo missing $d; done; "
              "/usr/lib/frr/bgpd --version | head -n 1; vtysh -h | head -n 1; "
              "/usr/lib/frr/frr-reload.py --help | head -n 1; id frr")
    res = run(image, "-c", script, entrypoint="sh")
    assert res.returncode == 0, res.stderr
    bgpd, vtysh, reload, frr = res.stdout.splitlines()
    assert bgpd.startswith("bgpd version 8.4.") and vtysh.startswith("Usage : vtysh"), res.stdout
    assert reload.startswith("usage: frr-reload.py"), res.stdout
    # The vty group's id is the one the Pod's supplementalGroups name: the agent reaches the
    # daemons' sockets (mode 0770, group frrvty) through it.
    (gid,) = images.bgp_pod().groups
    assert frr == f"uid=100(frr) gid=101(frr) groups=101(frr),{gid}(frrvty)"
    # The sidecar's program, through the entry point: its usage without a directory.
    res = run(image, "leifur-frr")
    assert res.returncode == 2 and res.stderr == "usage: leifur-frr DIR\n"


@pytest.fixture
def container():
    """A name for a container of the test's; removed after the test's other fixtures are torn down."""
    name = f"{images.CONTAINER_PREFIX}-{uuid.uuid4().hex[:8]}"
    yield name
    images.remove_container(name)


@pytest.mark.controlplane
def test_the_controller_from_the_image_gives_a_service_an_ip(image, container, env, control_plane):
    # A kubeconfig naming its certificate files, as in-cluster credentials are files: embedded data
    # would make the client write them to /tmp, which is read-only too. The image's user (not
    # root) reads them, mounted at their own paths.
    creds = env.tmp / "creds"
    creds.mkdir()
    for name in ("ca.crt", "admin.crt", "admin.key"):
        (creds / name).write_bytes((control_plane.directory / "pki" / name).read_bytes())
        (creds / name).chmod(0o644)
    kubeconfig = creds / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": control_plane.server,
                                               "certificate-authority": str(creds / "ca.crt")}}],
        "users": [{"name": "u", "user": {"client-certificate": str(creds / "admin.crt"),
                                         "client-key": str(creds / "admin.key")}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    kubeconfig.chmod(0o644)
    command = images.container_command(image.ref, container, "leifur-controller", network="host", volumes=(creds,))
    controller = env.controller(kubeconfig=kubeconfig, command=command)
    env.pool("a", ["203.0.113.200/30"])
    env.svc("web")
    [ip] = env.wait_ips("web")
    assert ip.startswith("203.0.113.20")
    env.wait_condition("web", "True", "Allocated")
    # The program in the container is the image's, and says which build it is first.
    first = controller.log_path.read_text().splitlines()[0]
    assert f"leifur-controller {leifur.__version__} (revision {images.revision_label(image.ref)})" in first, first


def test_a_container_left_by_a_dead_test_run_is_removed_and_a_live_ones_is_not(image, container):
    dead = f"{container}-dead"
    # The same pid with another start time: a process that is gone and whose pid was reused.
    records = {dead: {"owner_pid": os.getpid(), "owner_start": -1}, container: runtime.owner_record()}
    try:
        for name, record in records.items():
            res = subprocess.run(images.podman("create", "--name", name, "--label",
                                               f"{images.OWNER_LABEL}={json.dumps(record)}", image.ref),
                                 capture_output=True, text=True, timeout=60)
            assert res.returncode == 0, res.stderr
        reaped = images.reap_orphan_containers()
        assert dead in reaped and container not in reaped
        assert container in images.our_containers() and dead not in images.our_containers()
    finally:
        images.remove_container(dead)
