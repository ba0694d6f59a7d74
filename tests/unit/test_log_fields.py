"""JSON log lines carry their details as top-level fields (logfields, observability.JSONFormatter),
and what the controller's Service writes say in the log (status_log)."""

from __future__ import annotations

import ipaddress
import json
import logging

import pytest

from leifur.controller import status_log
from leifur.kube import logfields, observability
from leifur.model import names


def record(msg: str = "hello %s", args: tuple = ("world",), extra: dict | None = None) -> logging.LogRecord:
    logger = logging.getLogger("leifur.test")
    return logger.makeRecord(logger.name, logging.INFO, __file__, 1, msg, args, None, extra=extra)


@pytest.mark.parametrize(("extra", "expected"), [
    pytest.param(None, {}, id="no fields: only the fixed keys"),
    pytest.param(logfields.fields(service="web/frontend"), {"service": "web/frontend"}, id="one field"),
    pytest.param(logfields.fields(ip=ipaddress.ip_address("192.0.2.1"), interface="eth0", node="n1", pool="lan"),
                 {"ip": "192.0.2.1", "interface": "eth0", "node": "n1", "pool": "lan"},
                 id="an IP object becomes its text"),
    pytest.param(logfields.fields(ip=["192.0.2.1", "2001:db8::1"], service=("a/x", "b/y")),
                 {"ip": ["192.0.2.1", "2001:db8::1"], "service": ["a/x", "b/y"]}, id="several values: a list"),
    pytest.param(logfields.fields(service=["a/x"]), {"service": "a/x"}, id="a list of one: that one string"),
    pytest.param(logfields.fields(service="a/x", pool=None), {"service": "a/x"}, id="None leaves a field out"),
    pytest.param({"other": "x"}, {}, id="extras that are not fields stay out"),
])
def test_the_json_formatter_writes_fields_as_top_level_keys(extra, expected):
    line = json.loads(observability.JSONFormatter().format(record(extra=extra)))
    assert line.pop("msg") == "hello world"
    assert line.pop("level") == "info" and line.pop("logger") == "leifur.test" and line.pop("ts")
    assert line == expected


def test_a_misspelt_field_is_refused():
    with pytest.raises(ValueError, match="servcie"):
        logfields.fields(servcie="web/frontend")


@pytest.mark.parametrize(("extra", "expected"), [
    pytest.param(None, "n1", id="every line gets the default"),
    pytest.param(logfields.fields(node="n2"), "n2", id="the call's own value wins"),
])
def test_default_fields_fill_in_what_the_call_does_not_give(extra, expected, capsys):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        observability.setup_logging("info", node="n1")
        logging.getLogger("leifur.test").info("x", extra=extra)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert json.loads(capsys.readouterr().err.splitlines()[-1])["node"] == expected


# -- what the controller's Service writes say --------------------------------------------------

