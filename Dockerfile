# syntax=docker/dockerfile:1
# One image for both programs:
#   docker run IMAGE leifur-controller --kubeconfig ...
#   docker run IMAGE leifur-agent --node-name ...
# deploy/ runs them with command: [leifur-controller] and command: [leifur-agent], which
# resolve through PATH to the same console scripts the entry point below runs.
#
# Both stages start from the same base, so the virtual environment built in the first one finds
# its interpreter at the same path in the second. Python 3.11: the interpreter constraints.txt
# was frozen with (tests/packaging/test_image.py checks that they agree). Any Debian bookworm
# base with python3 and /bin/sh will do: hack/image.sh builds on one made without a registry
# (docs/operations/image.md). Bookworm: its FRR (8.4) is the one the tests run.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# The installer and the build backend are pinned like the dependencies, so that rebuilding
# one commit gives the same environment. pip >= 25.3 for --build-constraint.
ARG PIP_VERSION=26.3
ARG SETUPTOOLS_VERSION=84.2.1
# Wheels for a build that reaches no package index: image/wheelhouse/ holds none in the
# repository (pip uses the index); hack/image.sh fills its build context's copy and sets
# PIP_NO_INDEX=1. Only this stage sees them.
ARG PIP_NO_INDEX
COPY image/wheelhouse /wheels
# PIP_BREAK_SYSTEM_PACKAGES: a Debian python3 marks itself externally managed; this stage is
# thrown away, so its installer may go into the system.
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_FIND_LINKS=/wheels
# A base without pip (Debian's python3) runs the pinned pip from its wheel, as get-pip does.
# The environment gets no pip of its own: this stage's pip installs into it (--python), so the
# final stage carries no installer in /opt/leifur.
RUN if python3 -m pip --version >/dev/null 2>&1; then pip="python3 -m pip"; \
    else pip="python3 /wheels/pip-${PIP_VERSION}-py3-none-any.whl/pip"; fi \
    && $pip install "pip==${PIP_VERSION}" \
    && echo "setuptools==${SETUPTOOLS_VERSION}" > /tmp/build-constraints.txt \
    && python3 -m venv --without-pip /opt/leifur
# Dependencies in a layer of their own: rebuilt only when the pins change. Wheels only, so
# nothing is compiled and neither stage needs a compiler.
COPY constraints.txt /src/
RUN python3 -m pip --python /opt/leifur/bin/python install --only-binary=:all: -r /src/constraints.txt
COPY pyproject.toml README.md /src/
COPY leifur /src/leifur
COPY agent /src/agent
# --constraint again: the project's own requirements must resolve to what is already installed;
# pip check fails the build if any pin contradicts them.
RUN python3 -m pip --python /opt/leifur/bin/python install --only-binary=:all: \
        --constraint /src/constraints.txt --build-constraint /tmp/build-constraints.txt /src \
    && python3 -m pip --python /opt/leifur/bin/python check

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="leifur" \
      org.opencontainers.image.description="A bare-metal load balancer for Kubernetes: leifur-controller and leifur-agent." \
      org.opencontainers.image.licenses="Apache-2.0"
# FRR for BGP mode: the agent's sidecar runs its daemons from this image (image/leifur-frr), and
# the agent drives them with vtysh and frr-reload.py. Debian's packages, with the frr accounts'
# ids fixed first (the manifests name the vty group by number). A base that holds them already
# (hack/image.sh makes its base with them) installs nothing here.
ARG FRR_PACKAGES=frr,frr-pythontools
COPY image/frr-accounts /usr/local/lib/leifur/frr-accounts
RUN if [ ! -x /usr/lib/frr/bgpd ]; then \
        sh /usr/local/lib/leifur/frr-accounts / && apt-get update \
        && apt-get install -y --no-install-recommends $(echo "$FRR_PACKAGES" | tr , " ") \
        && rm -rf /var/lib/apt/lists/*; \
    fi
COPY --from=build /opt/leifur /opt/leifur
COPY --chmod=0755 image/leifur /usr/local/bin/leifur
COPY --chmod=0755 image/leifur-frr /usr/local/bin/leifur-frr
# Bytecode was compiled at install time; the root filesystem is read-only in deploy/.
ENV PATH=/opt/leifur/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Non-root by default and numeric, so that runAsNonRoot can verify it. The agent's DaemonSet
# runs it as uid 0 with only NET_RAW and NET_ADMIN added (see deploy/agent/daemonset.yaml).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/leifur"]
CMD ["--help"]
# Last, so that a new commit with the same sources rebuilds only these: the one version
# (leifur.__version__), the commit and where its source lives; hack/image.sh passes them.
# LEIFUR_REVISION is what --version, the first log line and leifur_build_info report.
ARG VERSION=unknown
ARG REVISION=unknown
ARG SOURCE=unknown
ENV LEIFUR_REVISION=${REVISION}
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"
