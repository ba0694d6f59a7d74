"""The krew manifest template of `kubectl leifur` (deploy/krew/leifur.yaml), filled in as a release
fills it, checked by krew-index's own validator and against what the package installs."""

from __future__ import annotations

import re
import string
import subprocess
import tomllib

import yaml

import leifur
from leifur_dev import gobuild
from leifur_dev.cluster import REPO

TEMPLATE = REPO / "deploy" / "krew" / "leifur.yaml"
VALUES = {"VERSION": leifur.__version__, "HOMEPAGE": "https://example.com/leifur",
          "URI": f"https://example.com/leifur/releases/v{leifur.__version__}/kubectl-leifur.tar.gz",
          "SHA256": "0123456789abcdef" * 4}


def filled() -> str:
    text = TEMPLATE.read_text()
    placeholders = {m.group("named") or m.group("braced") for m in string.Template.pattern.finditer(text)} - {None}
    assert placeholders == VALUES.keys(), "the template's placeholders changed: update the release and this test"
    return string.Template(text).substitute(VALUES)


def test_the_filled_in_manifest_passes_krews_validator(tmp_path):
    manifest = tmp_path / "leifur.yaml"  # krew wants the file named after the plugin
    manifest.write_text(filled())
    validator = gobuild.ensure_built("validate-krew-manifest")
    res = subprocess.run([str(validator), "-manifest", str(manifest), "-skip-install"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "structural validation OK" in res.stderr


def test_the_manifest_installs_the_plugin_the_package_installs():
    plugin = yaml.safe_load(filled())
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    # kubectl runs kubectl-NAME for `kubectl NAME`; the console script is the same program as leifurctl.
    assert plugin["metadata"]["name"] == "leifur"
    assert scripts["kubectl-leifur"] == scripts["leifurctl"]
    assert plugin["spec"]["version"] == f"v{leifur.__version__}"
    for platform in plugin["spec"]["platforms"]:
        assert platform["bin"] == "kubectl-leifur"
        assert platform["uri"] == VALUES["URI"] and re.fullmatch(r"[0-9a-f]{64}", platform["sha256"])
