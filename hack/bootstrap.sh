#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh Debian machine (run as root):
# system tools via apt-get, a Python virtual environment in .venv, the Go builds of
# etcd, kube-apiserver, kubectl, helm, MetalLB's controller and krew's manifest validator (cached
# outside the checkout; see dev/leifur_dev/gobuild.py), and, as root, the container image
# (hack/image.sh, cached too).
# With --python, only the virtual environment (what the pure checks need: no apt, no Go).
set -euo pipefail
cd "$(dirname "$0")/.."
python_only=
[ "${1:-}" = --python ] && python_only=1

need_apt=()
# promtool (package prometheus: 19 MB download, 96 MB installed, ~6 s) lints the programs' /metrics
# in the tests. The package also enables a Prometheus server unit: it starts only where systemd runs
# (not in CI's containers, whose policy-rc.d forbids starting services).
# podman, runc and mmdebstrap: the image is built and run by the tests (hack/image.sh).
# frr and bird2: BGP mode's lab runs FRR in each node namespace and BIRD as the router (both
# started by the tests inside lab namespaces only; the packages' units would start where systemd
# runs, not in CI's containers, whose policy-rc.d forbids starting services).
[ -n "$python_only" ] || for tool in ip:iproute2 ping:iputils-ping arping:iputils-arping tcpdump:tcpdump nft:nftables \
        promtool:prometheus podman:podman runc:runc mmdebstrap:mmdebstrap vtysh:frr bird:bird2; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need_apt+=("${tool#*:}")
done
# frr-reload.py, which the agent applies FRR's configuration with, is in frr's recommended
# package, and recommends are not installed here.
[ -n "$python_only" ] || [ -x /usr/lib/frr/frr-reload.py ] || need_apt+=(frr-pythontools)
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
[ -n "$python_only" ] || command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ] || need_apt+=(golang-go)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "==> apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
[ -x /usr/local/go/bin/go ] && export PATH="$PATH:/usr/local/go/bin"

if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    python3 -m venv .venv
fi
# Runtime dependencies are pinned by constraints.txt, the same pins the image uses.
# The development tooling (dev/, the leifur-dev distribution) brings the test tools; it never ships.
stamp=.venv/.installed-$(cat pyproject.toml dev/pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -e "$stamp" ]; then
    echo "==> installing Leifur and its development tooling into .venv"
    if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -c constraints.txt -e . -e ./dev; } >.venv/pip.log 2>&1; then
        cat .venv/pip.log; exit 1
    fi
    rm -f .venv/.installed-* && touch "$stamp"
fi

[ -z "$python_only" ] || exit 0
echo "==> control-plane binaries (built from Go modules on first use, then cached)"
.venv/bin/python -m leifur_dev.gobuild
# The image, as the tests run it: built only when its inputs changed (cached like the Go builds).
if [ "$(id -u)" = 0 ]; then
    echo "==> the container image (built on first use and when its inputs change, then cached)"
    hack/image.sh
fi
