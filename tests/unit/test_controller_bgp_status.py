"""The conditions the controller keeps on BGP objects. Pure."""

from __future__ import annotations

import pytest

from leifur.announce import plan
from leifur.controller.bgp_status import wanted
from leifur.model import names

POOL = {"metadata": {"name": "lan"}, "spec": {"addresses": ["192.0.2.0/28"]}}


def peer(name: str = "r1", **spec) -> dict:
    return {"metadata": {"name": name},
            "spec": {"peerAddress": "203.0.113.1", "myASN": 64512, "peerASN": 64500, **spec}}


def adv(name: str = "a", **spec) -> dict:
    return {"metadata": {"name": name}, "spec": spec}


def record(node: str, *sessions: dict) -> dict:
    return {"metadata": {"name": node}, "status": {"bgp": {"sessions": list(sessions)}}}


def conds(peers=(), ads=(), bfd=(), records=()) -> dict:
    c = plan.Cluster(pools=[POOL], peers=list(peers), bgp_advertisements=list(ads), bfd_profiles=list(bfd))
    return {key: {w.type: (w.status, w.reason, w.message) for w in ws} for key, ws in wanted(c, records).items()}


UP = {"peer": "r1", "address": "203.0.113.1", "state": "Established"}
DOWN = {"peer": "r1", "address": "203.0.113.1", "state": "Active", "since": "2026-12-02T10:00:00Z"}

# name, peers, ads, bfd profiles, records -> (kind, name, condition type) -> (status, reason, a phrase of the message)
CASES = [
    ("a usable peer with no node reporting it", [peer()], [adv()], [], [],
     {(names.BGP_PEER, "r1", names.COND_VALID): (True, "Valid", "usable"),
      (names.BGP_PEER, "r1", "Established"): (False, "NoSessions", "no node's record"),
      (names.BGP_ADVERTISEMENT, "a", names.COND_VALID): (True, "Valid", "usable"),
      (names.BGP_ADVERTISEMENT, "a", names.COND_OVERLAPPING): (False, "NoOverlap", "no other")}),
    ("every node established", [peer()], [], [], [record("n1", UP), record("n2", UP)],
     {(names.BGP_PEER, "r1", "Established"): (True, "Established", "from 2 node(s)")}),
    ("one node down", [peer()], [], [], [record("n1", UP), record("n2", DOWN)],
     {(names.BGP_PEER, "r1", "Established"): (False, "SessionsDown", "1 of 2 node(s) without an Established "
                                               "session: node n2: Active since 2026-12-02T10:00:00Z")}),
    ("the record says why", [peer()], [], [], [record("n1", dict(DOWN, message="Secret ns/pw has no password"))],
     {(names.BGP_PEER, "r1", "Established"): (False, "SessionsDown", "(Secret ns/pw has no password)")}),
    ("missing BFD profile", [peer(bfdProfile="fast")], [], [], [],
     {(names.BGP_PEER, "r1", names.COND_VALID): (False, "InvalidSpec", "BFDProfile fast does not exist")}),
    ("BFD profile present", [peer(bfdProfile="fast")], [], [{"metadata": {"name": "fast"}}], [],
     {(names.BGP_PEER, "r1", names.COND_VALID): (True, "Valid", "usable"),
      (names.BFD_PROFILE, "fast", names.COND_VALID): (True, "Valid", "usable")}),
    ("an invalid BFD profile", [], [], [{"metadata": {"name": "p"}, "spec": {"detectMultiplier": 1}}], [],
     {(names.BFD_PROFILE, "p", names.COND_VALID): (False, "InvalidSpec", "spec.detectMultiplier")}),
    ("advertisement naming a missing peer", [peer()], [adv(peers=["r9"])], [], [],
     {(names.BGP_ADVERTISEMENT, "a", names.COND_VALID): (False, "InvalidSpec", "no BGPPeer named r9")}),
    ("advertisement selecting no pool", [peer()], [adv(ipAddressPools=["gone"])], [], [],
     {(names.BGP_ADVERTISEMENT, "a", names.COND_VALID): (False, "InvalidSpec", "selects no IPAddressPool")}),
    ("overlapping advertisements", [peer()], [adv("a", localPref=100), adv("b", localPref=200)], [], [],
     {(names.BGP_ADVERTISEMENT, "a", names.COND_OVERLAPPING): (True, "Overlap", "BGPAdvertisement b"),
      (names.BGP_ADVERTISEMENT, "b", names.COND_OVERLAPPING): (True, "Overlap", "highest localPref")}),
]


@pytest.mark.parametrize("peers,ads,bfd,records,want", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_conditions_of_bgp_objects(peers, ads, bfd, records, want):
    got = conds(peers, ads, bfd, records)
    for (kind, name, type_), (status, reason, phrase) in want.items():
        s, r, message = got[(kind, name)][type_]
        assert (s, r) == (status, reason) and phrase in message, (kind, name, type_, message)
