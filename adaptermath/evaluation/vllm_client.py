"""A minimal JSON client for an OpenAI-compatible inference server, on the standard library only.

Every failure becomes a one-line :class:`~adaptermath.evaluation.engine.EngineError`:

* nothing listening, a refused or dropped connection -> :class:`EngineUnreachableError`;
* no answer within ``timeout_s`` -> :class:`EngineTimeoutError`;
* an HTTP error status -> :class:`EngineHTTPError` carrying the status and the server's own
  reason (vLLM answers ``{"error": {"message": ...}}``, older versions ``{"message": ...}``,
  FastAPI ``{"detail": ...}``), which callers turn into a specific message.

Requests to a loopback host bypass any proxy set in the environment. An API key, when the server
wants one (vLLM's ``--api-key``), is read from ``$ADAPTERMATH_ENGINE_API_KEY``.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .engine import EngineError, EngineTimeoutError, EngineUnreachableError

API_KEY_ENV = "ADAPTERMATH_ENGINE_API_KEY"
MAX_RESPONSE_BYTES = 256 * 1024 * 1024
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class EngineHTTPError(EngineError):
    """The server answered with an error status; ``reason`` is its own message."""

    def __init__(self, url: str, path: str, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        self.path = path
        super().__init__(f"the server at {url} refused {path} (HTTP {status}): {reason}")


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, whitespace squashed, cut to ``limit`` characters."""
    squashed = " ".join(str(text).split())
    return squashed if len(squashed) <= limit else squashed[: limit - 1] + "…"


def server_reason(body: bytes) -> str:
    """The human reason inside an error body (JSON of vLLM, OpenAI or FastAPI, else the text)."""
    text = body.decode("utf-8", errors="replace")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        return one_line(text) or "no reason given"
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and error.get("message"):
            return one_line(error["message"])
        for key in ("message", "detail", "error"):
            if payload.get(key):
                value = payload[key]
                return one_line(value if isinstance(value, str) else json.dumps(value))
    return one_line(text)


def normalise_url(url: str) -> str:
    """``http(s)://host:port`` without a trailing slash or ``/v1``; anything else is refused."""
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise EngineError(f"--engine-url must look like http://HOST:PORT, got {url!r}")
    path = parsed.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, "", ""))


class EngineClient:
    """GET and POST JSON to one server; see the module doc for how failures are reported."""

    def __init__(self, url: str, *, timeout_s: float, api_key: str | None = None) -> None:
        self.url = normalise_url(url)
        self.timeout_s = timeout_s
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        host = urllib.parse.urlsplit(self.url).hostname or ""
        handlers = [urllib.request.ProxyHandler({})] if host in LOOPBACK_HOSTS else []
        self._opener = urllib.request.build_opener(*handlers)

    def get(self, path: str, *, timeout_s: float | None = None) -> Any:
        return self.request("GET", path, None, timeout_s=timeout_s)

    def post(self, path: str, payload: Any, *, timeout_s: float | None = None) -> Any:
        return self.request("POST", path, payload, timeout_s=timeout_s)

    def request(self, method: str, path: str, payload: Any, *, timeout_s: float | None = None) -> Any:
        """Send one request; the answer decoded from JSON, else its text (None for an empty body)."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        headers = {"Accept": "application/json"}
        data = None
        if payload is not None:
            data = json.dumps(payload).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=timeout) as response:
                body = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise EngineHTTPError(self.url, path, exc.code, server_reason(exc.read(64 * 1024))) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise self._timeout(path, timeout) from None
            raise EngineUnreachableError(
                f"cannot reach the inference server at {self.url}: {one_line(str(exc.reason))}; "
                "is it running? (or use --engine-launch)"
            ) from None
        except (TimeoutError, socket.timeout):
            raise self._timeout(path, timeout) from None
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            raise EngineUnreachableError(
                f"the inference server at {self.url} dropped the connection on {path}: {one_line(str(exc)) or type(exc).__name__}"
            ) from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise EngineError(f"the server at {self.url} answered {path} with more than {MAX_RESPONSE_BYTES} bytes")
        if not body.strip():
            return None
        try:
            return json.loads(body)
        except json.JSONDecodeError:  # vLLM answers /health and adapter loading with plain text
            return body.decode("utf-8", errors="replace")

    def _timeout(self, path: str, timeout: float) -> EngineTimeoutError:
        return EngineTimeoutError(
            f"the inference server at {self.url} did not answer {path} within {timeout:g} s; "
            "raise --engine-timeout or lower --engine-concurrency"
        )
