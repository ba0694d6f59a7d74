"""leifur-agent: announces the IPs this node owns on the LAN (ARP, NDP or netlink), and in BGP mode
advertises them to the operator's routers through the node's FRR."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import leifur
from leifur.kube import observability
from leifur.kube.certificate import CertificateProblem
from leifur.kube.client import load_client
from leifur.model.settings import AgentSettings, ConflictSettings, HeartbeatSettings

log = logging.getLogger("leifur.agent")


def build_parser() -> argparse.ArgumentParser:
    defaults = AgentSettings()
    hb = defaults.heartbeat
    p = argparse.ArgumentParser(prog="leifur-agent", description=__doc__)
    leifur.add_version_flag(p)
    observability.add_common_flags(p, defaults.metrics_port, defaults.health_address)
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME"), help="this node's name (env NODE_NAME)")
    p.add_argument("--load-balancer-class", default=os.environ.get("LEIFUR_LOAD_BALANCER_CLASS") or None,
                   help="announce exactly this spec.loadBalancerClass (default: Services without a class); "
                        "must match the controller's flag")
    p.add_argument("--heartbeat-port", type=int, default=hb.port,
                   help=f"UDP port agents exchange heartbeats on, the same on every node (default {hb.port})")
    p.add_argument("--heartbeat-interval", type=float, default=hb.interval,
                   help=f"seconds between heartbeats (default {hb.interval})")
    p.add_argument("--dead-after", type=float, default=hb.dead_after,
                   help=f"a peer not heard for this many seconds is dead and its IPs move (default {hb.dead_after})")
    p.add_argument("--heartbeat-key-dir", default=hb.key_dir,
                   help="directory where the Secret with the heartbeat keys is mounted (files current, next, "
                        f"previous; default {hb.key_dir})")
    p.add_argument("--heartbeat-max-age", type=float, default=hb.max_age,
                   help="refuse a heartbeat whose timestamp is further than this many seconds from our clock, "
                        f"as a replay (default {hb.max_age})")
    p.add_argument("--heartbeat-accept-unauthenticated", action="store_true",
                   help="during an upgrade from agents that do not sign heartbeats: also send and accept "
                        "unsigned ones (remove once every agent is upgraded)")
    p.add_argument("--insecure-heartbeats", action="store_true",
                   help="no heartbeat key: send and accept unsigned heartbeats; anyone on the LAN can then "
                        "forge them")
    p.add_argument("--handover-grace", type=float, default=defaults.handover_grace,
                   help="on SIGTERM, seconds to keep answering after telling peers we leave "
                        f"(default {defaults.handover_grace})")
    cs = defaults.conflicts
    p.add_argument("--address-probe-count", type=int, default=cs.probe_count,
                   help="ARP probes / DAD solicitations sent for a new IP before its first announcement; 0 turns "
                        f"probing off (default {cs.probe_count})")
    p.add_argument("--address-probe-interval", type=float, default=cs.probe_interval,
                   help=f"seconds between probes (default {cs.probe_interval})")
    p.add_argument("--address-probe-wait", type=float, default=cs.probe_wait,
                   help=f"seconds to listen for an answer after the last probe (default {cs.probe_wait})")
    p.add_argument("--address-defend-interval", type=float, default=cs.defend_interval,
                   help="a foreign claim of an announced IP within this many seconds of our last defence is a "
                        f"persistent conflict (default {cs.defend_interval})")
    p.add_argument("--address-conflict-clear-after", type=float, default=cs.clear_after,
                   help="a conflict, or a probe's finding, is forgotten after this many seconds without a sign of "
                        f"it (default {cs.clear_after})")
    p.add_argument("--address-conflict-policy", choices=("defend", "yield"), default=cs.policy,
                   help="on a persistent foreign claim: keep announcing and defend once per defend interval "
                        f"(defend), or stop announcing the IP until the claims stop (yield; default {cs.policy})")
    p.add_argument("--bgp-frr-config", metavar="PATH",
                   help="BGP mode: the FRR configuration file the agent writes (frr.conf in the directory the "
                        "daemons read it from) and reloads; with --bgp-vty-dir (default: BGP mode off)")
    p.add_argument("--bgp-vty-dir", metavar="DIR",
                   help="BGP mode: the directory of the FRR daemons' vty sockets; with --bgp-frr-config")
    return p


def settings_from(args: argparse.Namespace) -> AgentSettings | None:
    """The settings the flags ask for; None (after saying why) if they break a rule."""
    if args.insecure_heartbeats and args.heartbeat_accept_unauthenticated:
        print("leifur-agent: --insecure-heartbeats and --heartbeat-accept-unauthenticated exclude each other "
              "(without a key every heartbeat is unsigned)", file=sys.stderr)
        return None
    try:
        heartbeat = HeartbeatSettings(args.heartbeat_port, args.heartbeat_interval, args.dead_after,
                                      args.heartbeat_max_age,
                                      None if args.insecure_heartbeats else args.heartbeat_key_dir,
                                      args.heartbeat_accept_unauthenticated)
    except ValueError as e:
        # HeartbeatSettings' rules, said in the flags' words.
        rule = {"dead_after must exceed two heartbeat intervals": "--dead-after must exceed two heartbeat intervals",
                "max_age must exceed dead_after": "--heartbeat-max-age must exceed --dead-after"}[str(e)]
        print(f"leifur-agent: {rule}", file=sys.stderr)
        return None
    try:
        conflict = ConflictSettings(args.address_probe_count, args.address_probe_interval, args.address_probe_wait,
                                    args.address_defend_interval, args.address_conflict_clear_after,
                                    args.address_conflict_policy)
    except ValueError as e:
        rule = {"probe_count must be 0..10 (0: no probing)": "--address-probe-count must be 0..10",
                "probe_interval and probe_wait must not be negative":
                    "--address-probe-interval and --address-probe-wait must not be negative",
                "need 0 < defend_interval <= clear_after":
                    "--address-defend-interval must be positive and at most --address-conflict-clear-after",
                }.get(str(e), str(e))
        print(f"leifur-agent: {rule}", file=sys.stderr)
        return None
    return AgentSettings(heartbeat=heartbeat, handover_grace=args.handover_grace, conflicts=conflict)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.node_name:
        print("leifur-agent: --node-name (or env NODE_NAME) is required", file=sys.stderr)
        return 2
    settings = settings_from(args)
    if settings is None:
        return 2
    if bool(args.bgp_frr_config) != bool(args.bgp_vty_dir):
        print("leifur-agent: BGP mode needs both --bgp-frr-config and --bgp-vty-dir", file=sys.stderr)
        return 2
    # Every line says which node it comes from, as a field: the agents' logs are read together.
    observability.setup_logging(args.log_level, node=args.node_name)
    observability.started(parser.prog)
    from .app import Agent
    from .frr import FRR
    from .heartbeat_keys import KeyDirectory, KeyProblem

    keys = None
    if settings.heartbeat.key_dir is None:
        log.warning("heartbeats are not authenticated (--insecure-heartbeats): anyone on the LAN can forge them")
    else:
        try:
            keys = KeyDirectory(settings.heartbeat.key_dir)
        except KeyProblem as e:
            print(f"leifur-agent: {e}", file=sys.stderr)
            return 2
    try:
        tls = observability.serving_certificate(args, [args.node_name])
    except CertificateProblem as e:
        print(f"leifur-agent: {e}", file=sys.stderr)
        return 2
    api_client = load_client(args.kubeconfig)
    bgp = FRR(args.bgp_frr_config, args.bgp_vty_dir) if args.bgp_frr_config else None
    agent = Agent(api_client, args.node_name, settings, keys=keys, load_balancer_class=args.load_balancer_class,
                  bgp=bgp)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stop())
    endpoints = observability.start_endpoints(args, api_client, agent.healthy, lambda: agent.ready, tls)
    log.info("leifur-agent on node %s; %s", args.node_name, endpoints.describe())
    agent.run()
    endpoints.shutdown()
    log.info("leifur-agent stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
