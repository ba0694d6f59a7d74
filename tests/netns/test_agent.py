"""The agent end to end: real control plane, real controller, three node namespaces each running
the real leifur-agent, and a client namespace that ARPs, solicits and connects over the LAN."""

from __future__ import annotations

import datetime
import json
import signal
import sys
import time

import pytest

from leifur.announce.election import owner
from leifur.model import names
from leifur_dev import promtool
from leifur_dev.cluster import wait_for
from leifur_dev.probe import claims_in_capture, handover_windows
from leifur_dev.stack import Stack

pytestmark = [pytest.mark.netns, pytest.mark.controlplane]

WRITES = {"create", "update", "patch", "delete", "deletecollection"}
# Created to ask who a metrics reader is and what it may do; the API server stores nothing.
REVIEWS = {"tokenreviews", "subjectaccessreviews"}


def start(stack: Stack, *, mode: str = "Responder", v6: bool = False, **ad) -> str:
    """Pool of free LAN addresses, an advertisement on eth0, everything started; the test's namespace."""
    addresses = [f"{stack.lan_ip(40)}-{stack.lan_ip(49)}"]
    if v6:
        addresses.append(f"{stack.lan_ip(0x40, 6)}-{stack.lan_ip(0x4f, 6)}")
    pool = stack.pool("lan", addresses)
    stack.advertisement("lan", ipAddressPools=[pool], interfaces=ad.pop("interfaces", ["eth0"]), mode=mode, **ad)
    stack.start()
    return stack.namespace("apps")


def expected_owner(stack: Stack, ip: str, hosts=None) -> str:
    hosts = stack.lab.nodes if hosts is None else hosts
    name = owner([stack.node_name(h) for h in hosts], ip)
    return stack.host_of(name).name


def wait_single_answer(stack: Stack, ip: str, timeout: float = 30) -> str:
    """Wait until exactly one MAC answers for `ip`; the lab host name it belongs to."""
    macs = wait_for(lambda: m if len(m := stack.who_answers(ip)) == 1 else None, timeout,
                    interval=0.2, what=f"exactly one MAC answering for {ip}")
    return stack.mac_owner(macs[0])


def test_one_node_answers_with_its_mac_and_serves_the_connection(stack):
    ns = start(stack)
    ip = stack.service(ns, "web")
    stack.serve(ip)
    answering = wait_single_answer(stack, ip)
    assert answering == expected_owner(stack, ip)
    # Repeated probing keeps seeing one MAC only.
    assert len(stack.who_answers(ip, duration=1.0)) == 1
    # TCP from the client reaches the server on the owner (its DNAT stands in for kube-proxy).
    assert wait_for(lambda: stack.connect(ip), 15, what="a TCP answer") == answering

    node = stack.node_name(stack.lab.host(answering))
    event = wait_for(lambda: stack.cluster.has_event(ns, "web", names.REASON_NODE_ASSIGNED), 15,
                     what="a NodeAssigned event")
    assert node in event["message"] and ip in event["message"] and "eth0" in event["message"]
    record = wait_for(lambda: _record(stack, node), 15, what="the owner's L2NodeStatus")
    [entry] = record["status"]["announcements"]
    assert entry["ip"] == ip and entry["interfaces"] == ["eth0"] and entry["mode"] == "Responder"
    assert entry["services"] == [f"{ns}/web"]
    assert record["metadata"]["ownerReferences"][0]["kind"] == "Node"
    for host in stack.lab.nodes:
        expected = 1 if host.name == answering else 0
        assert stack.agents[host.name].metric("leifur_agent_announced_ips", family="ipv4") == expected
    owner_agent = stack.agents[answering]
    assert owner_agent.metric("leifur_agent_replies_total") > 0
    assert owner_agent.metric("leifur_agent_requests_total") >= owner_agent.metric("leifur_agent_replies_total")
    assert owner_agent.metric("leifur_agent_gratuitous_total", family="ipv4") >= 3
    assert owner_agent.metric("leifur_agent_ownership_changes_total", direction="gained") >= 1
    assert owner_agent.metric("leifur_agent_peers", state="ready") == len(stack.lab.nodes) - 1
    for a in stack.agents.values():
        # The metrics port, from the LAN: the reader's token gets the probes' paths too (every
        # authenticated identity may, as on the API server), no token gets nothing.
        assert a.get("/healthz")[0] == 200 and a.get("/readyz")[0] == 200
        assert a.get("/metrics", token="")[0] == 401
        # The health port, on the node's loopback, as the kubelet probes it: no token, no metrics.
        assert a.get_health("/readyz") == (200, "ok\n") and a.get_health("/healthz")[0] == 200
        assert a.get_health("/metrics")[0] == 404

    # Steady state: no agent writes to the API (the budget is one write per node per 10 s).
    before = [r for r in stack.agent_requests() if r["verb"] in WRITES and r["resource"] not in REVIEWS]
    time.sleep(10)
    after = [r for r in stack.agent_requests() if r["verb"] in WRITES and r["resource"] not in REVIEWS]
    assert len(after) - len(before) <= len(stack.lab.nodes), after[len(before):]
    assert {r["resource"] for r in after} <= {"events", names.L2NODESTATUSES}

    # Deleting the Service withdraws the IP: nobody answers any more.
    stack.cluster.delete_service(ns, "web")
    wait_for(lambda: stack.who_answers(ip) == [], 30, what="no answer after the Service is deleted")
    wait_for(lambda: _record(stack, node)["status"]["count"] == 0, 15, what="an empty record")


