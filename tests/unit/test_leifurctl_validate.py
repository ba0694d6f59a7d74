"""`leifurctl validate`: pool and advertisement manifests checked offline, with the controller's parser.

Errors (exit 1) are what the API server would reject or the controller would mark invalid.
Two things are warnings (exit 0, exit 1 with --strict), and the tests below pin that choice:
- pools sharing addresses across objects: the controller accepts them (it never gives an address
  twice and marks both pools Overlapping), so refusing them here would refuse a working config;
- an advertisement naming a pool that is not in the files: validate is offline and the pool may
  already exist in the cluster; if it does not, the name selects nothing and nothing breaks.
"""

from __future__ import annotations

import io
import json
import textwrap

import pytest
import yaml

from leifur.cli import leifurctl

POOL = """\
apiVersion: leifur.io/v1alpha1
kind: IPAddressPool
metadata:
  name: {name}
spec:
  addresses:
{addresses}
"""

ADVERTISEMENT = """\
apiVersion: leifur.io/v1alpha1
kind: L2Advertisement
metadata:
  name: {name}
spec:
  ipAddressPools: [{pools}]
"""


def pool(name: str, *addresses: str) -> str:
    return POOL.format(name=name, addresses="\n".join(f"    - {a}" for a in addresses))


def write(tmp_path, name: str, *docs: str):
    path = tmp_path / name
    path.write_text("---\n".join(docs))
    return path


def run(capsys, *args) -> tuple[int, str]:
    code = leifurctl.main(["validate", *map(str, args)])
    out = capsys.readouterr()
    assert out.err == ""
    return code, out.out


def run_json(capsys, *args) -> tuple[int, dict]:
    code, out = run(capsys, *args, "-o", "json")
    return code, json.loads(out)


def only_finding(report: dict, level: str | None = None) -> dict:
    found = [f for f in report["findings"] if level is None or f["level"] == level]
    assert len(found) == 1, report["findings"]
    return found[0]


def test_good_pools_and_advertisements_in_a_multi_document_file_pass(tmp_path, capsys):
    path = write(tmp_path, "lb.yaml",
                 pool("lan", "192.0.2.0/28", "198.51.100.10-198.51.100.20", "2001:db8:1::/64"),
                 pool("wan", "203.0.113.7"),
                 ADVERTISEMENT.format(name="l2", pools="lan, wan"),
                 # An advertisement with no spec announces every pool from every node: valid.
                 "apiVersion: leifur.io/v1alpha1\nkind: L2Advertisement\nmetadata: {name: everything}\n")
    code, out = run(capsys, path)
    assert code == 0
    assert out.strip() == "OK: 2 IPAddressPools, 2 L2Advertisements in 1 file: no problems"

    code, report = run_json(capsys, path)
    assert code == 0 and report["ok"] and report["findings"] == []
    assert [(o["kind"], o["name"], o["line"]) for o in report["objects"]] == [
        ("IPAddressPool", "lan", 1), ("IPAddressPool", "wan", 11), ("L2Advertisement", "l2", 19),
        ("L2Advertisement", "everything", 26)]


def test_a_yaml_syntax_error_is_reported_with_file_and_line_and_fails(tmp_path, capsys):
    path = write(tmp_path, "broken.yaml", pool("lan", "192.0.2.0/28"),
                 "apiVersion: leifur.io/v1alpha1\nkind: IPAddressPool\nmetadata:\n  name: x\n"
                 "spec:\n  addresses: [192.0.2.64/28\n")
    code, out = run(capsys, path)
    assert code == 1
    assert f"{path}:" in out and "YAML syntax error" in out
    assert out.splitlines()[-1].startswith("FAILED: 1 IPAddressPool in 1 file: 1 error")

    code, report = run_json(capsys, path)
    finding = only_finding(report)
    # The document before the error was read and checked; the error points past the open bracket.
    assert [o["name"] for o in report["objects"]] == ["lan"]
    assert finding["level"] == "error" and finding["file"] == str(path) and finding["line"] >= 14
    assert "line" in finding["message"] and "column" in finding["message"]


def test_an_unknown_leifur_kind_fails_and_other_kinds_are_skipped(tmp_path, capsys):
    path = write(tmp_path, "mixed.yaml",
                 "apiVersion: leifur.io/v1alpha1\nkind: IPPool\nmetadata: {name: typo}\n",
                 "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {type: LoadBalancer}\n",
                 pool("lan", "192.0.2.0/28"))
    code, out = run(capsys, path)
    assert code == 1
    assert f"{path}:2" in out and "unknown kind 'IPPool'" in out and "did you mean 'IPAddressPool'?" in out
    assert "skipped 1 other object (v1 Service)" in out

    code, report = run_json(capsys, path)
    assert report["skipped"] == [{"apiVersion": "v1", "kind": "Service", "name": "web", "file": str(path),
                                  "line": 5}]
    assert only_finding(report)["kind"] == "IPPool"

    # A Service alone is not an error: there is just nothing of ours to check.
    other = write(tmp_path, "svc.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n")
    code, report = run_json(capsys, other)
    assert code == 0
    assert only_finding(report, "warning")["message"] == ("no IPAddressPool, L2Advertisement, BGPPeer, "
                                                          "BGPAdvertisement or BFDProfile in the files given")


