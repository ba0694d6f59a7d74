"""The agent's informers: the cluster it decides from, kept by watches (no polling)."""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

from leifur.announce import as_read, plan
from leifur.announce.bgp_intent import SecretRef
from leifur.kube.informer import Informer
from leifur.model import names


class Caches:
    """Services, EndpointSlices, Nodes, pools, advertisements, and every node's record; in BGP
    mode also the BGP objects and the Secrets holding the peers' passwords."""

    def __init__(self, api_client: client.ApiClient, node: str, on_change: Callable[[], None], *,
                 bgp: bool = False) -> None:
        self.api_client = api_client
        self.node = node
        self._on_change = on_change
        # Of Services and EndpointSlices, the parts the decisions read.
        self.services = Informer(api_client, "/api/v1/services", "services", keep=as_read.service)
        self.slices = Informer(api_client, "/apis/discovery.k8s.io/v1/endpointslices", "endpointslices",
                               keep=as_read.endpoint_slice)
        self.nodes = Informer(api_client, "/api/v1/nodes", "nodes")
        self.pools = Informer(api_client, f"/apis/{names.API_VERSION}/{names.POOLS}", names.POOLS)
        self.ads = Informer(api_client, f"/apis/{names.API_VERSION}/{names.L2ADVERTISEMENTS}", names.L2ADVERTISEMENTS)
        # Every node's record: ours, to write it again should it disappear; the others', for the IPs
        # our nodes announce (never probed again) and our nodes' MACs (a handover, not a conflict).
        self.record = Informer(api_client, f"/apis/{names.API_VERSION}/{names.L2NODESTATUSES}", names.L2NODESTATUSES,
                               keep=as_read.record)
        self.all: tuple[Informer, ...] = (self.services, self.slices, self.nodes, self.pools, self.ads, self.record)
        # BGP mode only: a layer 2 agent neither watches these nor needs the right to.
        self.bgp: list[Informer] = []
        if bgp:
            self.bgp = [Informer(api_client, f"/apis/{names.API_VERSION}/{plural}", plural)
                        for plural in (names.BGPPEERS, names.BGPADVERTISEMENTS, names.BFDPROFILES)]
            self.all += tuple(self.bgp)
        # Namespace -> its Secrets of type basic-auth, watched once a BGPPeer names a Secret there,
        # and since when (monotonic).
        self._secrets: dict[str, Informer] = {}
        self._secrets_since: dict[str, float] = {}
        self._stopped = False
        # Counts the changes of what the decisions are made from (not the records): equal counts,
        # equal cluster(), so a sync may reuse its last decisions (at thousands of Services they
        # are most of a sync's CPU, and most syncs are the periodic resync with nothing changed).
        self._changes = itertools.count(1)
        self.generation = 0
        for inf in self.all:
            self._notify(inf, on_change if inf is self.record else self._decision_input_changed(on_change))

    @staticmethod
    def _notify(inf: Informer, changed: Callable[[], None]) -> None:
        inf.add_handler(lambda _o: changed(), lambda _o, _n: changed(), lambda _o: changed())

    def _decision_input_changed(self, on_change: Callable[[], None]) -> Callable[[], None]:
        def changed() -> None:
            self.generation = next(self._changes)  # next() on a count is atomic under the GIL
            on_change()
        return changed

    def start(self) -> None:
        for inf in self.all:
            inf.start()

    def stop(self) -> None:
        self._stopped = True
        for inf in (*self.all, *self._secrets.values()):
            inf.stop()

    def synced(self) -> bool:
        return all(inf.has_synced() for inf in self.all)

    def cluster(self) -> plan.Cluster:
        """The objects as the informers hold them, not copies: the agent only reads them (the
        decisions are pure functions of them). Read `generation` before: a change during the read
        then shows as a new generation at the next sync."""
        if not self.bgp:
            return plan.Cluster(self.services.shared(), self.slices.shared(), self.nodes.shared(),
                                self.pools.shared(), self.ads.shared())
        peers, ads, bfd = self.bgp
        return plan.Cluster(self.services.shared(), self.slices.shared(), self.nodes.shared(),
                            self.pools.shared(), self.ads.shared(), peers.shared(), ads.shared(), bfd.shared())

    def watch_secrets(self, namespaces: set[str], patience: float) -> bool:
        """Watch the basic-auth Secrets of these namespaces (from now on); True once each is synced
        or has not synced for `patience` seconds: the agent may read Secrets only in Leifur's
        namespace (RBAC), and a Secret elsewhere must not hold back every other session."""
        for ns in sorted(namespaces - self._secrets.keys()):
            if self._stopped:
                return False
            inf = Informer(self.api_client, f"/api/v1/namespaces/{ns}/secrets", f"secrets/{ns}",
                           field_selector="type=kubernetes.io/basic-auth")
            self._notify(inf, self._decision_input_changed(self._on_change))
            self._secrets[ns], self._secrets_since[ns] = inf, time.monotonic()
            inf.start()
        now = time.monotonic()
        return all(self._secrets[ns].has_synced() or now - self._secrets_since[ns] >= patience for ns in namespaces)

    def password(self, ref: SecretRef) -> str | None:
        """Key `password` of the Secret, decoded; None if it (or its namespace's watch) is missing."""
        inf = self._secrets.get(ref.namespace)
        secret = inf.get(f"{ref.namespace}/{ref.name}") if inf else None
        encoded = ((secret or {}).get("data") or {}).get("password")
        if not isinstance(encoded, str):
            return None
        try:
            return base64.b64decode(encoded, validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return None

    def recorded_ips(self) -> frozenset[str]:
        """Every IP any node's record says it announces."""
        return frozenset(a.get("ip") for r in self.record.shared()
                         for a in (r.get("status") or {}).get("announcements") or [] if a.get("ip"))

    def peer_macs(self) -> frozenset[bytes]:
        """The MACs every other node's record lists (malformed entries skipped)."""
        out = set()
        for r in self.record.shared():
            if r["metadata"]["name"] == self.node:
                continue
            for mac in (r.get("status") or {}).get("macs") or []:
                try:
                    raw = bytes.fromhex(str(mac).replace(":", ""))
                except ValueError:
                    continue
                if len(raw) == 6:
                    out.add(raw)
        return frozenset(out)

    def node_uid(self) -> str | None:
        obj = self.nodes.get(self.node)
        return obj["metadata"].get("uid") if obj else None

    def peer_addresses(self) -> dict[str, str]:
        """Node name -> first InternalIP of every other Node: where its agent listens for heartbeats."""
        return peer_addresses(self.nodes.objects(), self.node)


def peer_addresses(nodes: list[dict[str, Any]], me: str) -> dict[str, str]:
    """Node name -> first InternalIP of every Node but `me`."""
    out = {}
    for n in nodes:
        if n["metadata"]["name"] == me:
            continue
        addrs = (n.get("status") or {}).get("addresses") or []
        internal = [a.get("address") for a in addrs if a.get("type") == "InternalIP" and a.get("address")]
        if internal:
            out[n["metadata"]["name"]] = internal[0]
    return out
