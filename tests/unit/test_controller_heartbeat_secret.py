"""The heartbeat key Secret: what the controller creates, and how it treats one that exists or an API error."""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from leifur.controller import heartbeat_secret
from leifur.kube.backoff import Backoff
from leifur.model import names
from leifur.model.settings import ControllerSettings


def test_the_body_holds_the_key_as_current_and_nothing_else():
    key = bytes(range(names.HEARTBEAT_KEY_BYTES))
    body = heartbeat_secret.secret_body("hb", key)
    assert body == {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "hb", "labels": {"app.kubernetes.io/name": "leifur"}},
        "type": "Opaque",
        "data": {names.HEARTBEAT_KEY_CURRENT: base64.b64encode(key).decode()},
    }


def test_a_short_key_is_refused():
    with pytest.raises(ValueError, match="32 bytes"):
        heartbeat_secret.secret_body("hb", b"x" * (names.HEARTBEAT_KEY_BYTES - 1))


@pytest.mark.parametrize(("name", "ok"), [
    (names.HEARTBEAT_SECRET, True), ("a.b-c", True), ("a" * 253, True),
    ("", False), ("A", False), ("-a", False), ("a-", False), ("a..b", False), ("a/b", False), ("a" * 254, False),
])
def test_secret_names(name, ok):
    assert heartbeat_secret.valid_name(name) is ok


class FakeAPI:
    """Answers the create requests in turn: None is 201 Created, an int is that HTTP error."""

    def __init__(self, monkeypatch, *answers: int | None) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, str, dict]] = []
        monkeypatch.setattr(heartbeat_secret, "request", self.request)

    def request(self, _api, method, path, *, body, timeout):
        self.calls.append((method, path, body))
        status = self.answers.pop(0)
        if status is not None:
            raise ApiException(status=status, reason="test")
        return body


class NoWait(Backoff):
    """Counts the waits instead of waiting: stop.wait(0) returns at once."""

    def __init__(self) -> None:
        super().__init__(0.5, 30.0)
        self.waits = 0

    def next(self) -> float:
        self.waits += 1
        return 0.0


def test_a_missing_secret_is_created_with_a_fresh_random_key(monkeypatch, caplog):
    api = FakeAPI(monkeypatch, None)
    caplog.set_level("INFO")
    assert heartbeat_secret.ensure(None, "lb", "hb", threading.Event())
    ((method, path, body),) = api.calls
    assert (method, path) == ("POST", "/api/v1/namespaces/lb/secrets")
    assert len(base64.b64decode(body["data"]["current"])) == names.HEARTBEAT_KEY_BYTES
    assert "lb/hb was missing: created it" in caplog.text


def test_an_existing_secret_is_success_and_only_ever_a_create_is_sent(monkeypatch, caplog):
    api = FakeAPI(monkeypatch, 409)
    caplog.set_level("INFO")
    assert heartbeat_secret.ensure(None, "lb", "hb", threading.Event())
    assert [c[0] for c in api.calls] == ["POST"]
    assert "lb/hb exists: left as it is" in caplog.text


def test_api_errors_are_retried_with_backoff_until_it_is_done(monkeypatch, caplog):
    api = FakeAPI(monkeypatch, 403, 500, 404, None)
    backoff = NoWait()
    assert heartbeat_secret.ensure(None, "lb", "hb", threading.Event(), backoff)
    assert len(api.calls) == 4 and backoff.waits == 3
    assert "HTTP 403" in caplog.text and "retrying" in caplog.text
    # Each attempt brings a key of its own: a key that never made it is never reused.
    keys = {c[2]["data"]["current"] for c in api.calls}
    assert len(keys) == 4


def test_a_connection_error_is_retried_too(monkeypatch):
    calls = []

    def request(_api, method, path, *, body, timeout):
        calls.append(method)
        if len(calls) == 1:
            raise ConnectionRefusedError("no API server")
        return body

    monkeypatch.setattr(heartbeat_secret, "request", request)
    assert heartbeat_secret.ensure(None, "lb", "hb", threading.Event(), NoWait())
    assert calls == ["POST", "POST"]


def test_stopping_ends_the_retries(monkeypatch):
    stop = threading.Event()

    class StopOnWait(NoWait):
        def next(self) -> float:
            stop.set()
            return super().next()

    api = FakeAPI(monkeypatch, 503, None)
    assert not heartbeat_secret.ensure(None, "lb", "hb", stop, StopOnWait())
    assert len(api.calls) == 1


# -- the manifests agree with the code -----------------------------------------------------------

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_the_daemonset_mounts_the_secret_the_controller_creates_where_the_agent_reads_it():
    pod = yaml.safe_load((DEPLOY / "agent" / "daemonset.yaml").read_text())["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == names.HEARTBEAT_SECRET]
    assert volume["secret"]["defaultMode"] == 0o400 and volume["secret"]["optional"] is False
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount == {"name": volume["name"], "mountPath": names.HEARTBEAT_KEY_DIR, "readOnly": True}
    assert ControllerSettings().heartbeat_secret == names.HEARTBEAT_SECRET


def test_the_controller_may_create_secrets_in_its_own_namespace_and_do_nothing_else_with_them():
    docs = [d for d in yaml.safe_load_all((DEPLOY / "controller" / "rbac.yaml").read_text()) if d]
    namespace = yaml.safe_load((DEPLOY / "controller" / "deployment.yaml").read_text())["metadata"]["namespace"]
    grants = [(d["kind"], d["metadata"].get("namespace"), verb) for d in docs if d["kind"] in ("Role", "ClusterRole")
              for rule in d["rules"] if "secrets" in rule["resources"] for verb in rule["verbs"]]
    assert grants == [("Role", namespace, "create")]
