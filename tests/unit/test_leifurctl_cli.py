"""leifurctl as a program: the name it goes by (leifurctl, or kubectl leifur as a kubectl plugin)
and the exit code of `status`."""

from __future__ import annotations

import pytest

from leifur.cli import leifurctl, output, status


@pytest.mark.parametrize(("argv0", "expected"), [
    pytest.param("/usr/local/bin/leifurctl", "leifurctl", id="its own name"),
    pytest.param("/home/op/.krew/bin/kubectl-leifur", "kubectl leifur", id="kubectl's plugin, with a path"),
    pytest.param("kubectl-leifur", "kubectl leifur", id="kubectl's plugin, bare"),
    pytest.param("/repo/leifur/cli/leifurctl.py", "leifurctl", id="python -m"),
    pytest.param("", "leifurctl", id="no argv[0]"),
])
def test_the_program_name_is_how_it_was_called(argv0, expected):
    assert leifurctl.program_name(argv0) == expected


def test_usage_and_examples_name_the_program_as_called(capsys):
    with pytest.raises(SystemExit):
        leifurctl.build_parser("kubectl leifur").parse_args(["status", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: kubectl leifur status ")
    assert "\n  kubectl leifur status -n web -o json" in out and "leifurctl" not in out


def report(pools=(), services=(), stray=(), conflicts=(), notes=(), bgp=()) -> dict:
    return {"pools": list(pools), "services": list(services), "strayAnnouncements": list(stray),
            "conflicts": list(conflicts), "notes": list(notes), "bgpProblems": list(bgp)}


def row(*problems: str) -> dict:
    return {"state": problems[0] if problems else "OK",
            "problems": [{"reason": p, "message": ""} for p in problems]}


@pytest.mark.parametrize(("rep", "expected"), [
    pytest.param(report(), output.EXIT_OK, id="nothing at all"),
    pytest.param(report(pools=[row()], services=[row(), row()]), output.EXIT_OK, id="everything OK"),
    pytest.param(report(pools=[row("Exhausted")], services=[row()]), output.EXIT_PROBLEMS, id="a pool's problem"),
    pytest.param(report(pools=[row()], services=[row(), row("Taken")]), output.EXIT_PROBLEMS, id="a Service's problem"),
    pytest.param(report(services=[row("Deleting")]), output.EXIT_PROBLEMS, id="a Service being deleted is listed"),
    pytest.param(report(stray=[{"ip": "192.0.2.9", "nodes": ["n1"], "message": "m"}]), output.EXIT_PROBLEMS,
                 id="a stray announcement"),
    pytest.param(report(conflicts=["two Services hold 192.0.2.1"]), output.EXIT_PROBLEMS, id="a conflict"),
    pytest.param(report(bgp=["node n1: session to BGPPeer r1 (203.0.113.1) is Active"]), output.EXIT_PROBLEMS,
                 id="a BGP session down"),
    pytest.param(report(pools=[row()], notes=["cannot list nodes: forbidden"]), output.EXIT_OK,
                 id="a note is not a problem of the cluster"),
])
def test_status_exits_non_zero_exactly_when_it_lists_problems(rep, expected):
    assert status.exit_code(rep) == expected
