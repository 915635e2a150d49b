"""The `wascc:http_server` capability: every HTTP request becomes a waPC
`HandleRequest` call on one of a pool of actor instances.

HTTP/1.1 is parsed by h11, strictly (RFC 9112): a malformed request line or
header, a bad or conflicting Content-Length, a transfer coding other than
chunked, or Content-Length beside Transfer-Encoding is answered 400 (501,
505) and the connection closed, so no proxy in front of this host can be
made to disagree with it about where a request ends.

The request and response are MessagePack maps, as wascc-codec 0.6 encodes
them (docs/design.md, "The waSCC actor and its host"). Every answer the
host makes itself is JSON (`{"error": ...}`); an instance that trapped or timed out is replaced
by a fresh one, so the host keeps serving.
"""
import collections
import email.utils
import http
import json
import queue
import re
import socket
import socketserver
import sys
import threading
import time
import urllib.parse

import h11
import msgpack

from .wapc import ActorError, GuestError, OutOfMemory, TimedOut, Trapped

HANDLE_REQUEST = "HandleRequest"
HEALTH_REQUEST = "HealthRequest"
MAX_HEAD = 65536  # request line and headers, in bytes: a longer line is 414, more headers 431
RECEIVE_SIZE = 65536
SERVER_NAME = "wascc-host"
LINGER = 2.0  # seconds to drain a closing connection (see _close)
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


class Server(socketserver.ThreadingTCPServer):
    """One thread per connection, at most `max_connections` of them and
    `max_per_client` from one address: one more is answered 503 (429 for
    the client over its share) and closed at once, so neither a flood of
    connections nor one greedy client can take every thread. A client has
    `client_timeout` seconds for each read and `request_timeout` for a whole
    request, so one that trickles its request a byte at a time is cut off
    too (408)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, *, pool=None, max_body=16 << 20, client_timeout=30.0,
                 request_timeout=60.0, max_connections=64, max_per_client=16, quiet=False):
        """Listens at once (so a taken port fails early); serves once `pool` is set."""
        self.pool, self.max_body, self.quiet = pool, max_body, quiet
        self.client_timeout, self.request_timeout = client_timeout, request_timeout
        self.max_connections, self.max_per_client = max_connections, max_per_client
        # the listen backlog: socketserver's default of 5 let the kernel
        # reset connections beyond the 5th of a burst before this server
        # accepted them (a burst of 32 requests: 4-11 reset)
        self.request_queue_size = max_connections
        self._open = collections.Counter()  # client address -> connections open
        self._open_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, None)

    def process_request(self, request, client_address):
        refusal = self._admit(client_address[0])
        if refusal:
            _refuse(request, *refusal)
            _close(request, linger=0)  # this thread accepts: it cannot wait
            return
        super().process_request(request, client_address)

    def _admit(self, client):
        """None if `client` may open one more connection, else (status, why)."""
        with self._open_lock:
            if self._open.total() >= self.max_connections:
                return 503, f"over the limit of {self.max_connections} connections"
            if self._open[client] >= self.max_per_client:
                return 429, f"over the limit of {self.max_per_client} connections from one client"
            self._open[client] += 1
        return None

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open[client_address[0]] -= 1
                if not self._open[client_address[0]]:
                    del self._open[client_address[0]]

    def finish_request(self, request, client_address):
        Connection(self, request, client_address).serve()

    def shutdown_request(self, request):
        _close(request, linger=LINGER)

    def handle_error(self, request, client_address):
        # one line, not a traceback: a bug here must not be mistaken for noise either
        print(f"error: {client_address[0]}:{client_address[1]}: {sys.exc_info()[1]!r}",
              file=sys.stderr, flush=True)

    def log(self, client, message):
        if not self.quiet:
            print(f"{client} {message}", file=sys.stderr, flush=True)


def _refuse(sock, status, message):
    """A whole error response, written straight to a connection whose
    request is never read; best effort."""
    try:
        sock.settimeout(1.0)
        sock.sendall(_response_bytes(h11.Connection(h11.SERVER), status,
                                     [("Content-Type", "application/json"), ("Connection", "close")],
                                     _error_body(message)))
    except OSError:
        pass


def _close(sock, linger):
    """Closes `sock` after reading what the client still sends, for up to
    `linger` seconds: closing with unread data makes the kernel send a reset,
    which can destroy our last answer (a 413 for a body we did not read)
    before the client has read it."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + linger
        sock.settimeout(linger)
        while sock.recv(RECEIVE_SIZE) and time.monotonic() < deadline:
            pass
    except OSError:
        pass
    sock.close()


def _error_body(message):
    return json.dumps({"error": message}).encode()


