"""leifur-agent: announces the IPs this node owns on the LAN (ARP, NDP or netlink)."""

from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leifur-agent", description=__doc__)
    p.add_argument("--kubeconfig", help="kubeconfig file; in-cluster config when omitted")
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME"), help="this node's name (env NODE_NAME)")
    p.add_argument("--metrics-address", default=":7473", help="host:port for /metrics, /healthz, /readyz")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    print("leifur-agent: announcement is not built yet (tracked in issue 4)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