HANDOVER_WINDOW = 0.3  # seconds in which both the old and the new owner may answer


def assert_one_handover(result: dict, old: str, new: str, old_gone_at: float) -> None:
    """The answers went from `old` to `new` once: any back and forth stays inside one handover window
    (on SIGTERM the leaving agent answers for its grace period after the new owner started), no third MAC,
    and once the old agent was gone (`old_gone_at`, wall clock) only `new` answered. The probe's times are
    the kernel's receive times, so a probe that was descheduled meanwhile does not stretch the window."""
    changes = result["changes"]
    assert changes, result
    assert {c["from"] for c in changes} | {c["to"] for c in changes} <= {old, new}, changes
    assert changes[-1]["to"] == new and changes[-1]["t"] - changes[0]["t"] <= HANDOVER_WINDOW, changes
    after = {mac for t, mac in result["answers"] if result["start"] + t > old_gone_at}
    assert after == {new}, (after, changes)


def _record(stack: Stack, node: str) -> dict | None:
    try:
        return stack.cluster.custom.get_cluster_custom_object(names.GROUP, names.VERSION, names.L2NODESTATUSES, node)
    except Exception:
        return None


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_failover_when_the_owning_agent_dies(stack, sig):
    ns = start(stack)
    ip = stack.service(ns, "web")
    first = wait_single_answer(stack, ip)
    survivors = [h for h in stack.lab.nodes if h.name != first]
    second = expected_owner(stack, ip, survivors)
    old_mac, new_mac = stack.lab.host(first).mac, stack.lab.host(second).mac
    pcap = stack.workdir / "client.pcap"
    capture = stack.capture(pcap)
    # Its duration only bounds it: it is stopped once the new owner is seen answering alone.
    probe = stack.probe(ip, duration=120.0, interval=0.01)
    # Signalled only once the probe sees the owner answer: otherwise it could start after the handover.
    assert stack.probe_first_answer(probe) == old_mac
    stack.agents[first].signal(sig)
    assert stack.agents[first].wait_exit(10) is not None
    gone_at = time.time()
    wait_for(lambda: stack.who_answers(ip) == [new_mac], 30, what=f"{second} answering alone")
    result = stack.stop_probe(probe)
    assert result["first_mac"] == old_mac
    assert result["last_mac"] == new_mac
    assert_one_handover(result, old_mac, new_mac, gone_at)
    print(f"\nfailover after {sig.name}: blackout {result['longest_gap'] * 1000:.0f} ms "
          f"(probes every 10 ms; median gap {result['median_gap'] * 1000:.1f} ms)")
    if sig == signal.SIGTERM:
        assert stack.agents[first].proc.returncode == 0

    # The restarted agent takes its IP back.
    stack.start_agent(stack.lab.host(first)).wait_ready()
    assert wait_single_answer(stack, ip) == first
    stack.who_answers(ip, duration=1.0)

    # The whole run as the client's capture saw it (ARP replies and gratuitous ARP claiming the IP):
    # the claiming MAC changed in exactly two handover windows, each short; one MAC at all other times.
    capture.terminate()
    capture.wait(10)
    claims = claims_in_capture(str(pcap), ip)
    windows = handover_windows(claims, HANDOVER_WINDOW)
    assert len(windows) == 2, windows
    macs = {stack.lab.host(first).mac, stack.lab.host(second).mac}
    for start_, end, seen in windows:
        assert end - start_ <= HANDOVER_WINDOW and seen == macs, windows