class BadRequest(Exception):
    """A request answered with `status` without reading the rest of it; the
    connection is closed after the answer."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class _Idle(Exception):
    """The client sent nothing of a next request in time, or closed: closed silently."""


class Connection:
    """One client connection: requests read with h11, answered one at a time."""

    def __init__(self, server, sock, address):
        self.server, self.sock = server, sock
        self.client = address[0]
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self._method = None  # of the request being answered

    def serve(self):
        # The answer goes out in one write; with Nagle on, a second write
        # (the body) waited for the client's delayed ACK: 40 ms a response.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while self._serve_one():
                self.h11.start_next_cycle()
        except OSError as e:  # the client went away
            self.server.log(self.client, f"- connection lost: {e}")

    def _serve_one(self):
        """Reads and answers one request; whether the connection stays open."""
        started = time.monotonic()
        try:
            request, body = self._receive(started + self.server.request_timeout)
        except _Idle:
            return False
        except BadRequest as e:
            self._send_error(e.status, str(e), close=True)
            self.server.log(self.client, f"- {e.status} {e}")
            return False
        status = self._answer(request, body)
        self.server.log(self.client, f"{request.method.decode()} {request.target.decode()} "
                                     f"{status} {(time.monotonic() - started) * 1000:.1f}ms")
        # not DONE: closing (ours or theirs), or a body left unread
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    # ---------------------------------------------------------- reading

    def _receive(self, deadline):
        """The next request and its body, read by `deadline`."""
        self._partial = bool(self.h11.trailing_data[0])  # a pipelined request already waiting
        request, body, self._method = None, bytearray(), None
        while True:
            event = self._next_event(deadline)
            if isinstance(event, h11.Request):
                request = event
                self._check_request(request)
                self._method = request.method
            elif isinstance(event, h11.Data):
                body += event.data
                self._check_length(len(body))
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                if self._partial:
                    raise ConnectionError("the client closed the connection inside a request")
                raise _Idle()

    def _next_event(self, deadline):
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as e:
                raise self._protocol_error(e) from None
            if event is not h11.NEED_DATA:
                return event
            self.h11.receive_data(self._read(deadline))

    def _read(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining > 0:
            self.sock.settimeout(min(self.server.client_timeout, remaining))
            try:
                data = self.sock.recv(RECEIVE_SIZE)
                self._partial = self._partial or bool(data)
                return data
            except TimeoutError:
                pass
        if not self._partial:
            raise _Idle()  # a keep-alive connection with nothing more to ask
        if time.monotonic() >= deadline:
            raise BadRequest(408, f"request not received within {self.server.request_timeout:g} s")
        raise BadRequest(408, f"nothing received for {self.server.client_timeout:g} s")

    def _protocol_error(self, error):
        status = error.error_status_hint
        if status == 431 and b"\n" not in self.h11.trailing_data[0]:
            return BadRequest(414, f"request line longer than {MAX_HEAD} bytes")
        if status == 431:
            return BadRequest(431, f"request headers longer than {MAX_HEAD} bytes")
        return BadRequest(status, f"malformed request: {error}")

    def _check_request(self, request):
        if request.http_version not in (b"1.0", b"1.1"):
            raise BadRequest(505, f"HTTP/{request.http_version.decode()} is not supported: "
                                  "HTTP/1.1 or 1.0")
        # h11 bounds only a head still incomplete when a read ends: one read
        # of 64 KiB and the rest may bring a whole head over the limit
        if len(request.target) > MAX_HEAD:
            raise BadRequest(414, f"request target longer than {MAX_HEAD} bytes")
        if sum(len(name) + len(value) + 4 for name, value in request.headers) > MAX_HEAD:
            raise BadRequest(431, f"request headers longer than {MAX_HEAD} bytes")
        names = [name for name, _ in request.headers]
        if b"transfer-encoding" in names and b"content-length" in names:
            # RFC 9112 6.3: a request smuggling attempt, or a broken proxy
            raise BadRequest(400, "Content-Length and Transfer-Encoding together")
        for name, value in request.headers:
            if name == b"content-length":  # h11 checked it is 1*DIGIT, one value
                self._check_length(int(value))
        if self.h11.client_is_waiting_for_100_continue:
            self.sock.sendall(self.h11.send(h11.InformationalResponse(status_code=100, headers=[])))

    def _check_length(self, length):
        if length > self.server.max_body:
            raise BadRequest(413, f"request body of {length} bytes is over the limit of "
                                  f"{self.server.max_body} bytes")

    # ---------------------------------------------------------- answering

    def _answer(self, request, body):
        """Sends the actor's answer to `request`; its status."""
        path, _, query = request.target.decode("ascii").partition("?")
        if "://" in path:  # absolute-form request target
            path = urllib.parse.urlsplit(path).path or "/"
        headers = collections.defaultdict(list)
        for name, value in request.headers:
            headers[name.decode("ascii")].append(value.decode("latin-1"))
        call = {"method": request.method.decode("ascii"), "path": path, "queryString": query,
                "header": {name: ", ".join(values) for name, values in headers.items()},
                "body": body}
        try:
            reply = self.server.pool.call(HANDLE_REQUEST, msgpack.packb(call, use_bin_type=True))
            status, reason, headers, body = parse_response(reply)
        except Busy as e:
            return self._send_error(503, str(e))
        except TimedOut as e:
            return self._send_error(503, f"actor {e}")
        except OutOfMemory as e:
            return self._send_error(500, f"actor {e}")  # "actor out of memory: ..."
        except Trapped as e:
            return self._send_error(500, f"actor trapped: {e}")
        except GuestError as e:
            return self._send_error(500, f"actor error: {e}")
        except ValueError as e:
            return self._send_error(500, f"malformed response from the actor: {e}")
        self._send(status, list(headers.items()), body, reason)
        return status

    def _send_error(self, status, message, close=False):
        self._send(status, [("Content-Type", "application/json")], _error_body(message),
                   close=close)
        return status

    def _send(self, status, headers, body, reason="", close=False):
        if close:
            headers = headers + [("Connection", "close")]
        self.sock.sendall(_response_bytes(self.h11, status, headers, body, reason,
                                          with_body=self._method != b"HEAD"))


def _response_bytes(conn, status, headers, body, reason="", with_body=True):
    """The whole response in one buffer; `with_body` False answers a HEAD."""
    if not reason and status in http.HTTPStatus._value2member_map_:
        reason = http.HTTPStatus(status).phrase
    headers = [("Server", SERVER_NAME), ("Date", email.utils.formatdate(usegmt=True)),
               *headers, ("Content-Length", str(len(body)))]
    out = conn.send(h11.Response(status_code=status, headers=headers, reason=reason.encode("latin-1")))
    if body and with_body and status not in (204, 304):
        out += conn.send(h11.Data(data=body))
    return out + conn.send(h11.EndOfMessage())


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
