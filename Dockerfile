# One image for both programs: leifur-controller and leifur-agent.
FROM python:3.11-slim AS build
RUN python -m venv /opt/leifur
COPY pyproject.toml README.md /src/
COPY leifur /src/leifur
COPY agent /src/agent
RUN /opt/leifur/bin/pip install --no-cache-dir /src

FROM python:3.11-slim
COPY --from=build /opt/leifur /opt/leifur
ENV PATH=/opt/leifur/bin:$PATH PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["/opt/leifur/bin/leifur-controller"]
