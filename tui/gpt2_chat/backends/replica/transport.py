"""HTTP exchanges that end by one deadline, whatever the server does.

httpx's timeouts apply per socket operation, so a server that sends one byte every few
seconds (or a header line at a time) keeps a request alive indefinitely. Each exchange here
runs in a worker thread; the caller waits for it until the call's deadline and no longer.
The worker reads the body in chunks, stops at a cancel flag or the body limit, and its own
per-read timeout ends it when the server stalls, so an abandoned worker does not linger.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import httpx

CONNECT_TIMEOUT_S = 10.0
#: A replicated reply is at most 2 MiB; with its certificate and CBOR framing well under 4.
MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Deadline:
    """The monotonic time a whole call (every request, retry and poll in it) must end by."""

    at: float
    #: The seconds the call was given, for messages.
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def cut(self, seconds: float) -> Deadline:
        """A deadline at most `seconds` away, never later than this one."""
        return Deadline(min(self.at, time.monotonic() + seconds), min(self.seconds, seconds))


class HttpFailure(Exception):
    """A request got no usable HTTP answer, or an HTTP error status.

    kind: "refused" (nothing listens), "connect" (DNS, routing, TLS), "timeout" (the
    deadline passed), "network" (connection dropped mid-request), "http" (an error status),
    "too_large" (a body over MAX_BODY_BYTES)."""

    def __init__(self, kind: str, detail: str, status: int | None = None, body: bytes = b""):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status
        self.body = body

    @property
    def transient(self) -> bool:
        if self.kind in ("network", "connect"):
            return True
        return self.kind == "http" and self.status in (429, 500, 502, 503, 504)


class _Exchange:
    """One request in its worker thread: the result or the failure, once done."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.cancelled = threading.Event()
        self.result: tuple[int, bytes] | None = None
        self.failure: HttpFailure | None = None


class Transport:
    """A pool of keep-alive httpx clients; `request` borrows one per exchange."""

    def __init__(self, trust_env: bool) -> None:
        self._trust_env = trust_env
        self._idle: list[httpx.Client] = []
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def request(
        self, verb: str, url: str, content: bytes | None, deadline: Deadline
    ) -> tuple[int, bytes]:
        """(status, body) of one exchange, or HttpFailure; returns or raises by `deadline`."""
        remaining = deadline.remaining()
        if remaining <= 0:
            raise HttpFailure("timeout", "out of time")
        client = self._borrow()
        exchange = _Exchange()
        worker = threading.Thread(
            target=self._run,
            args=(client, exchange, verb, url, content, remaining),
            name="replica-http",
            daemon=True,
        )
        worker.start()
        if not exchange.done.wait(max(0.0, deadline.remaining())):
            exchange.cancelled.set()
            raise HttpFailure("timeout", f"no complete answer within {deadline.seconds:g} s")
        if exchange.failure is not None:
            raise exchange.failure
        assert exchange.result is not None
        return exchange.result

    def _run(
        self,
        client: httpx.Client,
        exchange: _Exchange,
        verb: str,
        url: str,
        content: bytes | None,
        timeout_s: float,
    ) -> None:
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S))
        headers = {"Content-Type": "application/cbor"} if content is not None else {}
        healthy = False
        try:
            with client.stream(
                verb, url, content=content, headers=headers, timeout=timeout
            ) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    if exchange.cancelled.is_set():
                        return
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        raise HttpFailure("too_large", f"a reply over {MAX_BODY_BYTES} bytes")
                exchange.result = (response.status_code, bytes(body))
                healthy = True
        except HttpFailure as e:
            exchange.failure = e
        except httpx.TimeoutException as e:
            exchange.failure = HttpFailure("timeout", str(e) or type(e).__name__)
        except httpx.ConnectError as e:
            kind = "refused" if _is_refused(e) else "connect"
            exchange.failure = HttpFailure(kind, _reason(e))
        except (httpx.NetworkError, httpx.RemoteProtocolError) as e:
            exchange.failure = HttpFailure("network", _reason(e))
        except httpx.HTTPError as e:
            exchange.failure = HttpFailure("connect", _reason(e))
        finally:
            exchange.done.set()
            if healthy and not exchange.cancelled.is_set():
                self._give_back(client)
            else:
                client.close()

    def _borrow(self) -> httpx.Client:
        with self._lock:
            if self._closed:
                raise HttpFailure("closed", "this replica connection is closed")
            if self._idle:
                return self._idle.pop()
        return httpx.Client(trust_env=self._trust_env, follow_redirects=False)

    def _give_back(self, client: httpx.Client) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < 8:
                self._idle.append(client)
                return
        client.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            clients, self._idle = self._idle, []
        for client in clients:
            client.close()


def _is_refused(e: httpx.ConnectError) -> bool:
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return True
        cause = cause.__cause__ or cause.__context__
    text = str(e).lower()
    return "refused" in text or "errno 111" in text or "errno 61" in text


def _reason(e: Exception) -> str:
    text = " ".join(str(e).split())
    if (
        "Name or service not known" in text
        or "nodename nor servname" in text
        or ("getaddrinfo" in text.lower())
    ):
        return f"name lookup failed ({text})"
    return (text[:199] + "…" if len(text) > 200 else text) or type(e).__name__
