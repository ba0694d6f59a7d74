"""What an idle leifur-controller process loads: the heavy modules it does without stay out
(issue 16: each is megabytes of resident memory before the first Service)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys

# Built and wired as main() does, without starting: nothing here reaches an API server.
_PROBE = """
import json, sys
from kubernetes import client
from leifur.controller import main
from leifur.controller.app import Controller
from leifur.kube import certificate
api = client.ApiClient(client.Configuration(host="https://192.0.2.1:6443"))
Controller(api, "probe")
certificate.ServingCertificate(None, ["probe"])  # self-signed, as without --metrics-cert-dir
print(json.dumps(sorted(sys.modules)))
"""


@functools.cache
def loaded() -> list[str]:
    out = subprocess.run([sys.executable, "-c", _PROBE], check=True, capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.splitlines()[-1])


def test_the_controller_does_without_the_typed_kubernetes_models():
    """The typed CoreV1Api loads some 250 model classes (about 20 MB); the writes are plain JSON."""
    modules = loaded()
    assert not [m for m in modules if m.startswith(("kubernetes.client.models.", "kubernetes.client.api."))]


def test_the_self_signed_certificate_is_made_without_loading_cryptography_here():
    """cryptography keeps some 10 MB resident; a child process makes the certificate."""
    assert not [m for m in loaded() if m.split(".")[0] == "cryptography"]
