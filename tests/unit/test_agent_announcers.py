"""How the agent applies a sync's claims to its announcers, with in-memory fakes for the
responders and the kernel's addresses (no sockets, no netlink)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from leifur.agent.app import Announcers
from leifur.agent.netlink import AddressFailure
from leifur.agent.step import Claim
from leifur.announce import plan
from leifur.announce.election import Announcement
from leifur.announce.interfaces import Link


class FakeResponder:
    def __init__(self, ifname: str, fail: bool) -> None:
        self.ifname = ifname
        self.fail = fail
        self.started = self.closed = False
        self.ips: tuple[set[str], set[str]] | None = None
        self.announced = 0
        self.bursts: list[tuple[list[str] | None, int | None]] = []

    def start(self) -> None:
        if self.fail:
            raise OSError(f"{self.ifname} is not Ethernet")
        self.started = True

    def close(self) -> None:
        self.closed = True

    def alive(self) -> bool:
        return self.started and not self.closed

    def set_ips(self, answer: Iterable[str], announce_only: Iterable[str] = ()) -> None:
        self.ips = (set(answer), set(announce_only))

    def announce(self, ips: Iterable[str] | None = None, rounds: int | None = None) -> None:
        self.announced += 1
        self.bursts.append((None if ips is None else sorted(ips), rounds))


class FakeKernel:
    def __init__(self, failures: Iterable[AddressFailure] = ()) -> None:
        self.failures = list(failures)
        self.assignments: dict[str, set[str]] = {}
        self.cleaned = self.closed = False

    def set_ips(self, assignments: Mapping[str, Iterable[str]]) -> list[AddressFailure]:
        self.assignments = {k: set(v) for k, v in assignments.items()}
        return self.failures

    def cleanup(self) -> list[tuple[str, str]]:
        self.cleaned = True
        return []

    def close(self) -> None:
        self.closed = True


def announcers(kernel: FakeKernel | None = None, failing: Iterable[str] = ()) -> tuple[Announcers, list[FakeResponder]]:
    made: list[FakeResponder] = []
    failing = set(failing)

    def new(ifname: str) -> FakeResponder:
        made.append(FakeResponder(ifname, ifname in failing))
        return made[-1]

    return Announcers(kernel or FakeKernel(), new), made


def claim(ip: str, *ifaces: str, mode: str = "Responder") -> Claim:
    d = plan.Decision(ip, ("default/web",), "lan", Announcement(ip, "n1", (), mode))
    return Claim(d, ifaces, mode)


def link(name: str, index: int) -> Link:
    return Link(name, index, "02:00:00:00:00:01", "", False, False, True, False, ())


LINKS = {"eth0": link("eth0", 2), "eth1": link("eth1", 3)}


def test_one_failing_interface_does_not_stop_the_others_and_is_reported() -> None:
    a, made = announcers(failing={"eth0"})
    failed = a.apply({"192.0.2.40": claim("192.0.2.40", "eth0"), "192.0.2.41": claim("192.0.2.41", "eth1")},
                     LINKS)
    assert failed == {"192.0.2.40": "cannot announce on eth0: eth0 is not Ethernet"}
    eth0, eth1 = made
    assert eth0.closed and eth1.ips == ({"192.0.2.41"}, set())
    assert set(a.responders) == {"eth1"}


def test_an_ip_on_two_interfaces_is_reported_when_one_fails() -> None:
    a, made = announcers(failing={"eth1"})
    failed = a.apply({"192.0.2.40": claim("192.0.2.40", "eth0", "eth1")}, LINKS)
    assert set(failed) == {"192.0.2.40"}
    assert made[0].ips == ({"192.0.2.40"}, set())


def test_a_missing_interface_is_reported() -> None:
    a, made = announcers()
    failed = a.apply({"192.0.2.40": claim("192.0.2.40", "eth9")}, LINKS)
    assert failed == {"192.0.2.40": "cannot announce on eth9: interface eth9 does not exist"}
    assert made == []


def test_netlink_mode_puts_the_ip_in_the_kernel_and_only_announces_it() -> None:
    kernel = FakeKernel()
    a, made = announcers(kernel)
    assert a.apply({"192.0.2.40": claim("192.0.2.40", "eth0", mode="Netlink")}, LINKS) == {}
    assert kernel.assignments == {"eth0": {"192.0.2.40"}}
    assert made[0].ips == (set(), {"192.0.2.40"})


def test_a_kernel_failure_is_reported_and_the_responders_go_ahead() -> None:
    kernel = FakeKernel([AddressFailure("eth0", "192.0.2.40", "add", "Permission denied")])
    a, made = announcers(kernel)
    failed = a.apply({"192.0.2.40": claim("192.0.2.40", "eth0", mode="Netlink"),
                      "192.0.2.41": claim("192.0.2.41", "eth1")}, LINKS)
    assert failed == {"192.0.2.40": "add 192.0.2.40 on eth0 failed: Permission denied"}
    assert [r.ifname for r in made if r.alive()] == ["eth0", "eth1"]


def test_a_recreated_interface_gets_a_new_responder() -> None:
    a, made = announcers()
    claims = {"192.0.2.40": claim("192.0.2.40", "eth0")}
    a.apply(claims, LINKS)
    a.apply(claims, LINKS)
    assert len(made) == 1
    a.apply(claims, {"eth0": link("eth0", 7)})
    assert len(made) == 2 and made[0].closed and made[1].alive()


def test_an_interface_left_without_ips_loses_its_responder() -> None:
    a, made = announcers()
    a.apply({"192.0.2.40": claim("192.0.2.40", "eth0")}, LINKS)
    assert a.apply({}, LINKS) == {}
    assert made[0].closed and a.responders == {}


def test_announce_again_and_close() -> None:
    kernel = FakeKernel()
    a, made = announcers(kernel)
    a.apply({"192.0.2.40": claim("192.0.2.40", "eth0"), "192.0.2.41": claim("192.0.2.41", "eth1")}, LINKS)
    a.announce_again()
    assert [r.announced for r in made] == [1, 1]
    a.close()
    assert all(r.closed for r in made) and kernel.cleaned and kernel.closed and a.responders == {}


def test_a_defence_is_one_announcement_of_that_ip_only() -> None:
    """A foreign claim is answered with a single gratuitous round of the claimed IP; every
    responder gets it, and one that does not announce the IP ignores it (Responder.announce)."""
    a, made = announcers()
    a.apply({"192.0.2.40": claim("192.0.2.40", "eth0"), "192.0.2.41": claim("192.0.2.41", "eth1")}, LINKS)
    a.announce_once("192.0.2.40")
    assert [r.bursts for r in made] == [[(["192.0.2.40"], 1)], [(["192.0.2.40"], 1)]]
