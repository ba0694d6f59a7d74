"""leifurctl (also kubectl leifur): the operator's tool for Leifur.

status and explain read the cluster (read-only); validate checks manifests offline;
migrate translates another load balancer's configuration (MetalLB's) into Leifur's.
The development environment (control plane, demo) is not part of it: see leifur-dev.
"""

from __future__ import annotations

import argparse
import os
import sys

import leifur
from leifur.cli import migrate, output


def _emit(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


class CtlUsage(RuntimeError):
    """A wrong argument that argparse cannot see (exit 2)."""


def _split_service(arg: str, namespace: str | None) -> tuple[str, str]:
    if "/" in arg:
        ns, _, name = arg.partition("/")
        if not ns or not name or "/" in name:
            raise CtlUsage(f"{arg!r} is not NAMESPACE/SERVICE")
        if namespace and namespace != ns:
            raise CtlUsage(f"{arg!r} and --namespace {namespace} name different namespaces")
        return ns, name
    return namespace or "default", arg


def _status(args: argparse.Namespace) -> int:
    from leifur.cli import snapshot, status

    snap = snapshot.fetch(snapshot.connect(args.kubeconfig, args.context))
    rep = status.report(snap, args.load_balancer_class, args.namespace)
    _emit(status.render(rep) if args.output == "table" else output.dump(rep, args.output))
    return status.exit_code(rep)


def _explain(args: argparse.Namespace) -> int:
    from leifur.cli import explain, snapshot

    namespace, name = _split_service(args.service, args.namespace)
    snap = snapshot.fetch(snapshot.connect(args.kubeconfig, args.context), event_for=(namespace, name))
    rep = explain.report(snap, namespace, name, args.load_balancer_class)
    _emit(explain.render(rep) if args.output == "table" else output.dump(rep, args.output))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from leifur.cli import validate

    rep = validate.validate(args.files)
    if args.output == "table":
        _emit(validate.render(rep, args.strict))
    else:
        _emit(output.dump(rep.as_dict(args.strict), args.output))
    return 0 if rep.ok(args.strict) else 1


_OUTPUT_HELP = "table (default, for people), json or yaml (for scripts; the same fields in both)"


def _cluster_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", default=None, metavar="PATH",
                   help="kubeconfig file (default: env KUBECONFIG, else ~/.kube/config; inside a Pod, its "
                        "ServiceAccount)")
    p.add_argument("--context", default=None, help="kubeconfig context to use (default: its current-context)")
    p.add_argument("--load-balancer-class", default=os.environ.get("LEIFUR_LOAD_BALANCER_CLASS") or None,
                   metavar="CLASS",
                   help="the class the controller runs with, if it was started with --load-balancer-class (env "
                        "LEIFUR_LOAD_BALANCER_CLASS; default: Services without spec.loadBalancerClass)")
    p.add_argument("-o", "--output", choices=output.FORMATS, default="table", help=_OUTPUT_HELP)


_STATUS_DESCRIPTION = """\
Show every IPAddressPool with its usage per family, and every LoadBalancer Service that Leifur
handles with its IPs, pool and announcing node. Whatever has a problem comes first, with a STATE
saying what (for a Service: the controller's reason such as Taken, Exhausted, NoPool, or why its
IP is not announced such as NoAdvertisement, NoReadyEndpoints, NoEligibleNode).

Usage is counted from the Services' status, as the controller counts it. Who announces an IP
comes from the agents' L2NodeStatus records (kubectl get l2nodestatuses). Reads only.

exit status:
  0  nothing listed is a problem: every pool and Service OK, no stray announcement or conflict
  1  the cluster cannot be read
  2  wrong arguments
  3  problems listed: a pool or Service whose STATE is not OK, a stray announcement or a
     conflict (warning: lines); notes about what could not be read do not count"""

_EXPLAIN_DESCRIPTION = """\
Explain why a Service has no IP, or why its IP is not announced on the LAN, or who
announces it.

Shows the controller's own words (the leifur.io/IPAllocated condition and the Service's Events)
next to the same decisions made now, from the cluster's objects, with the controller's and the
agents' code: the allocator rebuilt from every Service's status, then the Service's request
decided (reasons: InvalidRequest, NotInPool, Taken, Exhausted, NoPool, FamilyUnavailable); then,
for each IP, who may announce it (reasons such as NoAdvertisement, NoReadyEndpoints,
NoEligibleNode; NotAnnounced when the elected node's record does not list it,
MultipleAnnouncers when more than one node's record does).

Agents' liveness travels in their heartbeats, not through the API: nodes with an L2NodeStatus
record count as having a live agent (shown as "agents seen"). An agent writes that record once
it announces something, so a node whose agent runs but announces nothing yet is not counted.
Reads only; exits 0 when the explanation is printed, whatever it says."""

