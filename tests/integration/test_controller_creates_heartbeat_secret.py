"""The agents' heartbeat key Secret, against the real API server: the controller creates it when it
is missing, never changes one that exists, and leaves it alone when told to.

Each test names a Secret of its own (--heartbeat-secret) in the controller's namespace, so that
what other tests' controllers created under the default name does not matter."""

from __future__ import annotations

import base64
import contextlib
import json
import uuid

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from leifur.kube.client import request
from leifur.model import names
from leifur_dev.cluster import ControllerProcess, wait_for

pytestmark = pytest.mark.controlplane

NAMESPACE = "leifur-system"  # ControllerProcess's --lease-namespace: the controller's namespace


def logged(c: ControllerProcess, text: str) -> int:
    """How many of the controller's log lines have `text` in their message."""
    if not c.log_path.exists():
        return 0
    n = 0
    for line in c.log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            n += text in json.loads(line).get("msg", "")
    return n


class Secrets:
    """This test's Secrets in the controller's namespace, read as the API server stores them; deleted afterwards."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.names: list[str] = []

    def new_name(self) -> str:
        name = f"hb-{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        return name

    def raw(self, name: str) -> dict | None:
        """The whole object as JSON (every byte the API server returns), or None if there is none."""
        try:
            return request(self.api_client, "GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/{name}")
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def cleanup(self) -> None:
        for name in self.names:
            with contextlib.suppress(ApiException):
                self.core.delete_namespaced_secret(name, NAMESPACE)


@pytest.fixture
def secrets(cluster):
    s = Secrets(cluster.api_client)
    yield s
    s.cleanup()


def created_line(name: str) -> str:
    return f"heartbeat key Secret {NAMESPACE}/{name} was missing: created it"


def exists_line(name: str) -> str:
    return f"heartbeat key Secret {NAMESPACE}/{name} exists: left as it is"


def test_a_missing_secret_is_created_with_a_random_32_byte_key_and_kept_across_restarts(env, secrets):
    name = secrets.new_name()
    assert secrets.raw(name) is None
    first = env.controller("--heartbeat-secret", name, identity="hb1")
    secret = wait_for(lambda: secrets.raw(name), what=f"Secret {name} created")
    assert secret["type"] == "Opaque"
    assert secret["metadata"]["labels"] == {"app.kubernetes.io/name": "leifur"}
    assert secret["data"].keys() == {names.HEARTBEAT_KEY_CURRENT}
    key = base64.b64decode(secret["data"][names.HEARTBEAT_KEY_CURRENT], validate=True)
    assert len(key) == names.HEARTBEAT_KEY_BYTES and len(set(key)) > 8  # random, not a constant
    wait_for(lambda: logged(first, created_line(name)), what="the creation logged")

    # A restart finds it and keeps the key: the agents' heartbeats stay valid.
    first.stop()
    again = env.controller("--heartbeat-secret", name, identity="hb2")
    wait_for(lambda: logged(again, exists_line(name)), what="the restarted controller finding the Secret")
    assert secrets.raw(name) == secret


def test_an_existing_secret_is_left_byte_for_byte_as_it_is(env, secrets):
    # An operator's own Secret, mid-rotation, and not what the controller would make: another
    # type, three keys, one of them short, labels and annotations of its own.
    name = secrets.new_name()
    secrets.core.create_namespaced_secret(NAMESPACE, {
        "metadata": {"name": name, "labels": {"owner": "ops"}, "annotations": {"rotated": "yesterday"}},
        "type": "example.com/heartbeat",
        "data": {names.HEARTBEAT_KEY_CURRENT: base64.b64encode(b"c" * 40).decode(),
                 names.HEARTBEAT_KEY_PREVIOUS: base64.b64encode(b"p" * 32).decode(),
                 names.HEARTBEAT_KEY_NEXT: base64.b64encode(b"n" * 5).decode()},
    })
    before = secrets.raw(name)
    c = env.controller("--heartbeat-secret", name)
    wait_for(lambda: logged(c, exists_line(name)), what="the controller finding the Secret")
    assert logged(c, created_line(name)) == 0
    # Same resourceVersion, managedFields, data: nothing was written.
    assert secrets.raw(name) == before


def test_two_replicas_starting_together_create_it_once(env, secrets):
    name = secrets.new_name()
    replicas = [env.controller("--heartbeat-secret", name, identity=f"r{i}", start=False) for i in (1, 2)]
    for r in replicas:
        r.start()
    for r in replicas:
        # Every replica does it, the standby too, without waiting for the Lease.
        wait_for(lambda r=r: logged(r, created_line(name)) + logged(r, exists_line(name)),
                 what=f"{r.log_path.name}: the Secret created or found")
    assert sum(logged(r, created_line(name)) for r in replicas) == 1
    secret = secrets.raw(name)
    assert secret is not None
    assert len(base64.b64decode(secret["data"][names.HEARTBEAT_KEY_CURRENT])) == names.HEARTBEAT_KEY_BYTES


def test_with_creation_turned_off_nothing_is_created(env, secrets):
    name = secrets.new_name()
    c = env.controller("--heartbeat-secret", name, "--no-create-heartbeat-secret")
    wait_for(lambda: logged(c, f"heartbeat key Secret {NAMESPACE}/{name}: not created by the controller"),
             what="the controller saying it leaves the Secret to the operator")
    # Let it do its normal work, which starts after the Secret's creation would have: a Service
    # gets its IP, and still there is no Secret.
    env.pool("hb", ["203.0.113.248/30"])
    env.svc("web")
    env.wait_ips("web")
    assert secrets.raw(name) is None
    assert logged(c, created_line(name)) == logged(c, exists_line(name)) == 0
