"""Netlink mode: put the IP on the interface and let the kernel answer ARP and NDP for it.

IPv4 addresses go on as /32 (so they never become a secondary of the node's own subnet address,
which the kernel would delete along with it) and IPv6 ones as /128 with IFA_F_NODAD (so they are
usable at once instead of sitting "tentative" through duplicate address detection; the owner is
decided by election, not by DAD).

Our addresses must be recognisable by a fresh process after a crash, without touching anything
an operator configured. They carry the address protocol LEIFUR_IFA_PROTO (IFA_PROTO, Linux 6.3+).
On an older kernel the attribute is silently dropped; then IPv4 addresses carry the label
"<ifname>:lf" instead, and IPv6 ones, which have no label, are only recognised by the process
that added them: leftovers of a crashed agent stay until removed by hand
(`ip -6 addr del IP/128 dev IF`).

Debugging entry point (inside the node's namespace):
    python -m leifur.agent.netlink set eth0=192.0.2.40,2001:db8::40 [--hold]
    python -m leifur.agent.netlink list | cleanup
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

from leifur.kube.logfields import fields

log = logging.getLogger(__name__)

# The IFA_PROTO value on every address Leifur adds ("L"). iproute2 names 0-3 (unspec, kernel_lo,
# kernel_ra, kernel_ll); other tools pick small numbers, so 0x4c is unlikely to be anyone else's.
# `ip addr show` prints it as "proto 0x4c" (iproute2 >= 6.3).
LEIFUR_IFA_PROTO = 0x4C
# IPv4 label suffix used instead when the kernel has no IFA_PROTO.
LABEL_SUFFIX = ":lf"
_IFNAMSIZ = 16  # labels share the interface-name limit, NUL included

# Errors that mean the address is already gone when we try to remove it.
_GONE = {errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT, errno.ESRCH}


@dataclass(frozen=True)
class KernelAddress:
    """An address on an interface, and whether it is one of ours."""

    ifname: str
    index: int
    ip: str  # normalised (ipaddress' compressed form)
    prefixlen: int
    ours: bool


@dataclass(frozen=True)
class AddressFailure:
    """One address we could not add or remove; the others went ahead."""

    ifname: str
    ip: str
    action: str  # "add" or "remove"
    reason: str


def kernel_has_ifa_proto(release: str | None = None) -> bool:
    """Linux 6.3 added IFA_PROTO; older kernels ignore it without an error."""
    m = re.match(r"(\d+)\.(\d+)", release if release is not None else os.uname().release)
    return m is not None and (int(m.group(1)), int(m.group(2))) >= (6, 3)


def fallback_label(ifname: str) -> str | None:
    """The IPv4 label marking our address when IFA_PROTO is missing; None if it would not fit."""
    label = ifname + LABEL_SUFFIX
    return label if len(label) < _IFNAMSIZ else None


def full_prefix(ip: str) -> int:
    return 32 if ipaddress.ip_address(ip).version == 4 else 128


# -- pure decision ------------------------------------------------------------------------


def plan_changes(
    desired: Mapping[str, Iterable[str]], present: Sequence[KernelAddress], ifnames: Iterable[str],
) -> tuple[list[tuple[str, str]], list[KernelAddress], list[AddressFailure]]:
    """What to add, what to remove, and what cannot be done, to reach `desired`.

    An address already on the interface, ours or not, is not added again: the kernel answers for
    it either way, and an operator's address is never ours to manage. Only our addresses that are
    no longer desired are removed.
    """
    existing = set(ifnames)
    failures: list[AddressFailure] = []
    want: set[tuple[str, str]] = set()
    for ifname, ips in desired.items():
        for ip in ips:
            try:
                norm = ipaddress.ip_address(ip).compressed
            except ValueError:
                failures.append(AddressFailure(ifname, str(ip), "add", "not an IP address"))
                continue
            if ifname not in existing:
                failures.append(AddressFailure(ifname, norm, "add", "no such interface"))
                continue
            want.add((ifname, norm))
    have = {(a.ifname, a.ip) for a in present}
    adds = sorted(want - have)
    removes = [a for a in present if a.ours and (a.ifname, a.ip) not in want]
    return adds, removes, sorted(failures, key=lambda f: (f.ifname, f.ip))


# -- effects ------------------------------------------------------------------------------


class NetlinkAnnouncer:
    """Keeps this node's netlink-mode IPs on their interfaces. Thread-safe; one netlink socket."""

    def __init__(self, *, tag_with_proto: bool | None = None) -> None:
        # tag_with_proto: None detects (kernel version, then checked on the first add); False forces
        # the pre-6.3 fallback, which is how the tests exercise it on a new kernel.
        self._ipr = IPRoute()
        self._lock = threading.Lock()
        self._use_proto = kernel_has_ifa_proto() if tag_with_proto is None else tag_with_proto
        self._proto_checked = tag_with_proto is not None or not self._use_proto
        self._remembered: set[tuple[int, str]] = set()  # (ifindex, ip) added by this process
        self.failures: list[AddressFailure] = []  # from the last set_ips

    # -- reading --------------------------------------------------------------------------

    def _is_ours(self, msg, ifname: str, ip: str) -> bool:
        if msg.get("IFA_PROTO") == LEIFUR_IFA_PROTO:
            return True
        if msg["prefixlen"] != full_prefix(ip):
            return False
        label = msg.get("IFA_LABEL")
        if msg["family"] == socket.AF_INET and label is not None and label == fallback_label(ifname):
            return True
        return (msg["index"], ip) in self._remembered

    def _snapshot(self) -> tuple[dict[int, str], list[KernelAddress]]:
        names = {m["index"]: m.get("IFLA_IFNAME") for m in self._ipr.get_links()}
        present = []
        for msg in self._ipr.addr("dump"):
            ifname = names.get(msg["index"])
            raw = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
            if ifname is None or not raw:
                continue
            ip = ipaddress.ip_address(raw).compressed
            present.append(KernelAddress(ifname, msg["index"], ip, msg["prefixlen"], self._is_ours(msg, ifname, ip)))
        # Forget what vanished with its interface, so a reused index does not make a stranger's address ours.
        alive = {(a.index, a.ip) for a in present}
        self._remembered &= alive
        return names, present

    def ours(self) -> list[tuple[str, str]]:
        """(ifname, ip) of every address of ours present now."""
        with self._lock:
            _, present = self._snapshot()
        return sorted((a.ifname, a.ip) for a in present if a.ours)

    # -- writing --------------------------------------------------------------------------

    def _add(self, ifname: str, index: int, ip: str) -> None:
        version = ipaddress.ip_address(ip).version
        kw: dict = {"index": index, "address": ip, "prefixlen": full_prefix(ip)}
        if self._use_proto:
            kw["proto"] = LEIFUR_IFA_PROTO
        elif version == 4 and fallback_label(ifname):
            kw["label"] = fallback_label(ifname)
        if version == 6:
            kw["flags"] = IFA_F_NODAD
        self._ipr.addr("add", **kw)
        self._remembered.add((index, ip))
        if not self._proto_checked:
            self._check_proto(index, ip)

    def _check_proto(self, index: int, ip: str) -> None:
        """Trust but verify the kernel-version guess: a kernel without IFA_PROTO drops it silently."""
        self._proto_checked = True
        for msg in self._ipr.addr("dump", index=index):
            raw = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
            if raw and ipaddress.ip_address(raw).compressed == ip and msg.get("IFA_PROTO") != LEIFUR_IFA_PROTO:
                log.warning("the kernel does not keep IFA_PROTO on addresses; marking IPv4 addresses with the label"
                            " '<ifname>%s' instead, and IPv6 leftovers of a crashed agent will not be recognised",
                            LABEL_SUFFIX)
                self._use_proto = False
                return

    def _remove(self, a: KernelAddress) -> None:
        try:
            self._ipr.addr("del", index=a.index, address=a.ip, prefixlen=a.prefixlen)
        except NetlinkError as e:
            if e.code not in _GONE:
                raise
        self._remembered.discard((a.index, a.ip))

    def set_ips(self, assignments: Mapping[str, Iterable[str]]) -> list[AddressFailure]:
        """Make the netlink-mode IPs on each interface exactly `assignments` (ifname -> IPs).

        Idempotent. Returns what failed (also kept in `failures`); each failure is logged and
        the other addresses are still handled. Adds go before removals, so an IP moving between
        interfaces is never absent from both.
        """
        with self._lock:
            names, present = self._snapshot()
            index = {name: i for i, name in names.items()}
            adds, removes, failures = plan_changes(assignments, present, index)
            for ifname, ip in adds:
                try:
                    self._add(ifname, index[ifname], ip)
                    log.info("added %s to %s", ip, ifname, extra=fields(ip=ip, interface=ifname))
                except NetlinkError as e:
                    failures.append(AddressFailure(ifname, ip, "add", os.strerror(e.code)))
            for a in removes:
                try:
                    self._remove(a)
                    log.info("removed %s from %s", a.ip, a.ifname, extra=fields(ip=a.ip, interface=a.ifname))
                except NetlinkError as e:
                    failures.append(AddressFailure(a.ifname, a.ip, "remove", os.strerror(e.code)))
            for f in failures:
                log.warning("could not %s %s on %s: %s", f.action, f.ip, f.ifname, f.reason,
                            extra=fields(ip=f.ip, interface=f.ifname))
            self.failures = failures
            return failures

    def cleanup(self) -> list[tuple[str, str]]:
        """Remove every address of ours on any interface; returns the (ifname, ip) removed."""
        removed = []
        with self._lock:
            _, present = self._snapshot()
            for a in present:
                if not a.ours:
                    continue
                try:
                    self._remove(a)
                except NetlinkError as e:
                    log.warning("could not remove %s from %s: %s", a.ip, a.ifname, os.strerror(e.code),
                                extra=fields(ip=a.ip, interface=a.ifname))
                    continue
                log.info("removed %s from %s", a.ip, a.ifname, extra=fields(ip=a.ip, interface=a.ifname))
                removed.append((a.ifname, a.ip))
        return sorted(removed)

    def close(self) -> None:
        """Release the netlink socket; addresses stay where they are."""
        with self._lock:
            self._ipr.close()