def test_local_policy_endpoints_exclusion_label_and_node_selectors(stack):
    ns = start(stack)
    n1, n2, n3 = stack.lab.nodes
    ip = stack.service(ns, "web", endpoint_hosts=[n1], externalTrafficPolicy="Local")
    assert wait_single_answer(stack, ip) == "node1"
    # The endpoint moves: so does the IP.
    stack.endpoints(ns, "web", [n3])
    wait_for(lambda: stack.who_answers(ip) == [n3.mac], 30, what="the IP following its endpoint to node3")
    # No ready endpoint anywhere: nobody announces.
    stack.endpoints(ns, "web", [n3], ready=False)
    wait_for(lambda: stack.who_answers(ip) == [], 30, what="no answer without a ready endpoint")
    stack.endpoints(ns, "web", [n1, n2, n3])
    stack.cluster.patch_service(ns, "web", {"spec": {"externalTrafficPolicy": "Cluster"}})
    first = wait_single_answer(stack, ip)
    assert first == expected_owner(stack, ip)
    # The exclusion label takes the owner out.
    stack.label_node(stack.lab.host(first), {names.LABEL_EXCLUDE_LB: "true"})
    rest = [h for h in stack.lab.nodes if h.name != first]
    wait_for(lambda: stack.who_answers(ip) == [stack.lab.host(expected_owner(stack, ip, rest)).mac], 30,
             what="the IP leaving the excluded node")
    stack.label_node(stack.lab.host(first), {names.LABEL_EXCLUDE_LB: None})
    wait_for(lambda: stack.who_answers(ip) == [stack.lab.host(first).mac], 30, what="the IP back on its owner")


def test_node_selectors_pick_the_announcing_nodes(stack):
    addresses = [f"{stack.lan_ip(40)}-{stack.lan_ip(49)}"]
    pool = stack.pool("lan", addresses)
    stack.advertisement("rack-b", ipAddressPools=[pool], interfaces=["eth0"],
                        nodeSelectors=[{"matchLabels": {"rack": "b"}}])
    stack.start()
    for host in stack.lab.nodes:
        stack.label_node(host, {"rack": "b" if host.name == "node2" else "a"})
    ns = stack.namespace("apps")
    ips = [stack.service(ns, f"web{i}") for i in range(3)]
    for ip in ips:
        assert wait_single_answer(stack, ip) == "node2"


def test_ipv6_over_ndp_with_failover(stack):
    ns = start(stack, v6=True)
    ip = stack.service(ns, "web6", ipFamilies=["IPv6"], ipFamilyPolicy="SingleStack")
    assert ":" in ip
    first = wait_single_answer(stack, ip)
    assert first == expected_owner(stack, ip)
    assert stack.agents[first].metric("leifur_agent_announced_ips", family="ipv6") == 1
    stack.agents[first].signal(signal.SIGKILL)
    survivors = [h for h in stack.lab.nodes if h.name != first]
    wait_for(lambda: stack.who_answers(ip) == [stack.lab.host(expected_owner(stack, ip, survivors)).mac], 30,
             what="another node answering NDP")


def test_both_programs_metrics_pass_promtool_and_join_on_the_family(stack):
    ns = start(stack, v6=True)
    ips = [stack.service(ns, "web"), stack.service(ns, "web6", ipFamilies=["IPv6"], ipFamilyPolicy="SingleStack")]
    for ip in ips:
        wait_single_answer(stack, ip)
    assert stack.controller is not None
    served = {"controller": stack.controller, **{f"agent on {h}": a for h, a in stack.agents.items()}}
    for who, program in served.items():
        body = program.get("/metrics")[1]
        assert "leifur_build_info" in body, who
        # Prometheus's conventions, as its own linter reads them.
        assert promtool.check_metrics(body) == [], who
    # One spelling of the family in both programs: what the controller holds per family is what
    # the agents announce per family, joined as LeifurIPNotAnnounced joins them.
    for family in ("ipv4", "ipv6"):
        in_use = stack.controller.metric("leifur_pool_addresses_in_use", family=family)
        assert in_use == 1, family
        wait_for(lambda f=family: sum(a.metric("leifur_agent_announced_ips", family=f)
                                      for a in stack.agents.values()) == 1, 15, what=f"{family} announced")


