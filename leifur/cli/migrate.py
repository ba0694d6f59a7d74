"""`leifurctl migrate`: moving a cluster's load-balancer configuration over to Leifur.

`migrate from-metallb` reads MetalLB's objects (files, or the cluster), prints Leifur's on
stdout and the report on stderr. The translation itself is leifur/cli/metallb.py; this module
reads, prints and picks the exit code. `migrate check` says what Leifur's controller and agents
would do to the cluster's Services if they took over now (leifur/cli/takeover.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable

from leifur.cli import metallb, output, validate

EXIT_OK = output.EXIT_OK
EXIT_UNREADABLE = output.EXIT_UNREADABLE  # a file or the cluster could not be read, or held no MetalLB object
EXIT_USAGE = output.EXIT_USAGE
EXIT_UNTRANSLATED = output.EXIT_PROBLEMS  # something could not be translated: nothing written, unless allowed
EXIT_WOULD_CHANGE = output.EXIT_PROBLEMS  # check: a Service would change IPs, keep them with a problem, or go dark

OUTPUT_FORMATS = ("yaml", "json")

# What is read from the cluster: (kind, version, plural). BGPPeer's storage version is v1beta2.
CLUSTER_KINDS = (
    (metallb.POOL, "v1beta1", "ipaddresspools"),
    (metallb.ADVERTISEMENT, "v1beta1", "l2advertisements"),
    ("BGPPeer", "v1beta2", "bgppeers"),
    ("BGPAdvertisement", "v1beta1", "bgpadvertisements"),
    ("BFDProfile", "v1beta1", "bfdprofiles"),
    ("Community", "v1beta1", "communities"),
)
_FROM_CLUSTER = "cluster"


class Unreadable(RuntimeError):
    """The input could not be read; the message is for the operator."""


def read_files(paths: Iterable[str]) -> list[metallb.Source]:
    """Every object in the files (YAML documents, JSON, Lists; directories one level deep; '-' is stdin)."""
    report = validate.Report()
    sources = [metallb.Source(doc.data, f"{doc.file}:{doc.line}") for doc in validate.read(paths, report)]
    _refuse_errors(report, "cannot read the input")
    return sources


def _refuse_errors(report: validate.Report, what: str) -> None:
    """Unreadable, listing the report's errors, if it has any."""
    problems = [f"{f.location}: {f.message}" for f in report.findings if f.level == validate.ERROR]
    if problems:
        raise Unreadable(f"{what}:\n  " + "\n  ".join(problems))


