"""FRR's configuration for one node's BGP intent (pure: text in, text out; FRR 8.4's syntax).

The agent only advertises. Every neighbour gets the inbound route-map `leifur-deny`, so no route
is accepted from a peer and none is installed. The routes are `network` statements with
`no bgp network import-check` (a Service IP is not in the node's table); which peer gets which
prefix, and with which communities and local preference, is each peer's outbound route-map
`leifur-out-<peer>`: one entry per set of attributes, matching a prefix-list of the prefixes that
carry them (so a thousand Services with the same attributes are one route-map entry).

Every session carries both address families (multiprotocol BGP, RFC 4760), activated from the
start whatever the routes: a dual-stack Service reaches a router over its one session, and the
first IPv6 route does not reset a session to negotiate the family. A prefix's next hop is the
node's address of that family on the interface towards the peer.

Everything that reaches the text is checked here, because one line FRR refuses makes frr-reload
refuse the whole file: a session that cannot be written is left out, a BFD profile or a
community that cannot is dropped, and each is returned as a problem to report.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from leifur.announce.bgp_intent import BFD, NodeIntent, Route, Session

DENY = "leifur-deny"
# Seconds bgpd waits after a route-map or prefix-list change before it re-evaluates what each
# peer gets (its default is 5; 0 would never re-evaluate): how long a change of a route's
# communities or peers takes. A route added or removed (a `network` line) goes at once.
ROUTE_MAP_DELAY_S = 1
# Seconds between attempts to open a session that is down (FRR's default is 120: a restarted
# router would wait up to two minutes for our routes).
CONNECT_RETRY_S = 5

_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")  # a Kubernetes object name
# TCP MD5 keys are at most 80 bytes; FRR takes a password as one word.
_PASSWORD = re.compile(r"[!-~]{1,80}")
_U16, _U32 = 0xFFFF, 0xFFFFFFFF


@dataclass(frozen=True)
class Problem:
    """Something of the intent not written into the configuration, and why."""

    peer: str | None  # the BGPPeer's name; None for the node as a whole
    message: str


@dataclass(frozen=True)
class Rendered:
    text: str
    problems: tuple[Problem, ...] = ()

    def configured(self, intent: NodeIntent) -> tuple[Session, ...]:
        """The intent's sessions that are in the text (those without a problem of their own)."""
        left_out = {p.peer for p in self.problems if p.message.startswith(_LEFT_OUT)}
        return tuple(s for s in intent.sessions if s.peer not in left_out)


_LEFT_OUT = "session not configured: "


def withdrawal(intent: NodeIntent) -> list[str]:
    """vtysh commands that withdraw every route of `intent` at once and keep the sessions: a
    deny-all entry ahead of each outbound route-map. A stopping agent uses them instead of
    reloading a configuration without the routes, because frr-reload diffs the whole file (more
    than 30 s at 1,000 routes, longer than a Pod's grace period). The entry is not in the file,
    so the next agent's first apply removes it."""
    return ["configure terminal",
            *(line for peer, routes in sorted(intent.routes.items()) if routes and _NAME.fullmatch(peer)
              for line in (f"route-map leifur-out-{peer} deny 1", "exit")),
            "end"]


def render(intent: NodeIntent, passwords: Mapping[str, str]) -> Rendered:
    """The whole configuration for `intent`; `passwords` are by BGPPeer name, read from the
    sessions' Secrets (a session whose Secret is missing has none and is left out)."""
    problems: list[Problem] = []
    sessions = _usable_sessions(intent.sessions, passwords, problems)
    router_asn = _router_asn(sessions)
    sessions = _fit_asn(sessions, router_asn, problems)
    profiles = _profiles(sessions, problems)
    out: list[str] = ["! Written by leifur-agent: changes made here are undone at its next sync.", "!"]
    if profiles:
        out += ["bfd"]
        for profile in profiles:
            out += _bfd_profile(profile)
        out += ["exit", "!"]
    out += [f"bgp route-map delay-timer {ROUTE_MAP_DELAY_S}", "!", f"route-map {DENY} deny 10", "exit", "!"]
    networks: dict[int, set[str]] = {4: set(), 6: set()}
    with_routes = set()
    for s in sessions:
        routes = _routes_for(s, intent.routes.get(s.peer, ()), problems)
        if routes:
            with_routes.add(s.peer)
            for r in routes:
                networks[ipaddress.ip_network(r.prefix).version].add(r.prefix)
            out += _outbound_policy(s.peer, routes)
    if sessions:
        out += _router(intent.router_id, router_asn, sessions, passwords, {p.name for p in profiles}, networks,
                       with_routes, problems)
    return Rendered("\n".join(out) + "\n", tuple(problems))