def test_netlink_mode_puts_the_ip_on_the_interface_and_takes_it_off(stack):
    ns = start(stack, mode="Netlink", v6=True)
    ip = stack.service(ns, "web")
    ip6 = stack.service(ns, "web6", ipFamilies=["IPv6"], ipFamilyPolicy="SingleStack")

    def holders(addr: str) -> list[str]:
        return [h.name for h in stack.lab.nodes
                if f" {addr}/" in stack.lab.run(h.netns, ["ip", "-o", "addr", "show", "dev", "eth0"]).stdout]

    for addr in (ip, ip6):
        owner_name = expected_owner(stack, addr)
        wait_for(lambda a=addr, o=owner_name: holders(a) == [o], 30, what=f"{addr} on {owner_name}'s eth0")
        assert wait_single_answer(stack, addr) == owner_name  # the kernel answers
    # The kernel owns the address, so the client can ping it.
    res = stack.lab.run(stack.lab.client.netns, ["ping", "-c", "2", "-i", "0.2", "-W", "2", ip], check=False)
    assert res.returncode == 0, res.stdout
    # A graceful stop removes the address and another node adds it.
    first = expected_owner(stack, ip)
    stack.agents[first].signal(signal.SIGTERM)
    assert stack.agents[first].wait_exit(10) == 0
    survivors = [h for h in stack.lab.nodes if h.name != first]
    wait_for(lambda: holders(ip) == [expected_owner(stack, ip, survivors)], 30, what="the address moving")
    # Deleting the Service takes it off everywhere.
    stack.cluster.delete_service(ns, "web")
    wait_for(lambda: holders(ip) == [], 30, what="the address removed")


def _two_owners(stack: Stack, ns: str):
    """Services until two nodes own IPs: (the first IP's owner, its IP, an IP another node owns)."""
    ips: list[str] = []
    for i in range(10):  # the pool of start() has 10 addresses; 10 IPs on one node of 3: 1 in 20,000
        ips.append(stack.service(ns, f"web{i}"))
        node = expected_owner(stack, ips[0])
        theirs = [ip for ip in ips if expected_owner(stack, ip) != node]
        if theirs:
            return stack.lab.host(node), ips[0], theirs[0]
    raise AssertionError(f"one node owns all of {ips}")


def _cut_heartbeats(stack: Stack, host, *, outgoing: bool) -> None:
    rules = " chain in {\n  type filter hook input priority 0\n  udp dport 7474 drop\n }\n"
    if outgoing:
        rules += " chain out {\n  type filter hook output priority 0\n  udp dport 7474 drop\n }\n"
    stack.lab.run(host.netns, ["nft", "-f", "-"], input=f"table inet leifurpart {{\n{rules}}}\n")


def test_a_partition_between_agents_heals_to_one_owner(stack):
    ns = start(stack)
    cut, mine, theirs = _two_owners(stack, ns)
    successor = expected_owner(stack, mine, [h for h in stack.lab.nodes if h is not cut])
    owner_name = expected_owner(stack, theirs)
    for ip in (mine, theirs):
        wait_single_answer(stack, ip)
    _cut_heartbeats(stack, cut, outgoing=True)
    # Each side keeps answering for its own: its peers take its IP (it is dead to them),
    # it presumes its peers alive (they fell silent together) and keeps to its own IPs.
    wait_for(lambda: sorted(stack.who_answers(mine)) == sorted([cut.mac, stack.lab.host(successor).mac]), 30,
             what="both sides of the partition answering for the cut-off node's IP")
    assert stack.agents[cut.name].metric("leifur_agent_peers", state="presumed") == 2
    assert stack.who_answers(theirs, duration=1.0) == [stack.lab.host(owner_name).mac]
    stack.lab.run(cut.netns, ["nft", "delete", "table", "inet", "leifurpart"])
    assert wait_single_answer(stack, mine) == cut.name
    # And it stays that way.
    assert stack.who_answers(mine, duration=2.0) == [cut.mac]


