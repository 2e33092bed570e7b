"""One TLS client context per process, shared by every HTTP client.

httpx builds a new SSL context (loading the CA bundle, ~75 ms of CPU) for each client it creates,
even one that only ever speaks plain HTTP; a replica node creates half a dozen while it starts.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def client_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()
