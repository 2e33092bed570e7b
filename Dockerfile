# edgenode node image. Build: docker build -t edgenode .
# Run:   docker run -p 8080:8080 -e EDGENODE_AUTH_TOKEN=... -v edgenode-data:/data edgenode
#
# Stage 1 builds with the release script CI runs (.ci/release/build.py): hnswlib for the stated CPU
# baseline (it has no PyPI wheels, so it needs a compiler) and the edgenode wheel (which carries
# the sql/ migrations), then collects every dependency as a wheel. Stage 2 installs only those
# wheels: no compiler, no source tree, no editable install.
FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ binutils \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY edgenode ./edgenode
COPY sql ./sql
COPY .ci/release ./.ci/release
RUN python .ci/release/build.py wheel \
    && pip wheel --no-cache-dir --find-links build/wheelhouse --wheel-dir /wheels dist/edgenode-*.whl

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    EDGENODE_DATA_DIR=/data \
    EDGENODE_HOST=0.0.0.0 \
    EDGENODE_PORT=8080

RUN groupadd --system edgenode && useradd --system --gid edgenode --home-dir /data edgenode
COPY --from=build /wheels /wheels
# pip compiles the installed package's bytecode itself (PYTHONDONTWRITEBYTECODE only stops Python
# writing it at run time), so no process compiles the package from source at start.
RUN pip install --no-index --find-links /wheels edgenode \
    && rm -rf /wheels \
    && mkdir -p /data && chown edgenode:edgenode /data

USER edgenode
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2).status == 200 else 1)"

# Binding 0.0.0.0 needs a token: pass EDGENODE_AUTH_TOKEN (and optionally EDGENODE_READ_TOKEN).
ENTRYPOINT ["edgenode"]
CMD ["serve", "--host", "0.0.0.0"]
