# batchvoid in a container: small (python:3.11-slim), non-root, the ledger on a volume.
#
#   docker build -t batchvoid .
#   docker run --rm -v batchvoid-ledger:/var/lib/batchvoid batchvoid run jobs/example.csv --simulate
#
# The working directory is the volume, so the default ledger (batchvoid.sqlite), the rehearsal
# ledger, their lock files and the default log file (<job-id>.log) all land on it.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY batchvoid ./batchvoid
# Wheels for batchvoid and every dependency, at the versions pyproject.toml's bounds allow.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels batchvoid \
    && rm -rf /wheels \
    && groupadd --system --gid 10001 batchvoid \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/batchvoid \
        --shell /usr/sbin/nologin batchvoid \
    && mkdir -p /var/lib/batchvoid /etc/batchvoid \
    && chown 10001:10001 /var/lib/batchvoid
USER 10001:10001
WORKDIR /var/lib/batchvoid
# SQLite's WAL mode needs a local disk: mount a block volume here, not NFS or SMB.
VOLUME ["/var/lib/batchvoid"]
# Exec form: batchvoid is PID 1 and gets SIGTERM itself (docker stop, a Kubernetes eviction),
# drains the requests in flight and exits 130; the next run resumes.
ENTRYPOINT ["batchvoid"]
CMD ["--help"]
