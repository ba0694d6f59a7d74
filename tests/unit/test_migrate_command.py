"""`leifurctl migrate from-metallb` on files: what goes to stdout, what to stderr, and the exit codes.

Reading MetalLB's objects from the cluster is tested against the real API server in
tests/integration/test_migrate_from_metallb.py.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import yaml

from leifur.cli import leifurctl, migrate

POOL = """\
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: web
  namespace: metallb-system
  labels: {tier: web}
spec:
  addresses: [192.0.2.0/28]
"""
ADVERTISEMENT = """\
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: l2, namespace: metallb-system}
spec:
  ipAddressPoolSelectors: [{matchLabels: {tier: web}}]
  interfaces: [eth0]
"""
PEER = """\
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: router, namespace: metallb-system}
spec: {myASN: 64500, peerASN: 64501, peerAddress: 192.0.2.254, vrf: red}
"""
BFD = """\
apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata: {name: fast, namespace: metallb-system}
spec: {receiveInterval: 100, transmitInterval: 100}
"""
TRANSLATED = [("IPAddressPool", "web"), ("L2Advertisement", "l2")]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = leifurctl.main(["migrate", "from-metallb", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def kinds_and_names(objects: list[dict]) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in objects]


def write(tmp_path, name: str, *docs: str) -> str:
    path = tmp_path / name
    path.write_text("---\n".join(docs))
    return str(path)


def test_yaml_documents_on_stdout_and_the_summary_on_stderr(tmp_path, capsys):
    code, out, err = run(capsys, write(tmp_path, "metallb.yaml", POOL, ADVERTISEMENT))
    assert code == migrate.EXIT_OK
    objects = list(yaml.safe_load_all(out))
    assert kinds_and_names(objects) == TRANSLATED
    assert all(o["apiVersion"] == "leifur.io/v1alpha1" for o in objects)
    assert "translated 1 IPAddressPool, 1 L2Advertisement from metallb-system" in err


def test_bgp_objects_are_translated_and_counted(tmp_path, capsys):
    peer = PEER.replace(", vrf: red", "")
    code, out, err = run(capsys, write(tmp_path, "metallb.yaml", POOL, ADVERTISEMENT, BFD, peer))
    assert code == migrate.EXIT_OK
    written = kinds_and_names(list(yaml.safe_load_all(out)))
    assert written == [*TRANSLATED, ("BFDProfile", "fast"), ("BGPPeer", "router")]
    assert "translated 1 IPAddressPool, 1 L2Advertisement, 1 BFDProfile, 1 BGPPeer from metallb-system" in err


def test_json_is_one_list(tmp_path, capsys):
    code, out, _ = run(capsys, write(tmp_path, "metallb.yaml", POOL, ADVERTISEMENT), "-o", "json")
    assert code == migrate.EXIT_OK
    doc = json.loads(out)
    assert (doc["apiVersion"], doc["kind"]) == ("v1", "List")
    assert kinds_and_names(doc["items"]) == TRANSLATED


def test_something_untranslated_fails_with_nothing_written(tmp_path, capsys):
    code, out, err = run(capsys, write(tmp_path, "metallb.yaml", POOL, ADVERTISEMENT, PEER))
    assert (code, out) == (migrate.EXIT_UNTRANSLATED, "")
    assert "BGPPeer metallb-system/router" in err and "a session in a VRF" in err
    assert "FAILED: nothing written" in err


def test_allow_untranslated_writes_the_rest_and_succeeds(tmp_path, capsys):
    code, out, err = run(capsys, write(tmp_path, "metallb.yaml", POOL, ADVERTISEMENT, PEER), "--allow-untranslated")
    assert code == migrate.EXIT_OK
    assert kinds_and_names(list(yaml.safe_load_all(out))) == TRANSLATED
    assert "not translated" in err and "--allow-untranslated" in err


def test_a_directory_and_stdin_are_read_like_validate_reads_them(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "config"
    folder.mkdir()
    write(folder, "pool.yaml", POOL)
    write(folder, "notes.txt", PEER)  # not a manifest's suffix: not read
    monkeypatch.setattr("sys.stdin", io.StringIO(ADVERTISEMENT))
    code, out, _ = run(capsys, str(folder), "-")
    assert code == migrate.EXIT_OK
    assert kinds_and_names(list(yaml.safe_load_all(out))) == TRANSLATED


def test_the_namespace_flag_picks_what_is_translated(tmp_path, capsys):
    code, out, err = run(capsys, write(tmp_path, "metallb.yaml", POOL, ADVERTISEMENT), "--namespace", "lb")
    assert (code, out) == (migrate.EXIT_UNTRANSLATED, "")
    assert "only from its own namespace (lb)" in err


@pytest.mark.parametrize("content, phrase", [
    (None, "no such file"),
    ("kind: [unclosed\n", "YAML syntax error"),
    ("a: 1\na: 2\n", "appears twice"),
], ids=["missing file", "bad YAML", "duplicate key"])
def test_input_that_cannot_be_read_writes_nothing(tmp_path, capsys, content, phrase):
    path = tmp_path / "metallb.yaml"
    if content is not None:
        path.write_text(POOL + "---\n" + content)
    code, out, err = run(capsys, str(path))
    assert (code, out) == (migrate.EXIT_UNREADABLE, "")
    assert phrase in err


def test_no_metallb_object_at_all_is_an_error(tmp_path, capsys):
    service = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
    code, out, err = run(capsys, write(tmp_path, "svc.yaml", service))
    assert (code, out) == (migrate.EXIT_UNREADABLE, "")
    assert "no MetalLB object in the files given" in err


def test_files_and_cluster_flags_together_are_a_usage_error(tmp_path, capsys):
    code, out, err = run(capsys, write(tmp_path, "metallb.yaml", POOL), "--context", "prod")
    assert (code, out) == (migrate.EXIT_USAGE, "")
    assert "--context" in err


def test_migrate_needs_a_step(capsys):
    with pytest.raises(SystemExit) as exit_:
        leifurctl.main(["migrate"])
    assert exit_.value.code == migrate.EXIT_USAGE
    assert "from-metallb" in capsys.readouterr().err


def test_the_example_of_the_migration_page_is_what_the_command_does(tmp_path, capsys):
    page = (Path(__file__).resolve().parents[2] / "docs/operations/migration.md").read_text()
    given = re.search(r"```yaml\n# metallb.yaml\n(.*?)```", page, re.S)
    written = re.search(r"With `--allow-untranslated` it exits 0 and writes:\n\n```yaml\n(.*?)```", page, re.S)
    assert given and written
    path = write(tmp_path, "metallb.yaml", given.group(1))
    code, out, err = run(capsys, path)
    assert (code, out) == (migrate.EXIT_UNTRANSLATED, "")
    assert "translated 1 IPAddressPool, 1 L2Advertisement from metallb-system; 1 not translated; 3 notes" in err
    code, out, _ = run(capsys, path, "--allow-untranslated")
    assert (code, out) == (migrate.EXIT_OK, written.group(1))


@pytest.mark.parametrize(("kinds", "written"), [
    pytest.param([], TRANSLATED, id="every-kind-by-default"),
    pytest.param(["--kind", "IPAddressPool"], TRANSLATED[:1], id="pools-only"),
    pytest.param(["--kind", "L2Advertisement"], TRANSLATED[1:], id="advertisements-only"),
    pytest.param(["--kind", "L2Advertisement", "--kind", "IPAddressPool"], TRANSLATED, id="both-named"),
])
def test_kind_writes_part_of_the_translation(capsys, tmp_path, kinds, written):
    code, out, err = run(capsys, write(tmp_path, "m.yaml", POOL, ADVERTISEMENT), *kinds)
    assert code == migrate.EXIT_OK
    assert kinds_and_names([o for o in yaml.safe_load_all(out) if o]) == written
    assert "translated" in err  # the report covers everything read, whatever is written


def test_check_refuses_planned_objects_that_do_not_validate(capsys, tmp_path):
    bad = write(tmp_path, "leifur.yaml", "apiVersion: leifur.io/v1alpha1\nkind: IPAddressPool\n"
                                         "metadata: {name: p}\nspec: {addresses: [192.0.2.7/24]}\n")
    assert leifurctl.main(["migrate", "check", bad, "--kubeconfig", str(tmp_path / "none")]) == 1
    assert "do not pass leifurctl validate" in capsys.readouterr().err
