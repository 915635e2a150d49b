"""The `wascc:http_server` capability: every HTTP request becomes a waPC
`HandleRequest` call on one of a pool of actor instances.

The request and response are MessagePack maps, as wascc-codec 0.6 encodes
them (see /work/shared/WASCC.md). Whatever goes wrong on the actor's side is
answered with a JSON error body; an instance that trapped or timed out is
replaced by a fresh one, so the host keeps serving.
"""
import contextlib
import http
import http.server
import json
import queue
import re
import socket
import socketserver
import sys
import threading
import time
import urllib.parse

import msgpack

from .wapc import ActorError, GuestError, TimedOut, Trapped

HANDLE_REQUEST = "HandleRequest"
HEALTH_REQUEST = "HealthRequest"
MAX_LINE = 65536  # longest chunk-size or trailer line we read
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name (RFC 9110)
_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection"}  # ours to set


class Busy(Exception):
    """No instance became free in time."""


class Pool:
    """`size` instances of `actor`, each health-checked when created."""

    def __init__(self, actor, size, wait):
        self.actor, self.size, self.wait = actor, size, wait
        self._idle = queue.Queue()
        for _ in range(size):
            self._idle.put(self._new_instance())

    def _new_instance(self):
        instance = self.actor.instantiate()
        reply = instance.call(HEALTH_REQUEST, msgpack.packb({"placeholder": True}))
        try:
            health = msgpack.unpackb(reply)
        except Exception:  # noqa: BLE001 -- any answer but an explicit "unhealthy" is fine
            health = None
        if isinstance(health, dict) and health.get("healthy") is False:
            raise ActorError(f"{HEALTH_REQUEST}: unhealthy: {health.get('message', '')}")
        return instance

    def call(self, op, payload):
        """The reply of a free instance, waiting up to `wait` seconds for one."""
        try:
            instance = self._idle.get(timeout=self.wait)
        except queue.Empty:
            raise Busy(f"all {self.size} actor instances are busy") from None
        try:
            return instance.call(op, payload)
        except Trapped:
            instance.close()  # a trapped instance is discarded, and must free its memory
            instance = self._replace()
            raise
        finally:
            if instance is not None:
                self._idle.put(instance)

    def _replace(self):
        try:
            return self._new_instance()
        except ActorError as e:  # the pool shrinks: say so once, keep serving with the rest
            print(f"error: cannot replace an actor instance: {e}", file=sys.stderr, flush=True)
            return None


class Server(http.server.ThreadingHTTPServer):
    """One thread per connection, at most `max_connections` of them: one
    more is answered 503 and closed at once, so a flood of connections
    cannot exhaust threads or memory. A client has `client_timeout` seconds
    for each read and `request_timeout` for a whole request, so one that
    trickles its headers or body a byte at a time is cut off too (408)."""

    daemon_threads = True

    def __init__(self, address, *, pool=None, max_body=16 << 20, client_timeout=30.0,
                 request_timeout=60.0, max_connections=64, quiet=False):
        """Listens at once (so a taken port fails early); serves once `pool` is set."""
        self.pool, self.max_body = pool, max_body
        self.client_timeout, self.request_timeout, self.quiet = client_timeout, request_timeout, quiet
        self.max_connections = max_connections
        # the listen backlog: socketserver's default of 5 let the kernel
        # reset connections beyond the 5th of a burst before this server
        # accepted them (a burst of 32 requests: 4-11 reset)
        self.request_queue_size = max_connections
        self._connections = threading.BoundedSemaphore(max_connections)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def process_request(self, request, client_address):
        if not self._connections.acquire(blocking=False):
            _refuse(request, 503, f"over the limit of {self.max_connections} connections")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    def handle_error(self, request, client_address):
        # one line, not a traceback: mostly a client that went away mid-answer
        print(f"error: {client_address[0]}:{client_address[1]}: {sys.exc_info()[1]!r}",
              file=sys.stderr, flush=True)

    def server_bind(self):
        # HTTPServer's own looks up the host's FQDN, which can hang without DNS
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def _refuse(sock, status, message):
    """A whole error response, written straight to a connection that no
    handler serves (or whose handler is stuck reading); best effort."""
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    try:
        sock.settimeout(1.0)
        sock.sendall(head.encode() + body)
    except OSError:
        pass


