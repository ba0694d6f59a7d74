"""leifur-controller: assigns LoadBalancer Services their IPs from IPAddressPools."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import socket
import sys
import threading

import leifur
from leifur.controller import heartbeat_secret
from leifur.kube import observability
from leifur.kube.certificate import CertificateProblem
from leifur.kube.client import load_client
from leifur.model.settings import ControllerSettings, LeaderSettings

log = logging.getLogger("leifur.controller")

DEFAULTS = ControllerSettings()


def build_parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    p = argparse.ArgumentParser(prog="leifur-controller", description=__doc__)
    leifur.add_version_flag(p)
    observability.add_common_flags(p, d.metrics_port, d.health_address)
    p.add_argument("--load-balancer-class", default=os.environ.get("LEIFUR_LOAD_BALANCER_CLASS") or None,
                   help="handle exactly this spec.loadBalancerClass and nothing else "
                        "(default: Services without a class)")
    p.add_argument("--workers", type=int, default=d.workers, help=f"concurrent Service syncs (default {d.workers})")
    p.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True,
                   help="take a Lease before writing, so that replicas can run side by side (default on)")
    p.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE", d.lease_namespace),
                   help="the controller's namespace: the leader Lease's and the heartbeat key Secret's "
                        f"(env POD_NAMESPACE, default {d.lease_namespace})")
    p.add_argument("--lease-duration", type=float, default=d.leader.lease_duration,
                   help=f"seconds (default {d.leader.lease_duration:g})")
    p.add_argument("--renew-deadline", type=float, default=d.leader.renew_deadline,
                   help=f"seconds (default {d.leader.renew_deadline:g})")
    p.add_argument("--retry-period", type=float, default=d.leader.retry_period,
                   help=f"seconds (default {d.leader.retry_period:g})")
    p.add_argument("--identity", default=os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
                   help="this replica's name in the Lease (env POD_NAME)")
    p.add_argument("--heartbeat-secret", default=d.heartbeat_secret, metavar="NAME",
                   help="the Secret, in --lease-namespace, with the key that authenticates the agents' heartbeats "
                        f"(default {d.heartbeat_secret})")
    p.add_argument("--create-heartbeat-secret", action=argparse.BooleanOptionalAction,
                   default=d.create_heartbeat_secret,
                   help="at start-up, create that Secret with a random key if it is missing; an existing one is "
                        "never changed. Off: you create it yourself (default on)")
    return p


def settings_from(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ControllerSettings:
    try:
        leader = LeaderSettings(args.lease_duration, args.renew_deadline, args.retry_period)
    except ValueError as e:
        parser.error(str(e))  # a usage error, not a traceback
    if (args.leader_elect or args.create_heartbeat_secret) and not args.lease_namespace:
        # An empty POD_NAMESPACE used to turn leader election off unsaid; campaigning in "" fails forever,
        # and so would creating the Secret there.
        parser.error("--lease-namespace (or env POD_NAMESPACE) is empty; name a namespace, or pass "
                     "--no-leader-elect and --no-create-heartbeat-secret")
    if not heartbeat_secret.valid_name(args.heartbeat_secret):
        parser.error(f"--heartbeat-secret {args.heartbeat_secret!r} is not a valid Secret name "
                     "(lower-case letters, digits, '-' and '.')")
    return dataclasses.replace(DEFAULTS, workers=args.workers, lease_namespace=args.lease_namespace, leader=leader,
                               heartbeat_secret=args.heartbeat_secret,
                               create_heartbeat_secret=args.create_heartbeat_secret)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = settings_from(parser, args)
    observability.setup_logging(args.log_level)
    observability.started(parser.prog)
    try:
        tls = observability.serving_certificate(args, [args.identity])
    except CertificateProblem as e:
        print(f"leifur-controller: {e}", file=sys.stderr)
        return 2
    from leifur.controller.app import Controller

    api_client = load_client(args.kubeconfig)
    controller = Controller(api_client, args.identity, args.load_balancer_class, settings,
                            leader_elect=args.leader_elect)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    endpoints = observability.start_endpoints(args, api_client, controller.healthy, controller.ready, tls)
    log.info("leifur-controller %s starting; %s; class %s", args.identity, endpoints.describe(),
             args.load_balancer_class or "<unset>")
    controller.start()
    while not stop.wait(0.5):
        if controller.lost_leadership.is_set():
            # Exit so that the Deployment restarts us as a follower with fresh state.
            controller.stop()
            return 1
    log.info("shutting down: finishing in-flight syncs and releasing the Lease")
    controller.stop()
    endpoints.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
