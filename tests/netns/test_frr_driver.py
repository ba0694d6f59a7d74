"""The agent's FRR driver (leifur.agent.frr and frr_config) against the real daemons: FRR 8.4 in a
node namespace of the lab, BIRD 2 as the router. An intent applied reaches the router with its
attributes; a changed intent adds and removes exactly its difference without resetting the
session; withdraw() leaves nothing at the router and keeps the session; a password the router
requires works; BFD's state is read back, and goes down when the router dies."""

from __future__ import annotations

import signal

import pytest

from leifur.agent.frr import ESTABLISHED, FRR
from leifur.agent.frr_config import render, withdrawal
from leifur.announce.bgp_intent import BFD, NodeIntent, Route, SecretRef, Session
from leifur_dev import bird, frr, netlab
from leifur_dev.cluster import wait_for

pytestmark = [pytest.mark.netns]

SETTLE = 90  # generous bound for a loaded 2-core machine; sessions come up in seconds
PASSWORD = "lab-s3cr3t!"
ASN = 64512  # iBGP with the router: BIRD then shows the local preference
# Not the lab's default 100 ms: FRR's 300 ms against BIRD's 100 ms shows the profile is used.
FAST = BFD("fast", receive_interval_ms=100, transmit_interval_ms=100, detect_multiplier=3)
# What the node's FRR runs before the agent configures it: the agent keeps it (frr_config.keep_unmanaged).
BASE = "frr defaults traditional\nhostname {name}\nlog stdout informational\nservice integrated-vtysh-config\n"


@pytest.fixture
def driven(router_lab: netlab.Lab):
    """node1's FRR started as the lab starts it, the agent's driver for it, and the router (iBGP,
    BFD, a password)."""
    node = router_lab.nodes[0]
    instance = frr.FRR(router_lab, node).start(BASE.format(name=node.name))
    router = bird.Router(router_lab, bird.RouterConfig(router_asn=ASN, node_asn=ASN, bfd=bird.BFDTimers(),
                                                       password=PASSWORD)).start()
    driver = FRR(str(instance.config_path), str(instance.dir))
    yield router_lab, instance, router, driver
    instance.stop()


def session(router: bird.Router) -> Session:
    return Session("router", router.host.ip4, peer_asn=ASN, my_asn=ASN, hold_time_s=9, keepalive_time_s=3,
                   password_secret=SecretRef("leifur-system", "router-password"), bfd=FAST)


def apply(driver: FRR, intent: NodeIntent) -> None:
    rendered = render(intent, {"router": PASSWORD})
    assert rendered.problems == ()
    driver.apply(rendered.text)


def established(driver: FRR, intent: NodeIntent, prefixes: int) -> bool:
    s = driver.sessions(intent.sessions)[0]
    return s.state == ESTABLISHED and s.prefixes_advertised == prefixes and s.bfd == "up"


def at_router(router: bird.Router, prefixes: list[str]) -> dict[str, list[bird.RoutePath]]:
    return {p: router.paths(p) for p in prefixes}