def _usable_sessions(sessions: Iterable[Session], passwords: Mapping[str, str],
                     problems: list[Problem]) -> list[Session]:
    usable: list[Session] = []
    addresses: dict[str, str] = {}
    for s in sorted(sessions, key=lambda s: s.peer):
        why = _session_problem(s, passwords)
        if why is None:
            address = str(ipaddress.ip_address(s.address))
            if address in addresses:
                why = f"peer {addresses[address]} has the same address {address}"
            addresses.setdefault(address, s.peer)
        if why is not None:
            problems.append(Problem(s.peer, _LEFT_OUT + why))
        else:
            usable.append(s)
    return usable


def _session_problem(s: Session, passwords: Mapping[str, str]) -> str | None:
    if not _NAME.fullmatch(s.peer):
        return f"{s.peer!r} is not an object name"
    try:
        address = ipaddress.ip_address(s.address)
    except ValueError:
        return f"{s.address!r} is not an IP address"
    if not (1 <= s.my_asn <= _U32 and 1 <= s.peer_asn <= _U32):
        return f"an ASN ({s.my_asn}, {s.peer_asn}) is out of 1..{_U32}"
    if not 1 <= s.port <= _U16:
        return f"port {s.port} is out of 1..{_U16}"
    if not (s.hold_time_s == 0 or 3 <= s.hold_time_s <= _U16) or not 0 <= s.keepalive_time_s <= _U16:
        return f"hold time {s.hold_time_s} s or keepalive {s.keepalive_time_s} s out of range"
    if s.source_address is not None:
        try:
            source = ipaddress.ip_address(s.source_address)
        except ValueError:
            return f"source address {s.source_address!r} is not an IP address"
        if source.version != address.version:
            return f"source address {source} and peer address {address} are of different families"
    if s.password_secret is not None:
        password = passwords.get(s.peer)
        secret = f"{s.password_secret.namespace}/{s.password_secret.name}"
        if password is None:
            return f"no password: Secret {secret}, or its key password, is missing or cannot be read"
        if not _PASSWORD.fullmatch(password):
            return f"the password in Secret {secret} is not 1 to 80 printable ASCII characters without spaces"
    return None


def _router_asn(sessions: list[Session]) -> int:
    """Our ASN: the one most sessions use (the smallest of a tie)."""
    counts = Counter(s.my_asn for s in sessions)
    return min(counts, key=lambda asn: (-counts[asn], asn)) if counts else 0


def _fit_asn(sessions: list[Session], router_asn: int, problems: list[Problem]) -> list[Session]:
    """One bgpd speaks as one ASN; an eBGP session from another of ours presents it with
    `local-as` instead. An iBGP session cannot, so it is left out."""
    fitting = []
    for s in sessions:
        if s.my_asn != router_asn and s.peer_asn in (s.my_asn, router_asn):
            problems.append(Problem(s.peer, _LEFT_OUT + f"its ASN {s.my_asn} differs from {router_asn}, which the "
                                    "node's other sessions use, and an iBGP session cannot present another ASN"))
        else:
            fitting.append(s)
    return fitting


def _profiles(sessions: list[Session], problems: list[Problem]) -> list[BFD]:
    """The BFD profiles the sessions use that FRR accepts (by name; the first of a name wins)."""
    out: dict[str, BFD] = {}
    for s in sessions:
        if s.bfd is None or s.bfd.name in out:
            continue
        why = _bfd_problem(s.bfd)
        if why is None:
            out[s.bfd.name] = s.bfd
        else:
            problems.append(Problem(s.peer, f"BFD profile {s.bfd.name!r} not used: {why}"))
    return [out[name] for name in sorted(out)]


