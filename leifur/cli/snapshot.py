"""What `leifurctl status` and `explain` read from the cluster: one LIST of each kind, as plain dicts.

Only reads. Services and pools are required; for the rest (advertisements, agents' records,
Nodes, EndpointSlices, Events) a missing permission or CRD is noted in the report and the
report is made without them. BGP mode's kinds not being served means no BGP, without a note.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from leifur.kube import client as kube_client
from leifur.kube.client import load_client
from leifur.model import names

_TIMEOUT = (5.0, 30.0)
_LEIFUR = f"/apis/{names.API_VERSION}"


class CtlError(RuntimeError):
    """Something leifurctl cannot do; the message is for the operator (printed, exit 1)."""


@dataclass
class Snapshot:
    services: list[dict] = field(default_factory=list)
    namespaces: list[dict] = field(default_factory=list)
    pools: list[dict] = field(default_factory=list)
    advertisements: list[dict] = field(default_factory=list)
    peers: list[dict] = field(default_factory=list)  # BGP mode: BGPPeer, BGPAdvertisement, BFDProfile
    bgp_advertisements: list[dict] = field(default_factory=list)
    bfd_profiles: list[dict] = field(default_factory=list)
    node_statuses: list[dict] = field(default_factory=list)  # L2NodeStatus: what each node's agent announces
    nodes: list[dict] = field(default_factory=list)
    endpoint_slices: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)  # only for explain: the Service's
    notes: list[str] = field(default_factory=list)  # what could not be read

    def service(self, namespace: str, name: str) -> dict | None:
        return next((s for s in self.services if s["metadata"].get("namespace") == namespace
                     and s["metadata"]["name"] == name), None)

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        ns = next((n for n in self.namespaces if n["metadata"]["name"] == namespace), None)
        return dict(((ns or {}).get("metadata") or {}).get("labels") or {})


def resolve_kubeconfig(flag: str | None) -> str | None:
    """--kubeconfig, else $KUBECONFIG, else ~/.kube/config; None means in-cluster (inside a Pod)."""
    chosen = flag or os.environ.get("KUBECONFIG") or None
    if chosen:
        paths = [p for p in chosen.split(os.pathsep) if p]
        if not any(Path(p).expanduser().is_file() for p in paths):
            raise CtlError(f"kubeconfig {chosen} does not exist")
        return chosen
    default = Path("~/.kube/config").expanduser()
    if default.is_file():
        return str(default)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    raise CtlError("no kubeconfig: pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config")


def connect(kubeconfig: str | None, context: str | None = None) -> client.ApiClient:
    path = resolve_kubeconfig(kubeconfig)
    try:
        if path is None:
            return load_client(None)
        return config.new_client_from_config(config_file=path, context=context)
    except (ConfigException, OSError, ValueError) as e:
        raise CtlError(f"cannot use kubeconfig {path}: {e}") from None


def list_all(api: client.ApiClient, path: str, query: list[tuple[str, Any]] | None = None) -> list[dict]:
    """Every item of a LIST, page by page."""
    return kube_client.list_all(api, path, query=query, timeout=_TIMEOUT)


class _Reader:
    def __init__(self, api: client.ApiClient, snap: Snapshot) -> None:
        self.api = api
        self.snap = snap

    def list(self, what: str, path: str, *, required: bool = False, optional_kind: bool = False,
             query: list[tuple[str, Any]] | None = None) -> list[dict]:
        """`optional_kind`: a kind an installation may lack (BGP mode's): not served means none, no note."""
        try:
            return list_all(self.api, path, query)
        except ApiException as e:
            if e.status == 404 and optional_kind:
                return []
            if e.status == 404 and path.startswith(_LEIFUR):
                problem = (f"the API server does not serve {what}: are Leifur's CRDs installed "
                           "(kubectl apply -k deploy/)?")
            elif e.status in (401, 403):
                problem = f"not allowed to list {what} ({e.status} {e.reason}): leifurctl needs get and list on them"
            else:
                problem = f"listing {what} failed: {e.status} {e.reason}"
            if required:
                raise CtlError(problem) from None
            self.snap.notes.append(f"{problem}; the report is made without them")
            return []
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise CtlError(f"cannot reach the API server at {self.api.configuration.host}: {e}") from None


def fetch(api: client.ApiClient, event_for: tuple[str, str] | None = None, pools_required: bool = True) -> Snapshot:
    """Everything status and explain look at; with `event_for` (namespace, name), that Service's Events too.
    `pools_required=False`: without Leifur's CRDs (migrate check, before installing), a note instead of an error."""
    snap = Snapshot()
    r = _Reader(api, snap)
    snap.pools = r.list("IPAddressPools", f"{_LEIFUR}/{names.POOLS}", required=pools_required)
    snap.services = r.list("Services", "/api/v1/services", required=True)
    snap.namespaces = r.list("Namespaces", "/api/v1/namespaces")
    snap.advertisements = r.list("L2Advertisements", f"{_LEIFUR}/{names.L2ADVERTISEMENTS}")
    snap.peers = r.list("BGPPeers", f"{_LEIFUR}/{names.BGPPEERS}", optional_kind=True)
    snap.bgp_advertisements = r.list("BGPAdvertisements", f"{_LEIFUR}/{names.BGPADVERTISEMENTS}", optional_kind=True)
    snap.bfd_profiles = r.list("BFDProfiles", f"{_LEIFUR}/{names.BFDPROFILES}", optional_kind=True)
    snap.node_statuses = r.list("L2NodeStatuses (the agents' records)", f"{_LEIFUR}/{names.L2NODESTATUSES}")
    snap.nodes = r.list("Nodes", "/api/v1/nodes")
    snap.endpoint_slices = r.list("EndpointSlices", "/apis/discovery.k8s.io/v1/endpointslices")
    if event_for is not None:
        namespace, name = event_for
        snap.events = r.list("Events", f"/api/v1/namespaces/{namespace}/events", query=[
            ("fieldSelector", f"involvedObject.kind=Service,involvedObject.name={name}")])
    return snap
