"""leifur-controller: assigns LoadBalancer Services their IPs from IPAddressPools."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leifur-controller", description=__doc__)
    p.add_argument("--kubeconfig", help="kubeconfig file; in-cluster config when omitted")
    p.add_argument("--metrics-address", default=":7472", help="host:port for /metrics, /healthz, /readyz")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--load-balancer-class", default=None,
                   help="handle exactly this spec.loadBalancerClass (default: Services without a class)")
    return p


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    print("leifur-controller: the reconcile is not built yet (tracked in issue 3)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
