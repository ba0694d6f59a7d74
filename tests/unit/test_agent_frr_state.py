"""Reading FRR back (leifur.agent.frr's pure parts): sessions from `show bgp neighbors json` and
`show bfd peers json` (the shapes FRR 8.4 answers, trimmed from a real bgpd), whether withdrawals
have left, and which running configuration a reload must keep. Table-driven, pure."""

from __future__ import annotations

import pytest

from leifur.agent.frr import Progress, progress, session_states
from leifur.agent.frr_config import keep_unmanaged
from leifur.announce.bgp_intent import BFD, Session, SessionState


def neighbor(state: str, sent: dict[str, int], *, up_ms: int = 25000, reset_ms: int | None = 76000,
             updates: int = 3, outq: int = 0, queue: int = 0) -> dict:
    n = {"remoteAs": 64513, "localAs": 64512, "bgpState": state, "bgpTimerUpMsec": up_ms,
         "addressFamilyInfo": {family: {"packetQueueLength": queue, "routeMapForIncomingAdvertisements": "leifur-deny",
                                        "acceptedPrefixCounter": 0, "sentPrefixCounter": count}
                               for family, count in sent.items()},
         "messageStats": {"depthInq": 0, "depthOutq": outq, "updatesSent": updates, "updatesRecv": 2}}
    if reset_ms is not None:
        n["lastResetTimerMsecs"] = reset_ms
    return n


def bfd_peer(address: str, status: str) -> dict:
    return {"multihop": False, "peer": address, "local": "192.0.2.1", "vrf": "default", "status": status,
            "uptime": 45, "receive-interval": 100, "transmit-interval": 100, "detect-multiplier": 3}


R1 = Session("r1", "192.0.2.254", 64513, 64512, bfd=BFD("fast"))
R6 = Session("r6", "2001:db8::fe", 64513, 64512)

STATE_CASES = [
    ("established, with its prefixes and BFD up",
     [R1], {"192.0.2.254": neighbor("Established", {"ipv4Unicast": 2})}, [bfd_peer("192.0.2.254", "up")],
     [SessionState("r1", "192.0.2.254", "Established", 25.0, 2, "up")]),
    ("IPv6 neighbour named as FRR writes it, no BFD configured",
     [Session("r6", "2001:DB8:0::FE", 64513, 64512)],
     {"2001:db8::fe": neighbor("Established", {"ipv6Unicast": 1}, up_ms=76000)}, [],
     [SessionState("r6", "2001:db8::fe", "Established", 76.0, 1, None)]),
    ("down: the time since it went down, nothing advertised, BFD down",
     [R1], {"192.0.2.254": neighbor("Active", {"ipv4Unicast": 2})}, [bfd_peer("192.0.2.254", "down")],
     [SessionState("r1", "192.0.2.254", "Active", 76.0, 0, "down")]),
    ("never up: no time at all",
     [R6], {"2001:db8::fe": neighbor("Connect", {}, reset_ms=None)}, [],
     [SessionState("r6", "2001:db8::fe", "Connect", None, 0, None)]),
    ("BFD configured but bfdd has no session yet: down",
     [R1], {"192.0.2.254": neighbor("Established", {"ipv4Unicast": 0})}, [],
     [SessionState("r1", "192.0.2.254", "Established", 25.0, 0, "down")]),
    ("a session bgpd does not know",
     [R1, R6], {"2001:db8::fe": neighbor("Established", {"ipv6Unicast": 1})}, [],
     [SessionState("r1", "192.0.2.254", "NotConfigured"), SessionState("r6", "2001:db8::fe", "Established", 25.0, 1)]),
]


@pytest.mark.parametrize(("sessions", "neighbors", "bfd", "want"), [c[1:] for c in STATE_CASES],
                         ids=[c[0] for c in STATE_CASES])
def test_session_states(sessions, neighbors, bfd, want) -> None:
    assert session_states(sessions, neighbors, bfd) == want


def test_progress_counts_every_family_and_both_queues() -> None:
    n = {"192.0.2.254": neighbor("Established", {"ipv4Unicast": 2, "ipv6Unicast": 3}, updates=7, outq=1, queue=2),
         "bgpNoSuchNeighbor": True}
    assert progress(n) == {"192.0.2.254": Progress(True, 5, 7, 5)}  # 1 + 2 per family


BEFORE = Progress(True, 2, 3, 0)
WITHDRAW_CASES = [
    ("withdrawn and written out", Progress(True, 0, 4, 0), True),
    ("withdrawn in the RIB, the UPDATE not written yet", Progress(True, 0, 3, 0), False),
    ("UPDATE written, more queued", Progress(True, 0, 4, 1), False),
    ("a route still advertised", Progress(True, 1, 4, 0), False),
    ("the session went down: the peer drops the routes itself", Progress(False, 0, 3, 0), True),
]


@pytest.mark.parametrize(("now", "done"), [c[1:] for c in WITHDRAW_CASES], ids=[c[0] for c in WITHDRAW_CASES])
def test_withdrawn_since(now: Progress, done: bool) -> None:
    assert now.withdrawn_since(BEFORE) is done


def test_a_session_that_advertised_nothing_has_nothing_to_wait_for() -> None:
    assert Progress(True, 0, 3, 0).withdrawn_since(Progress(True, 0, 3, 0))


RUNNING = """Building configuration...

Current configuration:
!
frr version 8.4.4
frr defaults traditional
hostname node-1
log syslog informational
no ipv6 forwarding
service integrated-vtysh-config
bgp route-map delay-timer 0
!
router bgp 64512
 neighbor 192.0.2.254 remote-as 64513
exit
!
ip prefix-list leifur-r1-1 seq 1 permit 203.0.113.11/32
ip prefix-list operators seq 5 permit 198.51.100.0/24
!
route-map leifur-out-r1 permit 10
 match ip address prefix-list leifur-r1-1
exit
!
route-map operators permit 10
 match ip address prefix-list operators
exit
!
interface eth0
 description uplink
exit
!
router bgp 65000 vrf blue
exit
!
bfd
 profile fast
  transmit-interval 100
 exit
 !
exit
!
end
"""


def test_a_reload_keeps_what_the_agent_does_not_manage() -> None:
    merged = keep_unmanaged("OURS\n", RUNNING)
    kept, ours = merged.split("!\nOURS\n")
    assert ours == ""
    assert kept.splitlines() == [
        "frr version 8.4.4", "frr defaults traditional", "hostname node-1", "log syslog informational",
        "no ipv6 forwarding", "service integrated-vtysh-config",
        "ip prefix-list operators seq 5 permit 198.51.100.0/24",
        "route-map operators permit 10", " match ip address prefix-list operators", "exit",
        "interface eth0", " description uplink", "exit",
        "router bgp 65000 vrf blue", "exit"]


def test_nothing_to_keep_leaves_the_text_alone() -> None:
    assert keep_unmanaged("OURS\n", "!\nend\n") == "OURS\n"
