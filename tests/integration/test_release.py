"""hack/release.sh into a temporary directory: each artifact checked as a user would take it, the
all-in-one manifest applied server-side to a real API server, and a version that is not the
package's refused before anything is made."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import leifur
from leifur_dev import controlplane, gobuild, release
from leifur_dev import image as images
from leifur_dev.chart import helm

pytestmark = pytest.mark.controlplane

REPO = Path(__file__).resolve().parents[2]
VERSION = leifur.__version__


@pytest.fixture(scope="module")
def released(image, tmp_path_factory) -> Path:  # the image fixture: needs podman (fails in CI without)
    out = tmp_path_factory.mktemp("release")
    res = subprocess.run([str(REPO / "hack" / "release.sh"), VERSION, str(out)], capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_the_release_holds_each_artifact_and_their_checksums(released):
    names = {f"leifur-{VERSION}.oci.tar", f"leifur-{VERSION}.tgz", "leifur.yaml", "CHANGELOG.md"}
    assert {p.name for p in released.iterdir()} == names | {"SHA256SUMS"}
    sums = dict(reversed(line.split("  ")) for line in (released / "SHA256SUMS").read_text().splitlines())
    assert sums.keys() == names
    for name, digest in sums.items():
        assert hashlib.sha256((released / name).read_bytes()).hexdigest() == digest, name


def _blob(tar: tarfile.TarFile, digest: str) -> dict:
    algorithm, _, hexdigest = digest.partition(":")
    member = tar.extractfile(f"blobs/{algorithm}/{hexdigest}")
    assert member is not None
    return json.loads(member.read())


def test_the_image_archive_is_this_version_and_commit(released):
    with tarfile.open(released / f"leifur-{VERSION}.oci.tar") as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        [entry] = index["manifests"]
        assert entry["annotations"]["org.opencontainers.image.ref.name"].endswith(VERSION)
        config = _blob(tar, _blob(tar, entry["digest"])["config"]["digest"])["config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.revision"] == images.git_revision()
    assert f"LEIFUR_REVISION={images.git_revision()}" in config["Env"]
    assert config["User"] == "65532:65532"


def test_the_chart_archive_is_this_version_and_renders(released):
    packaged = released / f"leifur-{VERSION}.tgz"
    with tarfile.open(packaged) as tar:
        meta = yaml.safe_load(tar.extractfile("leifur/Chart.yaml").read())  # type: ignore[union-attr]
    assert (meta["version"], meta["appVersion"]) == (VERSION, VERSION)
    assert "kind: DaemonSet" in helm("template", "leifur", str(packaged), "--namespace", "leifur-system")


def test_the_release_notes_are_the_changelog_entry(released):
    notes = (released / "CHANGELOG.md").read_text()
    assert notes.startswith(f"## {VERSION}")
    assert notes == release.changelog_entry(VERSION, (REPO / "CHANGELOG.md").read_text())


@pytest.fixture(scope="module")
def cp() -> Iterator[controlplane.ControlPlane]:
    # A control plane of its own: the session's has deploy/ installed already.
    plane = controlplane.start()
    try:
        yield plane
    finally:
        plane.stop()


def test_the_all_in_one_manifest_applies_server_side_with_the_released_image(released, cp):
    manifest = released / "leifur.yaml"
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    shipped = {c["image"] for d in docs if d["kind"] in ("Deployment", "DaemonSet")
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert shipped == {f"{release.REGISTRY}/leifur:{VERSION}"}
    kubectl = str(gobuild.ensure_built("kubectl"))
    res = subprocess.run([kubectl, "--kubeconfig", str(cp.kubeconfig), "apply", "--server-side", "-f", str(manifest)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    # Every object is there as the manifest says.
    for d in docs:
        ns = ["--namespace", d["metadata"]["namespace"]] if "namespace" in d["metadata"] else []
        got = subprocess.run([kubectl, "--kubeconfig", str(cp.kubeconfig), "get", d["kind"], d["metadata"]["name"],
                              *ns, "-o", "jsonpath={.metadata.name}"], capture_output=True, text=True, timeout=60)
        assert got.stdout == d["metadata"]["name"], (d["kind"], got.stderr)


def test_a_version_that_is_not_the_packages_is_refused(tmp_path):
    out = tmp_path / "out"
    res = subprocess.run([str(REPO / "hack" / "release.sh"), "9.9.9", str(out)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode != 0
    assert f"leifur.__version__ is {VERSION}, not 9.9.9" in res.stderr
    assert "Chart.yaml: version" in res.stderr and "CHANGELOG.md has no entry '## 9.9.9'" in res.stderr
    assert not out.exists()