def svc(ips=(), conditions=None, finalizers=(names.SERVICE_FINALIZER,), annotations=None) -> dict:
    return {"metadata": {"namespace": "web", "name": "frontend", "finalizers": list(finalizers),
                         "annotations": annotations or {}},
            "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}, "conditions": conditions}}


def allocated(ok: bool, reason: str, message: str = "m") -> dict:
    return {"type": names.COND_SERVICE_ALLOCATED, "status": "True" if ok else "False", "reason": reason,
            "message": message}


def conflict(on: bool) -> dict:
    return {"type": names.COND_ADDRESS_CONFLICT, "status": "True" if on else "False", "reason": "AddressInUse",
            "message": "203.0.113.5 is used by 02:00:00:00:00:01"}


FROM_LAN = {names.ANN_ALLOCATED_FROM_POOL: "lan"}
OK = allocated(True, "Allocated")
KEY = "web/frontend"


@pytest.mark.parametrize(("before", "ingress", "conditions", "expected"), [
    pytest.param(svc(annotations=FROM_LAN), ["203.0.113.5"], [OK],
                 [(logging.INFO, "web/frontend: assigned 203.0.113.5 from pool lan",
                   {"service": KEY, "ip": "203.0.113.5", "pool": "lan"})], id="allocation"),
    pytest.param(svc(["203.0.113.5"], [OK], annotations=FROM_LAN), ["203.0.113.5"], [OK], [],
                 id="nothing changed: no line"),
    pytest.param(svc(["203.0.113.5"], [OK]), [], [],
                 [(logging.INFO, "web/frontend: released 203.0.113.5", {"service": KEY, "ip": "203.0.113.5"})],
                 id="release"),
    pytest.param(svc(annotations={names.ANN_LOAD_BALANCER_IPS: "203.0.113.5"}), [],
                 [allocated(False, "Taken", "held by other/x")],
                 [(logging.WARNING, "web/frontend: Taken: held by other/x",
                   {"service": KEY, "ip": "203.0.113.5"})], id="a conflict: the IP asked for"),
    pytest.param(svc(conditions=[allocated(False, "Taken", "held by other/x")],
                     annotations={names.ANN_LOAD_BALANCER_IPS: "203.0.113.5"}), [],
                 [allocated(False, "Taken", "held by other/x")], [], id="the same failure again: no line"),
    pytest.param(svc(annotations={names.ANN_ADDRESS_POOL: "small"}), [], [allocated(False, "Exhausted")],
                 [(logging.WARNING, "web/frontend: Exhausted: m", {"service": KEY, "pool": "small"})],
                 id="a failure names the pool asked for"),
    pytest.param(svc(annotations={"metallb.io/address-pool": "small"}), [], [allocated(False, "Exhausted")],
                 [(logging.WARNING, "web/frontend: Exhausted: m", {"service": KEY, "pool": "small"})],
                 id="a failure names the pool asked for in MetalLB's spelling"),
    pytest.param(svc(["203.0.113.5"], [OK], annotations=FROM_LAN), ["203.0.113.5"],
                 [allocated(True, "PartiallyAllocated")],
                 [(logging.WARNING, "web/frontend: PartiallyAllocated: m",
                   {"service": KEY, "ip": "203.0.113.5", "pool": "lan"})], id="partly allocated"),
    pytest.param(svc(["203.0.113.5"], [OK]), ["203.0.113.5"], [OK, conflict(True)],
                 [(logging.WARNING, "web/frontend: address conflict: 203.0.113.5 is used by 02:00:00:00:00:01",
                   {"service": KEY, "ip": "203.0.113.5"})], id="an address conflict starts"),
    pytest.param(svc(["203.0.113.5"], [OK, conflict(True)]), ["203.0.113.5"], [OK, conflict(False)],
                 [(logging.INFO, "web/frontend: address conflict over", {"service": KEY, "ip": "203.0.113.5"})],
                 id="an address conflict ends"),
])
def test_a_status_write_says_what_changed(before, ingress, conditions, expected):
    lines = status_log.status_written(before, [{"ip": ip} for ip in ingress], conditions)
    assert [(line.level, line.message, line.fields) for line in lines] == expected


@pytest.mark.parametrize(("before", "finalizers", "expected"), [
    pytest.param(svc(["203.0.113.5"], annotations=FROM_LAN), [],
                 [(logging.INFO, "web/frontend: let go of 203.0.113.5 (finalizer removed)",
                   {"service": KEY, "ip": "203.0.113.5", "pool": "lan"})], id="deleted: its IPs are free"),
    pytest.param(svc(["203.0.113.5"]), [names.SERVICE_FINALIZER], [], id="finalizer kept"),
    pytest.param(svc(), [], [], id="no IP to let go"),
    pytest.param(svc(["203.0.113.5"], finalizers=()), [], [], id="not ours before either"),
])
def test_removing_the_finalizer_says_which_ips_it_lets_go(before, finalizers, expected):
    lines = status_log.finalizer_removed(before, finalizers)
    assert [(line.level, line.message, line.fields) for line in lines] == expected
