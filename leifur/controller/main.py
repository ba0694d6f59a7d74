"""leifur-controller: assigns LoadBalancer Services their IPs from IPAddressPools."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading

from leifur.kube import observability
from leifur.kube.client import load_client

log = logging.getLogger("leifur.controller")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leifur-controller", description=__doc__)
    observability.add_common_flags(p, 7472)
    p.add_argument("--load-balancer-class", default=os.environ.get("LEIFUR_LOAD_BALANCER_CLASS") or None,
                   help="handle exactly this spec.loadBalancerClass and nothing else "
                        "(default: Services without a class)")
    p.add_argument("--workers", type=int, default=4, help="concurrent Service syncs (default 4)")
    p.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True,
                   help="take a Lease before writing, so that replicas can run side by side (default on)")
    p.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE", "leifur-system"),
                   help="namespace of the leader Lease (env POD_NAMESPACE, default leifur-system)")
    p.add_argument("--lease-duration", type=float, default=15.0, help="seconds (default 15)")
    p.add_argument("--renew-deadline", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--retry-period", type=float, default=2.0, help="seconds (default 2)")
    p.add_argument("--identity", default=os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
                   help="this replica's name in the Lease (env POD_NAME)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    observability.setup_logging(args.log_level)
    from leifur.controller.app import Controller

    controller = Controller(
        load_client(args.kubeconfig), args.identity, args.load_balancer_class, workers=args.workers,
        lease_namespace=args.lease_namespace if args.leader_elect else None,
        lease_duration=args.lease_duration, renew_deadline=args.renew_deadline, retry_period=args.retry_period,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = observability.serve(args.metrics_address, controller.healthy, controller.ready)
    log.info("leifur-controller %s starting; metrics on port %d; class %s", args.identity, server.server_port,
             args.load_balancer_class or "<unset>")
    controller.start()
    while not stop.wait(0.5):
        if controller.lost_leadership.is_set():
            # Exit so that the Deployment restarts us as a follower with fresh state.
            controller.stop()
            return 1
    log.info("shutting down: finishing in-flight syncs and releasing the Lease")
    controller.stop()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