def _bfd_problem(b: BFD) -> str | None:
    if not _NAME.fullmatch(b.name) or len(b.name) > 63:
        return "not a name FRR takes (at most 63 characters)"
    checks = (("receiveInterval", b.receive_interval_ms, 10, 60000),
              ("transmitInterval", b.transmit_interval_ms, 10, 60000),
              ("detectMultiplier", b.detect_multiplier, 2, 255),
              ("echoInterval", b.echo_interval_ms, 10, 60000),
              ("minimumTtl", b.minimum_ttl, 1, 254))
    for field, value, low, high in checks:
        if not low <= value <= high:
            return f"{field} {value} is out of {low}..{high}"
    return None


def _bfd_profile(b: BFD) -> list[str]:
    # Every value, bfdd's defaults too: frr-reload cannot take a value back to its default by
    # deleting the line (bfdd refuses `no detect-multiplier 4`), only by setting it.
    lines = [f" profile {b.name}", f"  detect-multiplier {b.detect_multiplier}",
             f"  receive-interval {b.receive_interval_ms}", f"  transmit-interval {b.transmit_interval_ms}",
             f"  echo receive-interval {b.echo_interval_ms}", f"  echo transmit-interval {b.echo_interval_ms}",
             f"  minimum-ttl {b.minimum_ttl}"]
    if b.echo_mode:
        lines.append("  echo-mode")
    if b.passive_mode:
        lines.append("  passive-mode")
    return [*lines, " exit", " !"]


_STANDARD = re.compile(r"(\d{1,5}):(\d{1,5})")
_LARGE = re.compile(r"(\d{1,10}):(\d{1,10}):(\d{1,10})")


def _routes_for(s: Session, routes: Iterable[Route], problems: list[Problem]) -> list[Route]:
    """The peer's valid routes, each prefix once (sorted: IPv4 first)."""
    out: dict[str, Route] = {}
    for r in routes:
        try:
            net = ipaddress.ip_network(r.prefix)
        except ValueError:
            problems.append(Problem(s.peer, f"route {r.prefix!r} not advertised: not a prefix"))
            continue
        communities = _valid(s.peer, r.communities, _STANDARD, _U16, "community", problems)
        large = _valid(s.peer, r.large_communities, _LARGE, _U32, "large community", problems)
        preference = r.local_preference
        if preference is not None and not 0 <= preference <= _U32:
            problems.append(Problem(s.peer, f"local preference {preference} of {net} out of 0..{_U32}: not set"))
            preference = None
        out[str(net)] = Route(str(net), communities, large, preference)
    return [out[p] for p in sorted(out, key=_prefix_order)]


def _prefix_order(prefix: str) -> tuple[int, ipaddress.IPv4Network | ipaddress.IPv6Network]:
    net = ipaddress.ip_network(prefix)
    return net.version, net


def _valid(peer: str, values: Iterable[str], form: re.Pattern[str], limit: int, kind: str,
           problems: list[Problem]) -> tuple[str, ...]:
    ok = set()
    for v in values:
        m = form.fullmatch(v)
        if m and all(int(part) <= limit for part in m.groups()):
            ok.add(":".join(str(int(part)) for part in m.groups()))
        else:
            problems.append(Problem(peer, f"{kind} {v!r} not set: not {form.pattern} with numbers up to {limit}"))
    return tuple(sorted(ok))


def _outbound_policy(peer: str, routes: list[Route]) -> list[str]:
    """`leifur-out-<peer>`: a permit entry per family and set of attributes, each matching its
    prefix-list; whatever matches none is denied."""
    groups: dict[tuple[int, tuple[str, ...], tuple[str, ...], int], list[str]] = {}
    for r in routes:
        version: int = ipaddress.ip_network(r.prefix).version
        preference = -1 if r.local_preference is None else r.local_preference
        groups.setdefault((version, r.communities, r.large_communities, preference), []).append(r.prefix)
    lines: list[str] = []
    entries: list[str] = []
    for n, ((version, communities, large, preference), prefixes) in enumerate(sorted(groups.items()), start=1):
        ip, name = "ip" if version == 4 else "ipv6", f"leifur-{peer}-{n}"
        lines += [f"{ip} prefix-list {name} seq {seq} permit {p}" for seq, p in enumerate(prefixes, start=1)]
        entries += [f"route-map leifur-out-{peer} permit {10 * n}", f" match {ip} address prefix-list {name}"]
        if communities:
            entries.append(f" set community {' '.join(communities)}")
        if large:
            entries.append(f" set large-community {' '.join(large)}")
        if preference >= 0:
            entries.append(f" set local-preference {preference}")
        entries.append("exit")
    return [*lines, "!", *entries, "!"]