def read_cluster(kubeconfig: str | None, context: str | None, namespace: str) -> list[metallb.Source]:
    """MetalLB's configuration objects in its namespace. A BGP kind whose CRD is missing is simply absent."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    from leifur.cli import snapshot

    api = snapshot.connect(kubeconfig, context)
    sources = []
    for kind, version, plural in CLUSTER_KINDS:
        api_version = f"{metallb.GROUP}/{version}"
        try:
            items = snapshot.list_all(api, f"/apis/{api_version}/namespaces/{namespace}/{plural}")
        except ApiException as e:
            if e.status == 404 and kind not in (metallb.POOL, metallb.ADVERTISEMENT):
                continue
            if e.status == 404:
                raise Unreadable(f"the API server does not serve {api_version} {kind}: is MetalLB (v0.13 or "
                                 "later) installed?") from None
            raise Unreadable(f"listing {api_version} {kind} in {namespace} failed: {e.status} {e.reason}") from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise Unreadable(f"cannot reach the API server at {api.configuration.host}: {e}") from None
        for item in items:
            # A LIST's items carry no kind of their own in every API server version; the request says it.
            sources.append(metallb.Source({**item, "apiVersion": api_version, "kind": kind}, _FROM_CLUSTER))
    return sources


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def render(result: metallb.Translation, namespace: str, written: bool) -> str:
    """The report for people: every finding, then what was translated and whether it was written."""
    lines = []
    if result.findings:
        lines.append(output.table(
            ("SOURCE", "OBJECT", "FIELD", "RESULT", "WHY"),
            [(f.origin, f"{f.kind} {f.name}", f.field, f.level, f.message) for f in result.findings]))
        lines.append("")
    # Pools and L2 advertisements always (a zero there is worth seeing); BGP kinds when there are any.
    translated = ", ".join(_plural(result.count(k), k) for k in metallb.TRANSLATED_KINDS
                           if k in (metallb.POOL, metallb.ADVERTISEMENT) or result.count(k))
    summary = f"translated {translated} from {namespace}"
    if result.untranslated:
        summary += f"; {result.untranslated} not translated"
    if result.notes:
        summary += f"; {_plural(result.notes, 'note')}"
    lines.append(summary)
    if result.skipped:
        what = sorted({f"{s.api_version or '?'} {s.kind or '?'}" for s in result.skipped})
        lines.append(f"skipped {_plural(len(result.skipped), 'object')} that MetalLB does not read "
                     f"({', '.join(what)})")
    if result.untranslated and not written:
        lines.append(f"FAILED: nothing written. Check what is not translated above; --allow-untranslated writes the "
                     f"{_plural(len(result.objects), 'object')} translated and exits 0")
    elif result.untranslated:
        lines.append("written without what is not translated (--allow-untranslated)")
    return "\n".join(lines)


def from_metallb(args: argparse.Namespace) -> int:
    """`leifurctl migrate from-metallb`."""
    if args.sources and (args.kubeconfig or args.context):
        print("leifurctl: --kubeconfig and --context read MetalLB's objects from the cluster; with files given "
              "they have no effect", file=sys.stderr)
        return EXIT_USAGE
    try:
        sources = (read_files(args.sources) if args.sources
                   else read_cluster(args.kubeconfig, args.context, args.namespace))
    except Unreadable as e:
        print(f"leifurctl: {e}", file=sys.stderr)
        return EXIT_UNREADABLE
    result = metallb.translate(sources, args.namespace)
    if not result.objects and not result.findings:
        where = "in the files given" if args.sources else f"in namespace {args.namespace}"
        print(f"leifurctl: no MetalLB object {where}; is MetalLB's namespace {args.namespace} (--namespace)?",
              file=sys.stderr)
        return EXIT_UNREADABLE
    write = not result.untranslated or args.allow_untranslated
    objects = [o for o in result.objects if not args.kind or o["kind"] in args.kind]
    if write and objects:
        text = metallb.dump(objects, args.output)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    print(render(result, args.namespace, write), file=sys.stderr)
    return EXIT_OK if write else EXIT_UNTRANSLATED


_DESCRIPTION = "Move a cluster's load-balancer configuration over to Leifur."

_FROM_METALLB_DESCRIPTION = f"""\
Translate MetalLB's configuration (metallb.io IPAddressPool, L2Advertisement, BGPPeer,
BGPAdvertisement, BFDProfile; Community aliases written out where they are used) into Leifur's
(leifur.io, cluster-scoped, same names and labels), and report, object by object and field by
field, what could not be translated and why: fields MetalLB does not have, objects outside
MetalLB's namespace, BGP features Leifur lacks (unnumbered or VRF sessions, dynamic ASNs,
plain-text passwords, graceful restart). Notes say what is translated but behaves differently
(a password Secret to copy into Leifur's namespace, timers written out).

Reads the files given, or, with none, MetalLB's objects in --namespace from the cluster. MetalLB
reads its configuration only from its own namespace; so only objects there (or with no namespace,
in files) are translated, and names cannot clash once cluster-scoped.

Writes Leifur's objects on stdout (they pass `leifurctl validate`), the report on stderr.
Exit codes: {EXIT_OK} everything translated (or --allow-untranslated); {EXIT_UNREADABLE} the input could not
be read or held no MetalLB object; {EXIT_USAGE} wrong arguments; {EXIT_UNTRANSLATED} something could not be
translated: then nothing is written, so that a pipe into kubectl applies nothing half-done."""

_FROM_METALLB_EPILOG = """\
examples:
  leifurctl migrate from-metallb > leifur-config.yaml
  leifurctl migrate from-metallb metallb/ --allow-untranslated -o json
  kubectl get ipaddresspools,l2advertisements -n metallb-system -o yaml | leifurctl migrate from-metallb -"""


def read_leifur_files(paths: Iterable[str]) -> list[dict]:
    """Leifur's pools and advertisements from files (what `from-metallb` wrote); Unreadable if
    they do not pass `leifurctl validate`."""
    report, objects = validate.validate_objects(paths)
    _refuse_errors(report, "the planned objects do not pass leifurctl validate")
    return [o for o in objects if isinstance(o, dict)]


def check(args: argparse.Namespace) -> int:
    """`leifurctl migrate check`."""
    from leifur.cli import snapshot, takeover

    planned = read_leifur_files(args.files) if args.files else []
    snap = snapshot.fetch(snapshot.connect(args.kubeconfig, args.context), pools_required=not planned)
    rep = takeover.report(takeover.with_planned(snap, planned), args.load_balancer_class)
    text = takeover.render(rep) if args.output == "table" else output.dump(rep, args.output)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK if rep["ok"] else EXIT_WOULD_CHANGE


_CHECK_DESCRIPTION = f"""\
Say what Leifur would do to the cluster's LoadBalancer Services if its controller and agents took
over now, before they do: for every Service of the class (--load-balancer-class, as the
controller will run), whether it keeps the IPs its status shows (Keeps), would get new ones (New:
it shows none), would show others (Changes: a requested IP or a named pool says so), or keeps
them with a problem the controller would report (Reported: no Leifur pool contains the IP, or
another Service holds it and they may not share); and which node's agent would announce each IP,
or why none would. Decided with the controller's and the agents' own code, from Leifur's pools
and advertisements (apply the output of `migrate from-metallb` first) and the cluster's Services,
Nodes and EndpointSlices, as if every Node ran an agent.

FILEs, if given, hold Leifur objects not applied yet (the output of `migrate from-metallb`): the
check uses them in place of the cluster's pools and advertisements of the same names, so that
it can run before anything of Leifur is applied.

Exit codes: {EXIT_OK} every Service keeps its IPs and every IP with ready endpoints would be announced;
{EXIT_WOULD_CHANGE} something would change or not be announced (listed first); {EXIT_UNREADABLE} the cluster
could not be read."""


def register(sub: argparse._SubParsersAction,
             cluster_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add `migrate` and its subcommands to leifurctl's parser (`cluster_flags`: leifurctl's
    --kubeconfig, --context, --load-balancer-class and -o, for the steps that read the cluster)."""
    raw = argparse.RawDescriptionHelpFormatter
    migrate = sub.add_parser("migrate", help="move configuration over from MetalLB", description=_DESCRIPTION,
                             formatter_class=raw)
    steps = migrate.add_subparsers(dest="migrate_command", required=True, title="steps")

    p = steps.add_parser("from-metallb", help="translate MetalLB's configuration (pools, L2 and BGP) into Leifur's",
                         description=_FROM_METALLB_DESCRIPTION, epilog=_FROM_METALLB_EPILOG, formatter_class=raw)
    p.add_argument("sources", nargs="*", metavar="FILE",
                   help="YAML or JSON files (several objects per file, '---' or a List); a directory means its "
                        ".yaml, .yml and .json files; '-' reads standard input. None: read the cluster")
    p.add_argument("--kubeconfig", default=None, metavar="PATH",
                   help="kubeconfig file, when reading the cluster (default: env KUBECONFIG, else ~/.kube/config)")
    p.add_argument("--context", default=None, help="kubeconfig context to use (default: its current-context)")
    p.add_argument("-n", "--namespace", default=metallb.DEFAULT_NAMESPACE,
                   help=f"MetalLB's namespace, where it reads its configuration (default: "
                        f"{metallb.DEFAULT_NAMESPACE})")
    p.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="yaml",
                   help="yaml (default: documents separated by '---') or json (one List)")
    p.add_argument("--allow-untranslated", action="store_true",
                   help="write what could be translated and exit 0 even if something could not be")
    p.add_argument("--kind", action="append", choices=metallb.TRANSLATED_KINDS, default=[],
                   help="write only the objects of this kind (repeatable; the report still covers all): "
                        "pools first and advertisements at the switch, see docs/operations/migration.md")
    p.set_defaults(func=from_metallb)

    c = steps.add_parser("check", help="would every Service keep its IPs, and which node would announce them",
                         description=_CHECK_DESCRIPTION, formatter_class=raw)
    c.add_argument("files", nargs="*", metavar="FILE",
                   help="Leifur IPAddressPools and L2Advertisements to assume applied ('-': standard input)")
    cluster_flags(c)
    c.set_defaults(func=check)
