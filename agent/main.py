"""leifur-agent: announces the IPs this node owns on the LAN (ARP, NDP or netlink)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from leifur.kube import observability
from leifur.kube.client import load_client

log = logging.getLogger("agent")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leifur-agent", description=__doc__)
    observability.add_common_flags(p, 7473)
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME"), help="this node's name (env NODE_NAME)")
    p.add_argument("--load-balancer-class", default=os.environ.get("LEIFUR_LOAD_BALANCER_CLASS") or None,
                   help="announce exactly this spec.loadBalancerClass (default: Services without a class); "
                        "must match the controller's flag")
    p.add_argument("--heartbeat-port", type=int, default=7474,
                   help="UDP port agents exchange heartbeats on, the same on every node (default 7474)")
    p.add_argument("--heartbeat-interval", type=float, default=0.1, help="seconds between heartbeats (default 0.1)")
    p.add_argument("--dead-after", type=float, default=0.5,
                   help="a peer not heard for this many seconds is dead and its IPs move (default 0.5)")
    p.add_argument("--handover-grace", type=float, default=0.05,
                   help="on SIGTERM, seconds to keep answering after telling peers we leave (default 0.05)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.node_name:
        print("leifur-agent: --node-name (or env NODE_NAME) is required", file=sys.stderr)
        return 2
    if args.dead_after <= 2 * args.heartbeat_interval:
        print("leifur-agent: --dead-after must exceed two heartbeat intervals", file=sys.stderr)
        return 2
    observability.setup_logging(args.log_level)
    # pyroute2 logs every netlink message at debug level: far too much next to ours.
    logging.getLogger("pyroute2").setLevel(max(logging.INFO, logging.getLogger().level))
    from .app import Agent

    agent = Agent(load_client(args.kubeconfig), args.node_name, load_balancer_class=args.load_balancer_class,
                  heartbeat_port=args.heartbeat_port, heartbeat_interval=args.heartbeat_interval,
                  dead_after=args.dead_after, handover_grace=args.handover_grace)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stop())
    server = observability.serve(args.metrics_address, agent.healthy, lambda: agent.ready)
    log.info("leifur-agent on node %s; metrics on port %d", args.node_name, server.server_port)
    agent.run()
    server.shutdown()
    log.info("leifur-agent stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