def _router(router_id: str, asn: int, sessions: list[Session], passwords: Mapping[str, str],
            profiles: set[str], networks: Mapping[int, set[str]], with_routes: set[str],
            problems: list[Problem]) -> list[str]:
    lines = [f"router bgp {asn}"]
    if router_id:
        try:
            lines.append(f" bgp router-id {ipaddress.IPv4Address(router_id)}")
        except ValueError:
            problems.append(Problem(None, f"router ID {router_id!r} is not an IPv4 address: the daemon chooses one"))
    lines += [" no bgp default ipv4-unicast", " no bgp network import-check"]
    for s in sessions:
        lines += _neighbor(s, asn, passwords, profiles)
    for version, family in ((4, "ipv4"), (6, "ipv6")):
        lines += [" !", f" address-family {family} unicast"]
        lines += [f"  network {p}" for p in sorted(networks[version], key=ipaddress.ip_network)]
        for s in sessions:
            address = ipaddress.ip_address(s.address)
            out = f"leifur-out-{s.peer}" if s.peer in with_routes else DENY
            lines += [f"  neighbor {address} activate", f"  neighbor {address} route-map {DENY} in",
                      f"  neighbor {address} route-map {out} out"]
        lines.append(" exit-address-family")
    return [*lines, "exit", "!"]


def _neighbor(s: Session, router_asn: int, passwords: Mapping[str, str], profiles: set[str]) -> list[str]:
    n = f" neighbor {ipaddress.ip_address(s.address)}"
    lines = [f"{n} remote-as {s.peer_asn}"]
    if s.my_asn != router_asn:
        lines.append(f"{n} local-as {s.my_asn} no-prepend replace-as")
    if s.port != 179:
        lines.append(f"{n} port {s.port}")
    lines += [f"{n} timers {s.keepalive_time_s} {s.hold_time_s}", f"{n} timers connect {CONNECT_RETRY_S}"]
    if s.password_secret is not None:
        lines.append(f"{n} password {passwords[s.peer]}")
    if s.ebgp_multihop and s.peer_asn != s.my_asn:
        lines.append(f"{n} ebgp-multihop")
    if s.source_address is not None:
        lines.append(f"{n} update-source {ipaddress.ip_address(s.source_address)}")
    if s.bfd is not None and s.bfd.name in profiles:
        # FRR adds the first line itself; without it here, a reload would delete it (BFD off) first.
        lines += [f"{n} bfd", f"{n} bfd profile {s.bfd.name}"]
    return lines


def _managed(context: str) -> bool:
    """The top-level contexts this module writes; frr-reload deletes whichever of them the text lacks."""
    return (context == "bfd" or re.fullmatch(r"router bgp \d+", context) is not None
            or context.startswith("bgp route-map delay-timer")
            or context.startswith(("route-map leifur-", "ip prefix-list leifur-", "ipv6 prefix-list leifur-")))


def keep_unmanaged(text: str, running: str) -> str:
    """`text` with the contexts of the running configuration it does not manage put back first.

    frr-reload makes the daemons' configuration equal to the file, and deleting a line can do
    more than undo it: deleting zebra's `no ipv6 forwarding` turns forwarding on. What the node's
    operator or zebra configured (hostname, logging, forwarding, interfaces, other route-maps)
    therefore goes into the file as it runs."""
    kept: list[str] = []
    context: list[str] = []
    for line in running.splitlines():
        if not line.strip() or line.startswith("!") or line in ("end", "Building configuration...",
                                                                  "Current configuration:"):
            continue
        if line[0] != " " and line != "exit":
            if context and not _managed(context[0]):
                kept += context
            context = []
        context.append(line)
    if context and not _managed(context[0]):
        kept += context
    return "\n".join([*kept, "!", text]) if kept else text
