"""leifur-dev: the development environment from a checkout (a control plane for scripts, the demo)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _up(args: argparse.Namespace) -> int:
    from leifur_dev import controlplane, gobuild

    cp = controlplane.start(Path(args.dir), persistent=True)
    print(f"control plane up in {cp.startup_seconds:.1f}s: {cp.server}")
    print(f"kubeconfig: {cp.kubeconfig}")
    print(f"kubectl:    {gobuild.ensure_built('kubectl')} --kubeconfig {cp.kubeconfig}")
    print(f"stop with:  leifur-dev down --dir {args.dir}")
    return 0


def _down(args: argparse.Namespace) -> int:
    from leifur_dev import controlplane

    if controlplane.stop_directory(Path(args.dir)):
        print(f"control plane in {args.dir} stopped")
    else:
        print(f"no running control plane was registered for {args.dir}; removed its files")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from leifur_dev import demo

    return demo.run(nodes=args.nodes, stay_up=not args.down)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leifur-dev", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="start etcd and kube-apiserver; write DIR/kubeconfig")
    up.add_argument("--dir", required=True, help="where to keep data, logs and the kubeconfig")
    up.set_defaults(func=_up)
    down = sub.add_parser("down", help="stop what 'up --dir DIR' started and remove its files")
    down.add_argument("--dir", required=True)
    down.set_defaults(func=_down)
    demo = sub.add_parser("demo", help="run the demo: control plane, a LAN of node namespaces, a Service")
    demo.add_argument("--nodes", type=int, default=3, help="how many node namespaces (default 3)")
    demo.add_argument("--down", action="store_true", help="tear down as soon as the demo has run")
    demo.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except (RuntimeError, TimeoutError) as e:
        print(f"leifur-dev: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