_VALIDATE_DESCRIPTION = """\
Check IPAddressPool and L2Advertisement manifests offline, before applying them: YAML syntax,
kind and apiVersion, unknown fields, names, and each pool's addresses with the controller's own
parser (bad CIDRs, host bits set, reversed or mixed-family ranges, entries overlapping within a
pool, selectors). Across all files given: the same object defined twice, pools sharing
addresses, advertisements naming pools that are not in the files. BGPPeer, BGPAdvertisement and
BFDProfile manifests are checked with the BGP plan's own parser and the CRDs' rules (ASNs,
addresses, hold and keepalive times, communities, BFD intervals); across files, advertisements
naming peers and peers naming BFD profiles that are not in the files.

Errors are what the API server would reject or the controller would mark invalid: exit 1.
Warnings are accepted but probably not meant: pools sharing addresses (the controller never
gives an address twice, and marks both pools Overlapping), an advertisement naming a pool not in
the files (it may exist in the cluster already). They do not change the exit code unless --strict.
Objects of other kinds (a Service, a Deployment) are skipped and counted."""

_EPILOG_STATUS = """\
examples:
  %(prog)s
  %(prog)s -n web -o json | jq '.services[] | select(.state != "OK")'
  %(prog)s >/dev/null; echo $?    # 0: all fine, 3: problems, 1: no answer"""

_EPILOG_EXPLAIN = """\
examples:
  %(prog)s web/frontend
  %(prog)s frontend -n web -o yaml"""

_EPILOG_VALIDATE = """\
examples:
  %(prog)s pools.yaml advertisements.yaml
  %(prog)s config/ --strict
  kustomize build overlays/prod | %(prog)s -"""


def program_name(argv0: str) -> str:
    """How the user called us: kubectl runs a plugin as kubectl-NAME for `kubectl NAME`."""
    base = os.path.basename(argv0)
    return "kubectl " + base.removeprefix("kubectl-") if base.startswith("kubectl-") else "leifurctl"


def build_parser(prog: str = "leifurctl") -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=raw)
    leifur.add_version_flag(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    status = sub.add_parser("status", help="pools with their usage, Services with IPs and nodes; problems first",
                            description=_STATUS_DESCRIPTION, epilog=_EPILOG_STATUS, formatter_class=raw)
    _cluster_flags(status)
    status.add_argument("-n", "--namespace", default=None,
                        help="list only the Services of this namespace (pools are cluster-wide and always listed, "
                             "their usage counted over all namespaces)")
    status.set_defaults(func=_status)

    explain = sub.add_parser("explain", help="why a Service has no IP or is not announced, or who announces it",
                             description=_EXPLAIN_DESCRIPTION, epilog=_EPILOG_EXPLAIN, formatter_class=raw)
    explain.add_argument("service", metavar="NAMESPACE/SERVICE",
                         help="the Service; a bare SERVICE is looked up in --namespace")
    explain.add_argument("-n", "--namespace", default=None, help="namespace of a bare SERVICE (default: default)")
    _cluster_flags(explain)
    explain.set_defaults(func=_explain)

    validate = sub.add_parser("validate", help="check Leifur's manifests offline; exit 1 on errors",
                              description=_VALIDATE_DESCRIPTION, epilog=_EPILOG_VALIDATE, formatter_class=raw)
    validate.add_argument("files", nargs="+", metavar="FILE",
                          help="YAML or JSON files, several objects per file allowed ('---', or a List); a "
                               "directory means its .yaml, .yml and .json files; '-' reads standard input")
    validate.add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")
    validate.add_argument("-o", "--output", choices=output.FORMATS, default="table", help=_OUTPUT_HELP)
    validate.set_defaults(func=_validate)

    migrate.register(sub, _cluster_flags)
    return p


def main(argv: list[str] | None = None) -> int:
    prog = program_name(sys.argv[0])
    args = build_parser(prog).parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `leifurctl status | head`: the reader went away. Point stdout at /dev/null so that the
        # interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except CtlUsage as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return output.EXIT_USAGE
    except (RuntimeError, TimeoutError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return output.EXIT_UNREADABLE


if __name__ == "__main__":
    sys.exit(main())
