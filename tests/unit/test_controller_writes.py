"""ServiceWriter's one write per new Service, on API servers that keep metadata written to a
Service's /status (as today's do: tests/integration/test_service_writes.py) and on ones that
drop it: the finalizer is never later than the IP, and the writer learns which it talks to."""

from __future__ import annotations

import copy

import pytest

from leifur.controller import writes
from leifur.model import names

FIN = names.SERVICE_FINALIZER
POOL = names.ANN_ALLOCATED_FROM_POOL


class Server:
    """One Service, patched as the API server merges: `keeps` says whether /status takes metadata."""

    def __init__(self, keeps: bool) -> None:
        self.keeps = keeps
        self.obj: dict = {"metadata": {"name": "a", "namespace": "ns", "resourceVersion": "1"}, "status": {}}
        self.calls: list[str] = []
        self.versions: list[dict] = []

    def patch(self, _api_client, path: str, body: dict) -> dict:
        on_status = path.endswith("/status")
        self.calls.append("status" if on_status and "status" in body else "metadata" if not on_status
                          else "metadata via status")
        meta = self.obj["metadata"]
        if not on_status or self.keeps:
            if "finalizers" in body["metadata"]:
                meta["finalizers"] = body["metadata"]["finalizers"]
            merged = {**meta.get("annotations", {}), **body["metadata"].get("annotations", {})}
            meta["annotations"] = {k: v for k, v in merged.items() if v is not None}
        if on_status and "status" in body:
            self.obj["status"] = body["status"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        self.versions.append(copy.deepcopy(self.obj))
        return copy.deepcopy(self.obj)


def ip_without_finalizer(version: dict) -> bool:
    ingress = (version["status"].get("loadBalancer") or {}).get("ingress")
    return bool(ingress) and FIN not in (version["metadata"].get("finalizers") or [])


def allocate(writer: writes.ServiceWriter, server: Server) -> None:
    writer.patch_status(copy.deepcopy(server.obj), [{"ip": "192.0.2.10"}], [], [FIN], {POOL: "lan"})


@pytest.mark.parametrize(("keeps", "learned", "first", "next_"), [
    # Learned on the first Service with a write that shows no IP; one write each from then on.
    pytest.param(True, True, ["metadata via status", "status"], ["status"], id="keeps-metadata"),
    # The metadata write through /status changes nothing: it goes to the Service itself, and
    # from then on always first.
    pytest.param(False, False, ["metadata via status", "metadata", "status"], ["metadata", "status"],
                 id="drops-metadata"),
])
def test_the_finalizer_is_never_later_than_the_ip(monkeypatch, keeps, learned, first, next_):
    server = Server(keeps)
    monkeypatch.setattr(writes, "_patch", server.patch)
    writer = writes.ServiceWriter(api_client=None)  # type: ignore[arg-type]

    allocate(writer, server)
    assert (server.calls, writer.status_keeps_metadata) == (first, learned)
    server.calls.clear()
    server.obj["metadata"].pop("finalizers")  # another new Service
    allocate(writer, server)
    assert server.calls == next_
    assert not any(ip_without_finalizer(v) for v in server.versions)
    assert server.obj["metadata"]["annotations"] == {POOL: "lan"}


def test_an_api_server_that_stops_keeping_metadata_gets_the_finalizer_at_once_and_for_good(monkeypatch):
    server = Server(keeps=False)  # e.g. upgraded since the writer learned otherwise
    monkeypatch.setattr(writes, "_patch", server.patch)
    writer = writes.ServiceWriter(api_client=None)  # type: ignore[arg-type]
    writer.status_keeps_metadata = True

    allocate(writer, server)
    assert server.calls == ["status", "metadata"]
    assert FIN in server.obj["metadata"]["finalizers"] and writer.status_keeps_metadata is False