@pytest.mark.parametrize("router_lab", [1], indirect=True)
def test_the_intent_reaches_the_router_changes_exactly_and_withdraws(driven) -> None:
    lab, instance, router, driver = driven
    node = lab.nodes[0]
    a4, b4, a6 = f"{lab.lan_ip(40)}/32", f"{lab.lan_ip(41)}/32", f"{lab.lan_ip(40, 6)}/128"
    first = NodeIntent(node.ip4, (session(router),), {"router": (
        Route(a4, ("65000:100",), ("65000:1:2",), 150), Route(a6, ("65000:100",)))})
    apply(driver, first)
    wait_for(lambda: established(driver, first, 2), SETTLE, interval=0.5, what="the session Established, BFD up")
    # The password is in use: bgpd signs the session (BIRD, configured with it, would drop it unsigned).
    assert driver.show("show bgp neighbors json")[router.host.ip4]["authenticationEnabled"] == 1
    # The profile's intervals, not bfdd's default 300 ms.
    (peer,) = driver.show("show bfd peers json")
    assert (peer["peer"], peer["receive-interval"], peer["transmit-interval"]) == (router.host.ip4, 100, 100)

    paths = wait_for(lambda: all(at_router(router, [a4, a6]).values()) and at_router(router, [a4, a6]), SETTLE,
                     interval=0.5, what="both routes at the router")
    (p4,), (p6,) = paths[a4], paths[a6]
    assert p4.next_hops == (node.ip4,) and p4.local_pref == 150
    assert p4.communities == {"65000:100"} and p4.large_communities == {"65000:1:2"}
    assert p6.communities == {"65000:100"} and p6.local_pref == 100  # the router's default: none set
    # Nothing the router offers is accepted, so nothing is installed in the node's table.
    assert driver.show("show bgp neighbors json")[router.host.ip4]["addressFamilyInfo"]["ipv4Unicast"][
        "acceptedPrefixCounter"] == 0
    assert lab.run(node.netns, ["ip", "route", "show", "proto", "bgp"]).stdout == ""

    connections = driver.show("show bgp neighbors json")[router.host.ip4]["connectionsEstablished"]
    # Applying the same text again changes nothing in the daemons.
    running = instance.vtysh("show running-config")
    apply(driver, first)
    assert instance.vtysh("show running-config") == running

    # Changed: a4 loses its attributes, b4 comes, a6 goes; the session stays up throughout.
    second = NodeIntent(node.ip4, (session(router),), {"router": (Route(a4), Route(b4, local_preference=200))})
    apply(driver, second)
    wait_for(lambda: not router.paths(a6) and router.paths(b4), SETTLE, interval=0.5, what="a6 gone, b4 there")
    # Attributes follow the route-map's re-evaluation (frr_config.ROUTE_MAP_DELAY_S later).
    wait_for(lambda: [p.communities for p in router.paths(a4)] == [set()], SETTLE, interval=0.5,
             what="a4's communities gone")
    (p4,), (pb,) = router.paths(a4), router.paths(b4)
    assert p4.large_communities == set() and p4.local_pref == 100
    assert pb.local_pref == 200
    assert driver.show("show bgp neighbors json")[router.host.ip4]["connectionsEstablished"] == connections

    # Withdrawn: the session stays, the router has nothing.
    assert driver.withdraw(withdrawal(second), timeout=SETTLE)
    assert driver.progress()[router.host.ip4].prefixes == 0
    wait_for(lambda: not any(at_router(router, [a4, b4, a6]).values()), SETTLE, interval=0.5,
             what="no route at the router")
    assert established(driver, second, 0)
    assert driver.show("show bgp neighbors json")[router.host.ip4]["connectionsEstablished"] == connections


@pytest.mark.parametrize("router_lab", [1], indirect=True)
def test_bfd_and_the_session_read_back_as_they_change(driven) -> None:
    lab, _, router, driver = driven
    intent = NodeIntent(lab.nodes[0].ip4, (session(router),), {"router": (Route(f"{lab.lan_ip(40)}/32"),)})
    apply(driver, intent)
    wait_for(lambda: established(driver, intent, 1), SETTLE, interval=0.5, what="the session Established, BFD up")
    up = driver.sessions(intent.sessions)[0]
    assert up.since_s is not None and up.address == router.host.ip4 and up.peer == "router"

    router.stop(signal.SIGKILL)  # the router dies: BFD notices within 3 x 100 ms, BGP goes down with it
    down = wait_for(lambda: [s for s in driver.sessions(intent.sessions) if s.bfd == "down" and s.state != ESTABLISHED],
                    SETTLE, interval=0.2, what="BFD and the session down")
    assert down[0].prefixes_advertised == 0

    router.start()
    wait_for(lambda: established(driver, intent, 1), SETTLE, interval=0.5, what="the session back")


@pytest.mark.parametrize("router_lab", [1], indirect=True)
def test_a_session_whose_password_is_missing_is_not_configured_until_it_is_there(driven) -> None:
    lab, _, router, driver = driven
    intent = NodeIntent(lab.nodes[0].ip4, (session(router),), {"router": (Route(f"{lab.lan_ip(40)}/32"),)})
    rendered = render(intent, {})
    assert [p.peer for p in rendered.problems] == ["router"]
    driver.apply(rendered.text)
    assert [s.state for s in driver.sessions(intent.sessions)] == ["NotConfigured"]
    assert router.host.ip4 not in driver.show("show bgp neighbors json")
    apply(driver, intent)
    wait_for(lambda: established(driver, intent, 1), SETTLE, interval=0.5, what="the session Established")