def test_a_node_that_stops_hearing_its_peers_does_not_answer_beside_them(stack):
    """One-way loss: a node's incoming heartbeats are dropped, its own still reach its peers, which
    therefore see it alive. It hears nobody; all its peers went quiet at once, so it presumes them
    alive rather than taking their IPs (a second MAC on each, for as long as the fault lasted)."""
    ns = start(stack)
    cut, mine, theirs = _two_owners(stack, ns)
    owner_name = expected_owner(stack, theirs)
    for ip in (mine, theirs):
        wait_single_answer(stack, ip)
    pcap = stack.workdir / "one-way.pcap"
    capture = stack.capture(pcap)
    _cut_heartbeats(stack, cut, outgoing=False)
    try:
        wait_for(lambda: stack.agents[cut.name].metric("leifur_agent_peers", state="presumed") == 2, 30,
                 what="the cut-off node presuming its silent peers alive")
        for h in stack.lab.nodes:
            if h is not cut:  # its peers still hear it
                assert stack.agents[h.name].metric("leifur_agent_peers", state="ready") == 2, h.name
        assert stack.who_answers(theirs, duration=2.0) == [stack.lab.host(owner_name).mac]
        assert stack.who_answers(mine, duration=1.0) == [cut.mac]
    finally:
        stack.lab.run(cut.netns, ["nft", "delete", "table", "inet", "leifurpart"])
    wait_for(lambda: stack.agents[cut.name].metric("leifur_agent_peers", state="presumed") == 0, 30,
             what="the cut-off node hearing its peers again")
    capture.terminate()
    capture.wait(10)
    # Not even for a moment when the cut began: it never claimed the other node's IP.
    assert {mac for _t, mac in claims_in_capture(str(pcap), theirs)} <= {stack.lab.host(owner_name).mac}


@pytest.mark.parametrize("stack", [{"node_count": 3, "backplane": True}], indirect=True)
def test_an_owner_whose_lan_link_goes_down_hands_its_ip_over(stack):
    """The nodes talk over a backplane (their InternalIPs are there), clients sit on the LAN. The
    owner's LAN port goes down: it can no longer answer, yet its heartbeats still reach its peers,
    which hear it alive. It must tell them, and one of them takes the IP. (The lab's eth0 is a
    veth, which only a named interface list may use; the subnet rule is tested in unit tests.)"""
    ns = start(stack)
    ip = stack.service(ns, "web")
    owner_name = wait_single_answer(stack, ip)
    cut = stack.lab.host(owner_name)
    rest = [h for h in stack.lab.nodes if h is not cut]
    successor = expected_owner(stack, ip, rest)
    stack.lab.set_lan_port(cut, up=False)
    try:
        assert wait_single_answer(stack, ip) == successor
        for h in rest:  # a handover, not a failover: the cut node is alive to its peers throughout
            assert stack.agents[h.name].metric("leifur_agent_peers", state="ready") == 2, h.name
    finally:
        stack.lab.set_lan_port(cut, up=True)
    # Its carrier back, the IP returns to its owner, and stays with it alone.
    wait_for(lambda: stack.who_answers(ip) == [cut.mac], 30, interval=0.2, what=f"{ip} back on {cut.name}")
    assert stack.who_answers(ip, duration=2.0) == [cut.mac]