# -- debugging entry point ----------------------------------------------------------------


def _parse_assignment(spec: str) -> tuple[str, list[str]]:
    ifname, _, ips = spec.partition("=")
    return ifname, [ip for ip in ips.split(",") if ip]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m leifur.agent.netlink",
                                description="Netlink mode by hand, for debugging.")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("set", help="make IFNAME=IP,IP... the full set of our addresses")
    s.add_argument("assignments", nargs="*", metavar="IFNAME=IP[,IP...]")
    s.add_argument("--hold", action="store_true", help="print 'ready' and wait for a signal (addresses stay)")
    s.add_argument("--no-proto", action="store_true", help="tag as a kernel without IFA_PROTO would")
    sub.add_parser("list", help="our addresses now")
    sub.add_parser("cleanup", help="remove all our addresses")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    nl = NetlinkAnnouncer(tag_with_proto=False if getattr(args, "no_proto", False) else None)
    try:
        if args.cmd == "set":
            assignments: dict[str, list[str]] = {}
            for spec in args.assignments:
                ifname, ips = _parse_assignment(spec)
                assignments.setdefault(ifname, []).extend(ips)
            failures = nl.set_ips(assignments)
            print(json.dumps({"failures": [f.__dict__ for f in failures], "ours": nl.ours()}), flush=True)
            if args.hold:
                stop = {signal.SIGINT, signal.SIGTERM}
                signal.pthread_sigmask(signal.SIG_BLOCK, stop)
                print("ready", flush=True)
                signal.sigwait(stop)
            return 1 if failures else 0
        if args.cmd == "list":
            print(json.dumps(nl.ours()))
        else:
            print(json.dumps(nl.cleanup()))
        return 0
    finally:
        nl.close()


if __name__ == "__main__":
    sys.exit(main())
