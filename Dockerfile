# syntax=docker/dockerfile:1
# One image for both programs:
#   docker run IMAGE leifur-controller --kubeconfig ...
#   docker run IMAGE leifur-agent --node-name ...
# deploy/ runs them with command: [leifur-controller] and command: [leifur-agent], which
# resolve through PATH to the same console scripts the entry point below runs.
#
# Both stages start from the same base, so the virtual environment built in the first one finds
# its interpreter at the same path in the second. Python 3.11: the interpreter constraints.txt
# was frozen with (tests/packaging/test_image.py checks that they agree).
ARG PYTHON_IMAGE=python:3.11-slim-trixie

FROM ${PYTHON_IMAGE} AS build
# The installer and the build backend are pinned like the dependencies, so that rebuilding
# one commit gives the same environment. pip >= 25.3 for --build-constraint.
ARG PIP_VERSION=26.3
ARG SETUPTOOLS_VERSION=84.2.1
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# The environment gets no pip of its own: the base image's pip installs into it (--python),
# so the final stage carries no installer in /opt/leifur.
RUN python -m pip install "pip==${PIP_VERSION}" \
    && echo "setuptools==${SETUPTOOLS_VERSION}" > /tmp/build-constraints.txt \
    && python -m venv --without-pip /opt/leifur
# Dependencies in a layer of their own: rebuilt only when the pins change. Wheels only, so
# nothing is compiled and neither stage needs a compiler.
COPY constraints.txt /src/
RUN python -m pip --python /opt/leifur/bin/python install --only-binary=:all: -r /src/constraints.txt
COPY pyproject.toml README.md /src/
COPY leifur /src/leifur
COPY agent /src/agent
# --constraint again: the project's own requirements must resolve to what is already installed;
# pip check fails the build if any pin contradicts them.
RUN python -m pip --python /opt/leifur/bin/python install --only-binary=:all: \
        --constraint /src/constraints.txt --build-constraint /tmp/build-constraints.txt /src \
    && python -m pip --python /opt/leifur/bin/python check

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="leifur" \
      org.opencontainers.image.description="A bare-metal load balancer for Kubernetes: leifur-controller and leifur-agent." \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/leifur /opt/leifur
# The entry point: a program by name, anything else is a usage error (exit 2) rather than a
# surprise. exec, so that the program is PID 1 and receives SIGTERM itself (the agent hands
# its IPs over on SIGTERM).
COPY --chmod=0755 <<'EOF' /usr/local/bin/leifur
#!/bin/sh
usage() {
    echo "usage: IMAGE leifur-controller|leifur-agent|leifurctl [ARGS...]"
    echo "  e.g. IMAGE leifur-agent --help"
}
case "${1:-}" in
    leifur-controller|leifur-agent|leifurctl) exec "$@" ;;
    -h|--help|help) usage; exit 0 ;;
    "") usage >&2; exit 2 ;;
    *) echo "leifur: unknown program: $1" >&2; usage >&2; exit 2 ;;
esac
EOF
# Bytecode was compiled at install time; the root filesystem is read-only in deploy/.
ENV PATH=/opt/leifur/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Non-root by default and numeric, so that runAsNonRoot can verify it. The agent's DaemonSet
# runs it as uid 0 with only NET_RAW and NET_ADMIN added (see deploy/agent/daemonset.yaml).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/leifur"]
CMD ["--help"]
