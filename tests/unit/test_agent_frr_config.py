"""FRR's configuration from a node's BGP intent (leifur.agent.frr_config): a table of cases, one per row,
each naming the lines the text must hold, those it must not, and the problems reported. Pure.
That FRR 8.4 accepts each case's text is tests/netns/test_frr_driver.py's job."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from leifur.agent.frr_config import DENY, Problem, render, withdrawal
from leifur.announce.bgp_intent import BFD, NodeIntent, Route, SecretRef, Session

R1 = Session("r1", "192.0.2.254", peer_asn=64513, my_asn=64512)
R6 = Session("r6", "2001:db8::fe", peer_asn=64513, my_asn=64512)
IBGP = Session("core", "198.51.100.1", peer_asn=64512, my_asn=64512)
SECRET = SecretRef("kube-system", "r1-password")
FAST = BFD("fast", receive_interval_ms=100, transmit_interval_ms=100, detect_multiplier=3)
HOST = Route("203.0.113.10/32")
HOST6 = Route("2001:db8:5::10/128")


def intent(*sessions: Session, routes: dict[str, tuple[Route, ...]] | None = None, router_id: str = "") -> NodeIntent:
    return NodeIntent(router_id, tuple(sessions), routes or {})


def with_(s: Session, **changes: object) -> Session:
    return Session(**{**s.__dict__, **changes})  # type: ignore[arg-type]


@dataclass(frozen=True)
class Case:
    name: str
    intent: NodeIntent
    has: tuple[str, ...] = ()  # lines the text holds (stripped), each somewhere
    lacks: tuple[str, ...] = ()  # words no line of the text holds
    problems: tuple[Problem, ...] = ()
    passwords: dict[str, str] = field(default_factory=dict)
    ordered: tuple[str, ...] = ()  # lines that appear in this order


CASES = [
    Case("empty intent: no router, and nothing to advertise",
         intent(), has=(f"route-map {DENY} deny 10", "bgp route-map delay-timer 1"),
         lacks=("router bgp", "network 2", "neighbor", "bfd")),
    Case("eBGP session, nothing advertised: everything denied both ways, in both families",
         intent(R1),
         has=("router bgp 64512", "neighbor 192.0.2.254 remote-as 64513", "no bgp default ipv4-unicast",
              "no bgp network import-check", "neighbor 192.0.2.254 timers 30 90",
              "neighbor 192.0.2.254 timers connect 5", "neighbor 192.0.2.254 activate",
              f"neighbor 192.0.2.254 route-map {DENY} in", f"neighbor 192.0.2.254 route-map {DENY} out"),
         lacks=("network 2", "prefix-list", " port ", "password", "ebgp-multihop", "update-source", "bgp router-id"),
         ordered=("address-family ipv4 unicast", "neighbor 192.0.2.254 activate",
                  f"neighbor 192.0.2.254 route-map {DENY} in", f"neighbor 192.0.2.254 route-map {DENY} out",
                  "exit-address-family",
                  "address-family ipv6 unicast", "neighbor 192.0.2.254 activate",
                  f"neighbor 192.0.2.254 route-map {DENY} in", f"neighbor 192.0.2.254 route-map {DENY} out",
                  "exit-address-family")),
    Case("iBGP session: the peer's ASN is ours",
         intent(IBGP), has=("router bgp 64512", "neighbor 198.51.100.1 remote-as 64512"), lacks=("local-as",)),
    Case("host routes advertised to a peer, no route accepted from it",
         intent(R1, routes={"r1": (HOST, Route("203.0.113.11/32"))}),
         has=("network 203.0.113.10/32", "network 203.0.113.11/32",
              "ip prefix-list leifur-r1-1 seq 1 permit 203.0.113.10/32",
              "ip prefix-list leifur-r1-1 seq 2 permit 203.0.113.11/32",
              "route-map leifur-out-r1 permit 10", "match ip address prefix-list leifur-r1-1",
              f"neighbor 192.0.2.254 route-map {DENY} in", "neighbor 192.0.2.254 route-map leifur-out-r1 out"),
         lacks=("set ",)),
    Case("IPv6 peer",
         intent(R6, routes={"r6": (HOST6,)}),
         has=("neighbor 2001:db8::fe remote-as 64513", "network 2001:db8:5::10/128",
              "ipv6 prefix-list leifur-r6-1 seq 1 permit 2001:db8:5::10/128",
              "match ipv6 address prefix-list leifur-r6-1", f"neighbor 2001:db8::fe route-map {DENY} in",
              "neighbor 2001:db8::fe route-map leifur-out-r6 out"),
         ordered=("address-family ipv6 unicast", "network 2001:db8:5::10/128", "neighbor 2001:db8::fe activate")),
    Case("addresses written in FRR's canonical form",
         intent(with_(R6, address="2001:DB8:0::FE"), routes={"r6": (Route("2001:DB8:5:0::10/128"),)}),
         has=("neighbor 2001:db8::fe remote-as 64513", "network 2001:db8:5::10/128")),
    Case("dual stack: both families over one session, one route-map entry per family",
         intent(R1, routes={"r1": (HOST6, HOST)}),
         has=("ip prefix-list leifur-r1-1 seq 1 permit 203.0.113.10/32",
              "ipv6 prefix-list leifur-r1-2 seq 1 permit 2001:db8:5::10/128",
              "match ip address prefix-list leifur-r1-1", "match ipv6 address prefix-list leifur-r1-2"),
         ordered=("route-map leifur-out-r1 permit 10", "route-map leifur-out-r1 permit 20",
                  "address-family ipv4 unicast", "network 203.0.113.10/32", "neighbor 192.0.2.254 activate",
                  "neighbor 192.0.2.254 route-map leifur-out-r1 out", "exit-address-family",
                  "address-family ipv6 unicast", "network 2001:db8:5::10/128", "neighbor 192.0.2.254 activate",
                  "neighbor 192.0.2.254 route-map leifur-out-r1 out", "exit-address-family")),
    Case("a route only for one peer reaches only that peer's route-map",
         intent(R1, IBGP, routes={"r1": (HOST,)}),
         has=("network 203.0.113.10/32", "neighbor 192.0.2.254 route-map leifur-out-r1 out",
              f"neighbor 198.51.100.1 route-map {DENY} out"),
         lacks=("leifur-out-core", "leifur-core-1")),
    Case("multihop, port and source address",
         intent(with_(R1, ebgp_multihop=True, port=1179, source_address="192.0.2.1")),
         has=("neighbor 192.0.2.254 ebgp-multihop", "neighbor 192.0.2.254 port 1179",
              "neighbor 192.0.2.254 update-source 192.0.2.1")),
    Case("multihop means nothing to an iBGP session (FRR refuses it there)",
         intent(with_(IBGP, ebgp_multihop=True)), lacks=("ebgp-multihop",)),
    Case("hold and keepalive times",
         intent(with_(R1, hold_time_s=9, keepalive_time_s=3)), has=("neighbor 192.0.2.254 timers 3 9",)),
    Case("hold time 0: no keepalives",
         intent(with_(R1, hold_time_s=0, keepalive_time_s=0)), has=("neighbor 192.0.2.254 timers 0 0",)),
    Case("router ID",
         intent(R1, router_id="192.0.2.1"), has=("bgp router-id 192.0.2.1",)),
    Case("a router ID that is not IPv4 is left to the daemon",
         intent(R1, router_id="2001:db8::1"), lacks=("router-id",),
         problems=(Problem(None, "router ID '2001:db8::1' is not an IPv4 address: the daemon chooses one"),)),
    Case("password from the Secret",
         intent(with_(R1, password_secret=SECRET)), passwords={"r1": "s3cr3t!#"},
         has=("neighbor 192.0.2.254 password s3cr3t!#",)),
    Case("a session whose Secret is missing is left out, not opened without its password",
         intent(with_(R1, password_secret=SECRET), IBGP), lacks=("192.0.2.254",),
         has=("neighbor 198.51.100.1 remote-as 64512",),
         problems=(Problem("r1", "session not configured: no password: Secret kube-system/r1-password, or its "
                                 "key password, is missing or cannot be read"),)),
    Case("a password FRR cannot take (a space, a newline) is not written: no configuration injected",
         intent(with_(R1, password_secret=SECRET)), passwords={"r1": "a b\nrouter bgp 1"},
         lacks=("192.0.2.254", "router bgp"),
         problems=(Problem("r1", "session not configured: the password in Secret kube-system/r1-password is not "
                                 "1 to 80 printable ASCII characters without spaces"),)),
    Case("BFD profile: one profile block with every value, the sessions use it",
         intent(with_(R1, bfd=FAST), with_(R6, bfd=FAST)),
         has=("bfd", "profile fast", "receive-interval 100", "transmit-interval 100", "detect-multiplier 3",
              "echo receive-interval 50", "echo transmit-interval 50", "minimum-ttl 254",
              "neighbor 192.0.2.254 bfd", "neighbor 192.0.2.254 bfd profile fast",
              "neighbor 2001:db8::fe bfd", "neighbor 2001:db8::fe bfd profile fast"),
         lacks=("echo-mode", "passive-mode"),
         ordered=("bfd", "profile fast", "exit", "exit")),
    Case("BFD echo and passive modes",
         intent(with_(R1, bfd=BFD("slow", echo_mode=True, echo_interval_ms=200, passive_mode=True, minimum_ttl=250,
                                  detect_multiplier=5))),
         has=("profile slow", "echo-mode", "passive-mode", "echo transmit-interval 200", "echo receive-interval 200",
              "minimum-ttl 250", "detect-multiplier 5", "receive-interval 300", "transmit-interval 300",
              "neighbor 192.0.2.254 bfd profile slow")),
    Case("a BFD profile FRR would refuse is dropped, the session stays",
         intent(with_(R1, bfd=BFD("bad", detect_multiplier=1))),
         has=("neighbor 192.0.2.254 remote-as 64513",), lacks=("bfd", "profile"),
         problems=(Problem("r1", "BFD profile 'bad' not used: detectMultiplier 1 is out of 2..255"),)),
    Case("communies, large communities and local preference per peer",
         intent(R1, IBGP, routes={
             "r1": (Route("203.0.113.10/32", ("65000:100", "65000:200"), ("65000:1:2",)),),
             "core": (Route("203.0.113.10/32", local_preference=300),)}),
         has=("route-map leifur-out-r1 permit 10", "set community 65000:100 65000:200",
              "set large-community 65000:1:2", "route-map leifur-out-core permit 10", "set local-preference 300",
              "neighbor 198.51.100.1 route-map leifur-out-core out"),
         ordered=("route-map leifur-out-core permit 10", "match ip address prefix-list leifur-core-1",
                  "set local-preference 300", "exit")),
    Case("routes with different attributes: a route-map entry and a prefix-list each",
         intent(IBGP, routes={"core": (Route("203.0.113.10/32", ("65000:1",)), Route("203.0.113.11/32"),
                                       Route("203.0.113.12/32", ("65000:1",)))}),
         has=("ip prefix-list leifur-core-1 seq 1 permit 203.0.113.11/32",
              "ip prefix-list leifur-core-2 seq 1 permit 203.0.113.10/32",
              "ip prefix-list leifur-core-2 seq 2 permit 203.0.113.12/32",
              "route-map leifur-out-core permit 10", "route-map leifur-out-core permit 20",
              "match ip address prefix-list leifur-core-2", "set community 65000:1"),
         ordered=("route-map leifur-out-core permit 20", "match ip address prefix-list leifur-core-2",
                  "set community 65000:1")),
    Case("aggregation prefixes are networks like host routes",
         intent(R1, R6, routes={"r1": (Route("203.0.113.0/24"),), "r6": (Route("2001:db8:5::/64"),)}),
         has=("network 203.0.113.0/24", "network 2001:db8:5::/64",
              "ip prefix-list leifur-r1-1 seq 1 permit 203.0.113.0/24")),
    Case("a community out of range is dropped and reported, the route stays",
         intent(R1, routes={"r1": (Route("203.0.113.10/32", ("65536:1", "1:2"), ("1:2",)),)}),
         has=("network 203.0.113.10/32", "set community 1:2"), lacks=("65536", "large-community"),
         problems=(Problem("r1", r"community '65536:1' not set: not (\d{1,5}):(\d{1,5}) with numbers up to 65535"),
                   Problem("r1", r"large community '1:2' not set: not (\d{1,10}):(\d{1,10}):(\d{1,10}) with "
                                 "numbers up to 4294967295"))),
    Case("a route that is not a prefix is not advertised",
         intent(R1, routes={"r1": (Route("203.0.113.10/33"), HOST)}),
         has=("network 203.0.113.10/32",), lacks=("/33",),
         problems=(Problem("r1", "route '203.0.113.10/33' not advertised: not a prefix"),)),
    Case("two peers at one address: the second (by name) is left out",
         intent(R1, with_(R1, peer="r2")),
         problems=(Problem("r2", "session not configured: peer r1 has the same address 192.0.2.254"),)),
    Case("bad sessions are left out, the good one stays",
         intent(R1, with_(R1, peer="x1", address="bogus"), with_(R1, peer="x2", address="192.0.2.9", peer_asn=0),
                with_(R1, peer="x3", address="192.0.2.8", hold_time_s=2),
                with_(R1, peer="x4", address="192.0.2.7", source_address="2001:db8::1"),
                with_(R1, peer="X 5", address="192.0.2.6")),
         has=("neighbor 192.0.2.254 remote-as 64513",),
         lacks=("bogus", "192.0.2.9", "192.0.2.8", "192.0.2.7", "192.0.2.6"),
         problems=(Problem("X 5", "session not configured: 'X 5' is not an object name"),
                   Problem("x1", "session not configured: 'bogus' is not an IP address"),
                   Problem("x2", "session not configured: an ASN (64512, 0) is out of 1..4294967295"),
                   Problem("x3", "session not configured: hold time 2 s or keepalive 30 s out of range"),
                   Problem("x4", "session not configured: source address 2001:db8::1 and peer address "
                                 "192.0.2.7 are of different families"))),
    Case("sessions from two of our ASNs: eBGP presents the other with local-as",
         intent(R1, R6, with_(IBGP, my_asn=65100, peer_asn=64999)),
         has=("router bgp 64512", "neighbor 198.51.100.1 remote-as 64999",
              "neighbor 198.51.100.1 local-as 65100 no-prepend replace-as"),
         lacks=("neighbor 192.0.2.254 local-as",)),
    Case("iBGP with another of our ASNs cannot be presented: left out",
         intent(R1, R6, with_(IBGP, my_asn=65100, peer_asn=65100)), lacks=("198.51.100.1",),
         problems=(Problem("core", "session not configured: its ASN 65100 differs from 64512, which the node's "
                                   "other sessions use, and an iBGP session cannot present another ASN"),)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_render(case: Case) -> None:
    rendered = render(case.intent, case.passwords)
    lines = [line.strip() for line in rendered.text.splitlines()]
    for line in case.has:
        assert line in lines, f"{line!r} missing from:\n{rendered.text}"
    for word in case.lacks:
        assert not [line for line in lines if word in line and not line.startswith("!")], \
            f"{word!r} in:\n{rendered.text}"
    at = 0
    for line in case.ordered:
        assert line in lines[at:], f"{line!r} not after line {at} of:\n{rendered.text}"
        at = lines.index(line, at) + 1
    assert rendered.problems == case.problems


def test_the_same_intent_renders_the_same_text_whatever_its_order() -> None:
    routes = (HOST, Route("203.0.113.9/32", ("65000:2", "65000:1")))
    a = render(intent(R1, R6, IBGP, routes={"r1": routes, "core": routes}), {})
    b = render(intent(IBGP, R6, R1, routes={"core": routes[::-1], "r1": routes[::-1]}), {})
    assert a.text == b.text


def test_the_withdrawal_denies_ahead_of_every_outbound_policy_and_touches_no_session() -> None:
    full = intent(R1, R6, IBGP, routes={"r1": (HOST,), "r6": (HOST6,), "core": ()}, router_id="192.0.2.1")
    commands = withdrawal(full)
    assert commands == ["configure terminal", "route-map leifur-out-r1 deny 1", "exit",
                        "route-map leifur-out-r6 deny 1", "exit", "end"]
    # Ahead of every entry the rendered policy has (they start at 10).
    assert " permit 1\n" not in render(full, {}).text and "leifur-out-r1 permit 10" in render(full, {}).text
    assert withdrawal(intent(R1)) == ["configure terminal", "end"]


def test_configured_names_the_sessions_in_the_text() -> None:
    full = intent(R1, with_(R1, peer="r2"), with_(IBGP, password_secret=SECRET))
    assert render(full, {}).configured(full) == (R1,)
