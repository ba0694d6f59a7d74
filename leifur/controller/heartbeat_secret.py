"""The Secret holding the agents' heartbeat key: created with a random key if it is missing, never changed.

The agents sign their heartbeats with the key in this Secret (mounted at names.HEARTBEAT_KEY_DIR).
So that installing Leifur needs nothing made by hand, the controller creates it at start-up
(unless --no-create-heartbeat-secret):

- Every replica does it, leader or not, as soon as it starts, in a thread of its own: the
  agents' Pods wait for the Secret, and creating is safe without the Lease. Of two replicas
  creating at once, the API server lets one win; the other gets 409 AlreadyExists, which is
  success too. The controller's other work never waits for it.
- It only ever creates: an existing Secret is left as it is, whatever it holds (an operator's
  own key, a rotation in progress). A create is also the only request, so the controller needs
  no permission to read Secrets, and never sees the key once it has sent it.
- API errors (no permission yet, the API server away) are logged and retried with backoff
  until it succeeds or the controller stops.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import threading

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from leifur.kube.backoff import Backoff
from leifur.kube.client import describe_error, request
from leifur.model import names

log = logging.getLogger(__name__)

# A Secret's name is a DNS subdomain (RFC 1123).
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def valid_name(name: str) -> bool:
    """Whether the API server would accept `name` as a Secret's name."""
    return len(name) <= 253 and _NAME.fullmatch(name) is not None


# -- the pure part: what is created ---------------------------------------------------------


def secret_body(name: str, key: bytes) -> dict[str, object]:
    """The Secret to create: `key` as its `current` key, nothing else (no previous or next yet)."""
    if len(key) < names.HEARTBEAT_KEY_BYTES:
        raise ValueError(f"a heartbeat key needs at least {names.HEARTBEAT_KEY_BYTES} bytes, got {len(key)}")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "leifur"}},
        "type": "Opaque",
        "data": {names.HEARTBEAT_KEY_CURRENT: base64.b64encode(key).decode("ascii")},
    }


# -- the effect: create it if missing, retrying ---------------------------------------------


def create_if_missing(api_client: client.ApiClient, namespace: str, name: str, timeout: float = 10.0) -> bool:
    """One attempt: True if the Secret was created now, False if it existed; ApiException or a
    connection error otherwise."""
    body = secret_body(name, os.urandom(names.HEARTBEAT_KEY_BYTES))
    try:
        request(api_client, "POST", f"/api/v1/namespaces/{namespace}/secrets", body=body, timeout=timeout)
    except ApiException as e:
        if e.status == 409:  # AlreadyExists: someone made it (an operator, another replica)
            return False
        raise
    return True


def ensure(api_client: client.ApiClient, namespace: str, name: str, stop: threading.Event,
           backoff: Backoff | None = None) -> bool:
    """Create the Secret unless it exists, retrying until done or `stop` is set; whether it was done."""
    backoff = backoff or Backoff(0.5, 30.0, jitter=0.2)
    where = f"{namespace}/{name}"
    while not stop.is_set():
        try:
            created = create_if_missing(api_client, namespace, name)
        except Exception as e:  # an API error or the connection: all worth another try
            wait = backoff.next()
            log.warning("heartbeat key Secret %s: could not create it (%s); the agents wait for it; "
                        "retrying in %.1fs", where, describe_error(e), wait)
            stop.wait(wait)
            continue
        if created:
            log.info("heartbeat key Secret %s was missing: created it with a new random key", where)
        else:
            log.info("heartbeat key Secret %s exists: left as it is", where)
        return True
    return False


def start(api_client: client.ApiClient, namespace: str, name: str, stop: threading.Event) -> threading.Thread:
    """`ensure` in a daemon thread, so that nothing else waits for it."""
    t = threading.Thread(target=ensure, args=(api_client, namespace, name, stop), name="heartbeat-secret",
                         daemon=True)
    t.start()
    return t