def test_another_projects_ip_address_pool_is_an_error(tmp_path, capsys):
    path = write(tmp_path, "metallb.yaml", pool("lan", "192.0.2.0/28").replace("leifur.io/v1alpha1",
                                                                               "metallb.io/v1beta1"))
    code, report = run_json(capsys, path)
    assert code == 1
    assert "Leifur's is leifur.io/v1alpha1" in only_finding(report)["message"]


@pytest.mark.parametrize(("entry", "says"), [
    ("192.0.2.0/33", "'192.0.2.0/33' is not a valid CIDR"),
    ("192.0.2.1/24", "'192.0.2.1/24' has host bits set; did you mean 192.0.2.0/24?"),
    ("198.51.100.20-198.51.100.10", "starts after it ends; did you mean 198.51.100.10-198.51.100.20?"),
    ("192.0.2.1-2001:db8::1", "mixes IPv4 and IPv6"),
    ("not-an-ip", "is not a range"),
])
def test_a_bad_address_entry_names_file_line_object_and_entry(tmp_path, capsys, entry, says):
    path = write(tmp_path, "pools.yaml", pool("good", "203.0.113.0/28"), pool("bad", "192.0.2.128/28", entry))
    code, out = run(capsys, path)
    assert code == 1
    # The second entry of the second document: 7 lines of the first, the "---", then 8 lines.
    line = next(line for line in out.splitlines() if says in line)
    assert line.split()[:3] == [f"{path}:16", "error", "IPAddressPool/bad"]
    assert "spec.addresses[1]" in line

    code, report = run_json(capsys, path)
    finding = only_finding(report)
    assert (finding["file"], finding["line"], finding["kind"], finding["name"]) == (str(path), 16, "IPAddressPool",
                                                                                   "bad")


def test_every_problem_of_a_pool_is_reported_at_once(tmp_path, capsys):
    path = write(tmp_path, "pools.yaml", textwrap.dedent("""\
        apiVersion: leifur.io/v1alpha1
        kind: IPAddressPool
        metadata:
          name: Bad_Name
        spec:
          adresses: [192.0.2.0/28]
          addresses:
            - 192.0.2.0/28
            - 192.0.2.8-192.0.2.20
          autoAssign: "yes"
          serviceAllocation:
            priority: -1
            namespaceSelectors:
              - matchExpressions: [{key: team, operator: Inn, values: [a]}]
        """))
    code, report = run_json(capsys, path)
    assert code == 1
    messages = {f["line"]: f["message"] for f in report["findings"]}
    assert "metadata.name 'Bad_Name' is not a valid name" in messages[4]
    assert "spec.adresses: unknown field; did you mean 'addresses'?" in messages[6]
    assert "overlaps spec.addresses[1]" in messages[8]
    assert "spec.autoAssign must be true or false" in messages[10]
    assert "priority must be 0 or more" in messages[12]
    assert "operator 'Inn' is not one of" in messages[14]
    assert report["errors"] == 6


def test_pools_overlapping_across_files_are_a_warning_naming_both(tmp_path, capsys):
    a = write(tmp_path, "a.yaml", pool("lan", "192.0.2.0/28"))
    b = write(tmp_path, "b.yaml", pool("more", "192.0.2.8-192.0.2.20", "2001:db8::/64"))
    code, out = run(capsys, a, b)
    assert code == 0
    assert (f"{b}:1   warning   IPAddressPool/more   shares addresses with IPAddressPool 'lan' ({a}:1): "
            "192.0.2.8-192.0.2.15") in out
    assert out.splitlines()[-1] == "OK: 2 IPAddressPools in 2 files: 1 warning"
    code, out = run(capsys, a, b, "--strict")
    assert code == 1 and out.splitlines()[-1] == "FAILED: 2 IPAddressPools in 2 files: 1 warning (--strict: failing)"


def test_the_same_pool_defined_twice_is_an_error(tmp_path, capsys):
    a = write(tmp_path, "a.yaml", pool("lan", "192.0.2.0/28"))
    b = write(tmp_path, "b.yaml", pool("lan", "198.51.100.0/28"))
    code, report = run_json(capsys, a, b)
    assert code == 1
    finding = only_finding(report)
    assert finding["file"] == str(b) and f"also defined at {a}:1" in finding["message"]