def test_an_agent_with_a_stale_view_is_not_answered_over(stack):
    """Regression (chaos soak, seed 2): after an API outage each agent lists again at its own moment,
    and until then two agents decided from different views and both answered for an IP. Here the
    owner's API traffic is blackholed (its watches stay open but silent, so its view goes stale);
    the owner is then excluded. The fresh agents must not answer over it while it cannot know."""
    ns = start(stack)
    ips = [stack.service(ns, f"web{i}") for i in range(4)]
    ip = ips[0]
    owner_name = wait_single_answer(stack, ip)
    stale = stack.lab.host(owner_name)
    rest = [h for h in stack.lab.nodes if h is not stale]
    successor = stack.lab.host(expected_owner(stack, ip, rest))
    pcap = stack.workdir / "stale.pcap"
    capture = stack.capture(pcap)
    port = stack.api_port
    cut = ("table inet leifurstale {\n chain in {\n  type filter hook input priority 0\n"
           f"  tcp sport {port} drop\n }}\n chain out {{\n  type filter hook output priority 0\n"
           f"  tcp dport {port} drop\n }}\n}}\n")

    def views_differ() -> float:
        return stack.agents[successor.name].metric("leifur_agent_peers", state="differing")

    stack.lab.run(stale.netns, ["nft", "-f", "-"], input=cut)
    try:
        wait_for(lambda: views_differ() == 0, 30, what=f"{successor.name} agreeing with every peer before the label")
        stack.label_node(stale, {names.LABEL_EXCLUDE_LB: "true"})
        # The successor has seen the label (its view moved away from the stale owner's): from now on
        # it would take the IP, were it not for the rule under test.
        wait_for(lambda: views_differ() >= 1, 30, what=f"{successor.name} deciding unlike the stale owner")
        # Only the stale owner answers: nobody takes an IP from a live peer whose view differs.
        assert stack.who_answers(ip, duration=1.5) == [stale.mac]
    finally:
        stack.lab.run(stale.netns, ["nft", "delete", "table", "inet", "leifurstale"])
    # Its view catches up (the blackholed watch resumes): the IP moves, with one short handover.
    wait_for(lambda: stack.who_answers(ip) == [successor.mac], 60, what="the IP moving once the view is fresh")
    time.sleep(0.5)
    capture.terminate()
    capture.wait(10)
    windows = handover_windows(claims_in_capture(str(pcap), ip), HANDOVER_WINDOW)
    assert all(last - first <= HANDOVER_WINDOW for first, last, _macs in windows), windows
    stack.label_node(stale, {names.LABEL_EXCLUDE_LB: None})


def test_garbage_on_the_heartbeat_port_changes_nothing(stack):
    ns = start(stack)
    ip = stack.service(ns, "web")
    answering = wait_single_answer(stack, ip)
    targets = [h.ip4 for h in stack.lab.nodes]
    nodes = [stack.node_name(h) for h in stack.lab.nodes]
    # Besides garbage, well-formed heartbeats from the client's address: an unknown node, and each real
    # node saying it leaves with a newer incarnation (accepted, that would drop the owner for good).
    flood = (
        "import json, os, random, socket, sys, time\n"
        "random.seed(7)\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "good = b'LFHB1{\"node\":\"x\",\"inc\":1,\"seq\":1,\"ready\":true,\"leaving\":false}'\n"
        "forged = [b'LFHB1' + json.dumps({'node': n, 'inc': 2**62, 'seq': 1, 'ready': False,\n"
        "                                  'leaving': True}).encode() for n in sys.argv[2].split(',')]\n"
        "samples = [b'', b'LFHB1', b'LFHB1{', good, good[:-3], good + b'x' * 2000, b'LFHB1[1,2]', b'LFHB1\\xff\\xfe',\n"
        "           b'LFHB1{\"node\":null,\"inc\":1,\"seq\":1,\"ready\":true,\"leaving\":false}', *forged]\n"
        "deadline = time.monotonic() + 10\n"
        "for i in range(3000):\n"
        "    if time.monotonic() > deadline: break\n"
        "    data = samples[i % len(samples)] if i % 2 else os.urandom(random.randint(0, 1400))\n"
        "    for t in sys.argv[1].split(','):\n"
        "        s.sendto(data, (t, 7474))\n"
    )
    rejected = {name: a.metric("leifur_agent_heartbeats_rejected_total")
                for name, a in stack.agents.items()}
    stack.lab.run(stack.lab.client.netns, [sys.executable, "-c", flood, ",".join(targets), ",".join(nodes)])
    for name, agent in stack.agents.items():
        assert agent.alive(), agent.log_tail()
        # The flood reached the agent's heartbeat socket and was read, not lost on the way.
        assert agent.metric("leifur_agent_heartbeats_rejected_total") > rejected[name], name
    assert stack.who_answers(ip, duration=1.0) == [stack.lab.host(answering).mac]


