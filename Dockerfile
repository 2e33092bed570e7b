# edgenode node image. Build: docker build -t edgenode .
# Run:   docker run -p 8080:8080 -e EDGENODE_AUTH_TOKEN=... -v edgenode-data:/data edgenode
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    EDGENODE_DATA_DIR=/data \
    EDGENODE_HOST=0.0.0.0 \
    EDGENODE_PORT=8080

RUN groupadd --system edgenode && useradd --system --gid edgenode --home-dir /app edgenode

WORKDIR /app
COPY pyproject.toml README.md ./
COPY edgenode ./edgenode
COPY sql ./sql
# Editable install keeps sql/ next to the package, where the migrations runner finds it.
# compileall: with PYTHONDONTWRITEBYTECODE an editable install is never compiled, and each of the
# node's processes would compile the package from source at every start (~0.2 s of CPU each).
RUN pip install -e . && python -m compileall -q edgenode && mkdir -p /data && chown edgenode:edgenode /data

USER edgenode
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2).status == 200 else 1)"

# Binding 0.0.0.0 needs a token: pass EDGENODE_AUTH_TOKEN (and optionally EDGENODE_READ_TOKEN).
ENTRYPOINT ["edgenode"]
CMD ["serve", "--host", "0.0.0.0"]