def test_an_advertisement_naming_a_pool_not_in_the_files_is_a_warning(tmp_path, capsys):
    pools = write(tmp_path, "pools.yaml", pool("lan", "192.0.2.0/28"))
    ads = write(tmp_path, "ads.yaml", ADVERTISEMENT.format(name="l2", pools="lan, lna, dmz"))
    code, report = run_json(capsys, pools, ads)
    assert code == 0 and report["ok"] and report["warnings"] == 2 and report["errors"] == 0
    typo, other = report["findings"]
    assert typo["line"] == 6 and typo["name"] == "l2"
    assert "pool 'lna' is not in the files given (did you mean 'lan'?)" in typo["message"]
    assert "pool 'dmz' is not in the files given (pools there: lan); fine if it already exists" in other["message"]
    code, report = run_json(capsys, pools, ads, "--strict")
    assert code == 1 and not report["ok"]


def test_advertisement_fields_are_checked(tmp_path, capsys):
    path = write(tmp_path, "ads.yaml", textwrap.dedent("""\
        apiVersion: leifur.io/v1alpha1
        kind: L2Advertisement
        metadata: {name: l2}
        spec:
          mode: netlink
          interfaces: [eth0, a-very-long-interface-name]
          nodeSelectors:
            - matchLabels: {"bad key!": x}
          ipAddressPoolSelectors:
            - matchLabels: {tier: gold}
          pools: [lan]
        """), pool("lan", "192.0.2.0/28"))
    code, report = run_json(capsys, path)
    assert code == 1
    by_line = {f["line"]: (f["level"], f["message"]) for f in report["findings"]}
    assert by_line[5] == ("error", "spec.mode must be Responder or Netlink, got 'netlink'; did you mean 'Netlink'?")
    assert by_line[6][0] == "error" and "'a-very-long-interface-name' is not a Linux interface name" in by_line[6][1]
    assert by_line[8][0] == "error" and "label key 'bad key!' is invalid" in by_line[8][1]
    assert by_line[10][0] == "warning" and "selects none of the pools in the files given" in by_line[10][1]
    assert by_line[11][0] == "error" and "spec.pools: unknown field" in by_line[11][1]


def test_lists_directories_stdin_and_missing_files(tmp_path, capsys, monkeypatch):
    d = tmp_path / "config"
    d.mkdir()
    (d / "list.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "leifur.io/v1alpha1", "kind": "IPAddressPool", "metadata": {"name": "lan"},
         "spec": {"addresses": ["192.0.2.0/28"]}},
        {"apiVersion": "leifur.io/v1alpha1", "kind": "L2Advertisement", "metadata": {"name": "l2"},
         "spec": {"ipAddressPools": ["lan"]}}]}))
    (d / "README.md").write_text("not a manifest")
    code, report = run_json(capsys, d)
    assert code == 0 and [o["name"] for o in report["objects"]] == ["lan", "l2"]
    assert report["files"] == [str(d / "list.yaml")]

    monkeypatch.setattr("sys.stdin", io.StringIO(pool("bad", "192.0.2.1/28")))
    code, report = run_json(capsys, "-")
    assert code == 1 and only_finding(report)["file"] == "<stdin>"

    code, report = run_json(capsys, tmp_path / "nope.yaml")
    assert code == 1 and only_finding(report)["message"] == "no such file"


def test_a_key_given_twice_is_an_error(tmp_path, capsys):
    path = write(tmp_path, "dup.yaml", pool("lan", "192.0.2.0/28") + "  autoAssign: false\n  autoAssign: true\n")
    code, report = run_json(capsys, path)
    assert code == 1
    assert only_finding(report)["message"] == ("key 'autoAssign' appears twice in one mapping (lines 8 and 9); YAML "
                                               "keeps only the last")


def test_json_and_yaml_output_have_the_same_shape(tmp_path, capsys):
    path = write(tmp_path, "pools.yaml", pool("lan", "192.0.2.1/28"), pool("wan", "192.0.2.0/30"))
    code, as_json = run_json(capsys, path)
    code_yaml, out = run(capsys, path, "-o", "yaml")
    assert code == code_yaml == 1
    assert yaml.safe_load(out) == as_json
    assert set(as_json) == {"ok", "errors", "warnings", "files", "objects", "skipped", "findings"}
    assert as_json["ok"] is False and as_json["errors"] == 1 and as_json["warnings"] == 0
    assert as_json["files"] == [str(path)]
    assert as_json["findings"] == [{
        "level": "error", "file": str(path), "line": 7, "kind": "IPAddressPool", "name": "lan",
        "message": "spec.addresses[0]: '192.0.2.1/28' has host bits set; did you mean 192.0.2.0/28?"}]