def _log_times(path, message: str) -> list[float]:
    """Epoch times of an agent's log lines whose message starts with `message` (same clock as a pcap)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg", "").startswith(message):
            out.append(datetime.datetime.fromisoformat(rec["ts"].replace("Z", "+00:00")).timestamp())
    return out


def test_agents_starting_together_never_both_claim_an_ip(stack):
    """The guarantee of docs/agent.md: once a peer has heard a starting agent, it takes none of that
    agent's new IPs (for 10 s); and two MACs never claim one IP at once, beyond a handover.

    Agents launched together on a loaded machine may still start seconds apart: a peer that was
    ready before it heard the late one may announce its IPs until that one is ready, and hand them
    over then. That is allowed; a claim made after hearing the owner start is not."""
    addresses = [f"{stack.lan_ip(40)}-{stack.lan_ip(49)}"]
    pool = stack.pool("lan", addresses)
    stack.advertisement("lan", ipAddressPools=[pool], interfaces=["eth0"])
    stack.start(agents=False)
    ns = stack.namespace("apps")
    ips = [stack.service(ns, f"web{i}") for i in range(6)]
    pcap = stack.workdir / "client.pcap"
    capture = stack.capture(pcap)
    # Credentials first, so that the three processes start within milliseconds of each other.
    for host in stack.lab.nodes:
        stack.agent_kubeconfig(host)
    for host in stack.lab.nodes:
        stack.start_agent(host, reuse_credentials=True)
    for agent in stack.agents.values():
        agent.wait_ready()
    for ip in ips:
        assert wait_single_answer(stack, ip) == expected_owner(stack, ip)
    capture.terminate()
    capture.wait(10)
    by_mac = {h.mac: h for h in stack.lab.nodes}
    for ip in ips:
        owner_host = stack.lab.host(expected_owner(stack, ip))
        owner_node = stack.node_name(owner_host)
        claims = claims_in_capture(str(pcap), ip)
        windows = handover_windows(claims, HANDOVER_WINDOW)
        assert all(last - first <= HANDOVER_WINDOW for first, last, _macs in windows), (ip, windows)
        for t, mac in claims:
            if mac == owner_host.mac:
                continue
            peer = stack.agents[by_mac[mac].name]
            heard = _log_times(peer.log_path, f"heard {owner_node} (")
            assert heard, f"{by_mac[mac].name} claimed {ip} of {owner_node}, whose start it never heard"
            assert t < heard[0], (f"{by_mac[mac].name} claimed {ip} at {t:.3f}, after hearing {owner_node} "
                                  f"start at {heard[0]:.3f}: the reserve did not hold")
        # Not a test that passes by seeing nothing: the owner claimed its IP.
        assert any(mac == owner_host.mac for _t, mac in claims), (ip, claims)


def test_an_interface_that_changes_under_the_agent_or_cannot_be_used(stack):
    ns = start(stack)
    ip = stack.service(ns, "web")
    owner_name = wait_single_answer(stack, ip)
    host = stack.lab.host(owner_name)
    # The owner's interface gets a new MAC (a bond re-formed, a NIC replaced): answers follow it.
    new_mac = "02:00:00:ee:00:01"
    stack.lab.run(host.netns, ["ip", "link", "set", "eth0", "address", new_mac])
    wait_for(lambda: stack.who_answers(ip) == [new_mac], 30, what="answers with the interface's new MAC")
    stack.lab.run(host.netns, ["ip", "link", "set", "eth0", "address", host.mac])
    wait_for(lambda: stack.who_answers(ip) == [host.mac], 30, what="answers with the old MAC again")

    # An advertisement naming an interface that cannot answer ARP (loopback): the owner says so on
    # the Service and does not claim the IP in its record or metrics.
    pool2 = stack.pool("lo", [f"{stack.lan_ip(50)}-{stack.lan_ip(52)}"])
    stack.advertisement("lo", ipAddressPools=[pool2], interfaces=["lo"])
    stack.cluster.create_service(ns, "dark", annotations={names.ANN_ADDRESS_POOL: pool2})
    stack.endpoints(ns, "dark", stack.lab.nodes)
    dark_ip = wait_for(lambda: (ips := stack.cluster.ips(ns, "dark")) and ips[0], 30, what="an IP for dark")
    event = wait_for(lambda: stack.cluster.has_event(ns, "dark", names.REASON_NOT_ANNOUNCED), 30,
                     what="a NotAnnounced event")
    assert "lo" in event["message"], event["message"]
    assert not stack.cluster.has_event(ns, "dark", names.REASON_NODE_ASSIGNED)
    assert stack.who_answers(dark_ip) == []
    assert sum(a.metric("leifur_agent_announced_ips") for a in stack.agents.values()) == 1
    # The working IP is undisturbed.
    assert stack.who_answers(ip) == [host.mac]