class BadRequest(Exception):
    """A request we answer with `status` without reading the rest of it."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response has a Content-Length
    server_version = "wascc-host"

    def __getattr__(self, name):
        # every method (GET, PUT, PROPFIND, ...) goes to the actor
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def setup(self):
        self.timeout = self.server.client_timeout  # a stalled client must not hold a thread forever
        super().setup()

    def handle_one_request(self):
        # The deadline runs from when we wait for a request until its body
        # is read (_received); a keep-alive wait counts towards it.
        self._reading = threading.Lock()
        self._deadline = threading.Timer(self.server.request_timeout, self._request_too_slow)
        self._deadline.daemon = True
        self._deadline.start()
        try:
            super().handle_one_request()
        finally:
            self._received()

    def _received(self):
        """Stops the deadline: False if it has already answered 408."""
        self._deadline.cancel()
        return self._reading.acquire(blocking=False)

    def _request_too_slow(self):
        if not self._reading.acquire(blocking=False):
            return  # the request arrived just in time
        _refuse(self.connection, 408, f"request not received within {self.server.request_timeout:g} s")
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)  # wakes the handler's read

    def parse_request(self):
        self._started = time.monotonic()
        return super().parse_request()

    def handle_expect_100(self):
        # refuse an oversize upload before the client sends it
        try:
            self._check_length(self._content_length())
        except BadRequest as e:
            self._send_error(e.status, str(e))
            return False
        return super().handle_expect_100()

    def _handle(self):
        try:
            body = self._read_body()
        except BadRequest as e:
            return self._send_error(e.status, str(e))
        except OSError as e:  # ConnectionError, or the socket the deadline shut
            self.close_connection = True
            return self.log_error("%s %s: %s", self.command, self.path, e)
        if not self._received():
            self.close_connection = True
            return None
        path, _, query = self.path.partition("?")
        if "://" in path:  # absolute-form request target
            path = urllib.parse.urlsplit(path).path or "/"
        request = {"method": self.command, "path": path, "queryString": query,
                   "header": {k.lower(): ", ".join(self.headers.get_all(k)) for k in self.headers},
                   "body": body}
        try:
            reply = self.server.pool.call(HANDLE_REQUEST, msgpack.packb(request, use_bin_type=True))
            status, reason, headers, body = parse_response(reply)
        except Busy as e:
            return self._send_error(503, str(e))
        except TimedOut as e:
            return self._send_error(503, f"actor {e}")
        except Trapped as e:
            return self._send_error(500, f"actor trapped: {e}")
        except GuestError as e:
            return self._send_error(500, f"actor error: {e}")
        except ValueError as e:
            return self._send_error(500, f"malformed response from the actor: {e}")
        self._send(status, reason, headers, body)

    def _content_length(self):
        value = self.headers.get("Content-Length")
        if value is None:
            return 0
        if not value.strip().isdigit():
            raise BadRequest(400, f"bad Content-Length: {value!r}")
        return int(value)

    def _check_length(self, length):
        if length > self.server.max_body:
            raise BadRequest(413, f"request body of {length} bytes is over the limit of "
                                  f"{self.server.max_body} bytes")

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = self._content_length()
        self._check_length(length)
        body = self.rfile.read(length)
        if len(body) < length:
            raise ConnectionError("client closed the connection inside the body")
        return body

    def _read_chunked(self):
        body = bytearray()
        while True:
            line = self.rfile.readline(MAX_LINE)
            try:
                size = int(line.split(b";")[0], 16)
            except ValueError:
                raise BadRequest(400, "malformed chunked body") from None
            if size == 0:
                break
            self._check_length(len(body) + size)
            chunk = self.rfile.read(size + 2)  # the data and its CRLF
            if len(chunk) < size + 2:
                raise ConnectionError("client closed the connection inside the body")
            body += chunk[:size]
        while self.rfile.readline(MAX_LINE).strip():  # trailers, up to the empty line
            pass
        return bytes(body)

    def _send_error(self, status, message):
        # the body may be unread (413, 400): close rather than parse it as a request
        body = json.dumps({"error": message}).encode()
        self._send(status, "", {"Content-Type": "application/json"}, body, close=status < 500)

    def _send(self, status, reason, headers, body, close=False):
        self.send_response(status, reason or None)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")  # also sets close_connection
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_request(self, code="-", size="-"):
        if not self.server.quiet:
            ms = (time.monotonic() - getattr(self, "_started", time.monotonic())) * 1000
            self.log_message("%s %s %s %.1fms", self.command, self.path, int(code), ms)

    def log_message(self, format, *args):
        print(format % args, file=sys.stderr, flush=True)


def parse_response(payload):
    """(status, reason, headers, body) of the actor's MessagePack response;
    ValueError if it is not one that can be sent as is."""
    try:
        response = msgpack.unpackb(payload, raw=False)
    except Exception as e:  # noqa: BLE001 -- msgpack raises many kinds, all meaning "malformed"
        raise ValueError(f"not MessagePack ({e})") from None
    if not isinstance(response, dict):
        raise ValueError("not a map")
    status = response.get("statusCode")
    if type(status) is not int or not 200 <= status <= 599:
        raise ValueError(f"statusCode {status!r} is not an integer in 200..599")
    reason = response.get("status", "")
    if not _is_field(reason):
        raise ValueError(f"status {reason!r} is not a printable Latin-1 string")
    headers = response.get("header") or {}
    if not isinstance(headers, dict):
        raise ValueError("header is not a map")
    for name, value in headers.items():
        if not (isinstance(name, str) and _TOKEN.fullmatch(name) and _is_field(value)):
            raise ValueError(f"bad header {name!r}: {value!r}")
    body = response.get("body", b"")
    if not isinstance(body, bytes):
        raise ValueError(f"body is {type(body).__name__}, not binary")
    if body and (status in (204, 304)):
        raise ValueError(f"a {status} response cannot have a body")
    headers = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
    return status, reason, headers, body


def _is_field(text):
    """Whether `text` can go in a status line or header as is (no CR/LF injection)."""
    return isinstance(text, str) and text.isprintable() and max(text, default="\0") < "\u0100"
