"""A release's artifacts, into a directory: the image as an OCI archive, the packaged chart, the
all-in-one manifest and the release notes (hack/release.sh; docs/operations/image.md#releases).

One version, stamped once: VERSION must be leifur.__version__, the chart's version and appVersion,
and have its entry in CHANGELOG.md, or nothing is made.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

import leifur
from leifur_dev import chart, image

REPO = Path(__file__).resolve().parents[2]
CHANGELOG = REPO / "CHANGELOG.md"
# Where the all-in-one manifest says the image is: a placeholder the operator replaces with the
# registry they push the archive to (docs/quick-start.md).
REGISTRY = "registry.example.com"
# The name deploy/ gives the image, which the manifest's kustomization replaces.
IMAGE_NAME = "leifur"


def changelog_entry(version: str, text: str) -> str:
    """The section `## VERSION ...` of a changelog, up to the next `## `; '' if there is none."""
    m = re.search(rf"^## {re.escape(version)}\b.*?(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    return m.group(0).rstrip() + "\n" if m else ""


def version_problems(version: str) -> list[str]:
    """Why `version` cannot be released from this checkout (none: it can)."""
    problems = []
    if version != leifur.__version__:
        problems.append(f"leifur.__version__ is {leifur.__version__}, not {version} (leifur/__init__.py)")
    meta = yaml.safe_load((chart.CHART / "Chart.yaml").read_text())
    for field in ("version", "appVersion"):
        if str(meta[field]) != version:
            problems.append(f"charts/leifur/Chart.yaml: {field} is {meta[field]}, not {version}")
    if not changelog_entry(version, CHANGELOG.read_text() if CHANGELOG.exists() else ""):
        problems.append(f"CHANGELOG.md has no entry '## {version}': write it first")
    return problems


def all_in_one(version: str, registry: str) -> str:
    """deploy/ rendered with kustomize, its image set to REGISTRY/leifur:VERSION."""
    with tempfile.TemporaryDirectory() as tmp:
        overlay = Path(tmp)
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [os.path.relpath(chart.DEPLOY, overlay)],
            "images": [{"name": IMAGE_NAME, "newName": f"{registry}/{IMAGE_NAME}", "newTag": version}],
        }
        (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
        return chart.kustomize(overlay)


def release(version: str, out: Path, registry: str = REGISTRY, log=image._stderr) -> list[Path]:
    """Make the artifacts in `out`; their paths."""
    if problems := version_problems(version):
        raise SystemExit("cannot release " + version + ":\n  " + "\n  ".join(problems))
    out.mkdir(parents=True, exist_ok=True)
    revision = image.git_revision()
    if revision.endswith("-dirty"):
        log(f"[release] warning: the checkout has uncommitted changes; the image says {revision}")
    # Built anew with this commit's revision (podman's layer cache keeps that to the last layers).
    built = image.ensure_image(log, revision=revision)
    name = f"{IMAGE_NAME}:{version}"
    subprocess.run(image.podman("tag", built.ref, name), check=True, capture_output=True)
    archive = out / f"leifur-{version}.oci.tar"
    archive.unlink(missing_ok=True)
    subprocess.run(image.podman("save", "--format", "oci-archive", "--output", str(archive), name),
                   check=True, capture_output=True, timeout=300)
    log(f"[release] image {name}: {archive.name}")

    chart.helm("package", str(chart.CHART), "--destination", str(out))
    packaged = out / f"leifur-{version}.tgz"
    log(f"[release] chart: {packaged.name}")

    manifest = out / "leifur.yaml"
    manifest.write_text(f"# Leifur {version} (revision {revision}), all in one: kubectl apply --server-side -f "
                        f"leifur.yaml\n# The image is {registry}/{IMAGE_NAME}:{version}: replace {registry} with "
                        f"the registry you push leifur-{version}.oci.tar to.\n" + all_in_one(version, registry))
    log(f"[release] manifest: {manifest.name}")

    notes = out / "CHANGELOG.md"
    notes.write_text(changelog_entry(version, CHANGELOG.read_text()))
    artifacts = [archive, packaged, manifest, notes]
    sums = out / "SHA256SUMS"
    sums.write_text("".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in artifacts))
    return [*artifacts, sums]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/release.sh", description=__doc__.splitlines()[0])
    parser.add_argument("version")
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--registry", default=REGISTRY,
                        help=f"where leifur.yaml says the image is (default: the placeholder {REGISTRY})")
    args = parser.parse_args(argv)
    for path in release(args.version, args.outdir, args.registry):
        print(path, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
