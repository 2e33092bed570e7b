"""A minimal blocking Hrana v2 client for talking to a primary from scripts, tests and benchmarks.

Values go over the wire in Hrana's encoding, so 64-bit integers stay exact (the libsql Python
binding would bind them as REAL).
"""

from __future__ import annotations

import base64
from typing import Any

import httpx

Value = None | int | float | str | bytes


_shared: httpx.Client | None = None


def _client() -> httpx.Client:
    # One pooled client: building an httpx.Client (its TLS context) costs ~30 ms, far more than a request.
    global _shared
    if _shared is None:
        _shared = httpx.Client()
    return _shared


class HranaClientError(Exception):
    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(f"{code}: {message}" if code else message)
        self.code = code


def encode_value(value: Value) -> dict[str, Any]:
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool):
        return {"type": "integer", "value": str(int(value))}
    if isinstance(value, int):
        return {"type": "integer", "value": str(value)}
    if isinstance(value, float):
        return {"type": "float", "value": value}
    if isinstance(value, str):
        return {"type": "text", "value": value}
    return {"type": "blob", "base64": base64.b64encode(value).decode()}


def decode_value(value: dict[str, Any]) -> Value:
    kind = value["type"]
    if kind == "null":
        return None
    if kind == "integer":
        return int(value["value"])
    if kind == "float":
        return float(value["value"])
    if kind == "text":
        return value["value"]
    data = value["base64"]
    return base64.b64decode(data + "=" * (-len(data) % 4))


def execute(
    url: str,
    statements: list[str | tuple[str, list[Value]]],
    token: str | None = None,
    *,
    transaction: bool = False,
    timeout: float = 30.0,
) -> list[list[tuple[Value, ...]]]:
    """Run statements in one stream (inside BEGIN/COMMIT when `transaction`); rows per statement.
    Raises HranaClientError on the first failing statement (a transaction is then rolled back)."""
    stmts = [(s, []) if isinstance(s, str) else s for s in statements]
    if transaction:
        stmts = [("BEGIN", []), *stmts, ("COMMIT", [])]
    requests: list[dict[str, Any]] = []
    for i, (sql, args) in enumerate(stmts):
        step: dict[str, Any] = {"stmt": {"sql": sql, "args": [encode_value(a) for a in args]}}
        if i:
            step["condition"] = {"type": "ok", "step": i - 1}
        requests.append(step)
    if transaction:
        requests.append(
            {"stmt": {"sql": "ROLLBACK"}, "condition": {"type": "not", "cond": {"type": "ok", "step": len(stmts) - 1}}}
        )
    body = {"baton": None, "requests": [{"type": "batch", "batch": {"steps": requests}}, {"type": "close"}]}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = _client().post(url.rstrip("/") + "/v2/pipeline", json=body, headers=headers, timeout=timeout)
    if response.status_code != 200:
        raise HranaClientError(response.text, f"HTTP_{response.status_code}")
    result = response.json()["results"][0]
    if result["type"] == "error":
        raise HranaClientError(result["error"]["message"], result["error"].get("code"))
    batch = result["response"]["result"]
    out: list[list[tuple[Value, ...]]] = []
    results = zip(batch["step_results"][: len(stmts)], batch["step_errors"][: len(stmts)], strict=True)
    for step_result, step_error in results:
        if step_error is not None:
            raise HranaClientError(step_error["message"], step_error.get("code"))
        if step_result is None:
            raise HranaClientError("statement skipped after an earlier failure")
        out.append([tuple(decode_value(v) for v in row) for row in step_result["rows"]])
    return out[1:-1] if transaction else out
