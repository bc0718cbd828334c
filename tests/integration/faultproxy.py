#!/usr/bin/env python3
"""Fault-injecting HTTP/1.1 reverse proxy for the zipperfs integration tests.

Sits between zipperfs and a GCS emulator and forwards every request, except
that a plan of fault rules, set over a small control API, can make chosen
requests fail in the ways a real network and a real GCS front end do.

Usage:
    faultproxy.py --listen-port N --upstream http://127.0.0.1:M [--verbose]

Prints "READY 127.0.0.1:N" on stdout once listening (port 0 picks a free
port and prints it). SIGTERM or SIGINT stops it. Listens on 127.0.0.1 only.

Control API (same port, never forwarded):
    POST /__fault__/plan            {"rules": [RULE, ...]}  replaces the plan
    GET  /__fault__/plan            the plan with the remaining counts
    GET  /__fault__/log             JSON list of the requests seen
    POST /__fault__/reset           clears the plan and the log
    POST /__fault__/require_bearer  {"tokens": ["t1", ...]} or {"tokens": null}

RULE fields:
    match        substring of the request target (path + query); "" matches all
    action       "503" | "500" | "429" | "404" | "reset" | "stall" | "delay"
    count        how many matching requests get the fault (default 1, -1 = forever)
    seconds      for "stall" (default 30) and "delay" (default 1)
    retry_after  for the status actions: value of a Retry-After header
                 (omitted: no Retry-After header)

The first rule, in plan order, that matches and has count left applies.
Status actions answer without contacting the upstream. "reset" and "stall"
fetch the real response, send its status line and headers (with the real
Content-Length) and half of its body; "reset" then aborts the connection with
an RST (SO_LINGER 0), "stall" sends nothing more for `seconds` and then closes.
"delay" sleeps `seconds` and then forwards normally.

With require_bearer on, a request whose Authorization header is not
"Bearer <one of the tokens>" gets a GCS-style 401 instead of the upstream's
answer; fault rules still apply on top of that answer.

Log entries: {"method", "path", "range", "authorization" (true/false),
"fault" (action or null), "status" (status sent, null if none), "time",
"peer" (the client's port: one per connection)}.
"""

import argparse
import array
import http.client
import http.server
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse

try:
    import fcntl
    import termios
except ImportError:  # not Linux: fall back to a short sleep before a reset
    fcntl = None
    termios = None

CONTROL_PREFIX = "/__fault__"
STATUS_ACTIONS = {"503", "500", "429", "404"}
ACTIONS = STATUS_ACTIONS | {"reset", "stall", "delay"}

# Hop-by-hop headers (RFC 9110 7.6.1) plus the ones the proxy recomputes.
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
}

ERRORS = {
    401: ("Invalid Credentials", "authError"),
    404: ("No such object", "notFound"),
    429: ("The rate of requests is too high. Please reduce your request rate.",
          "rateLimitExceeded"),
    500: ("We encountered an internal error. Please try again.", "backendError"),
    502: ("Bad gateway: the upstream could not be reached.", "backendError"),
    503: ("Service Unavailable", "backendError"),
}

REASONS = {
    401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
}


def gcs_error_body(code, message=None, reason=None):
    default_message, default_reason = ERRORS.get(code, ("Error", "error"))
    message = message or default_message
    err = {"message": message, "domain": "global", "reason": reason or default_reason}
    if code == 401:
        err["locationType"] = "header"
        err["location"] = "Authorization"
    body = {"error": {"code": code, "message": message, "errors": [err]}}
    return json.dumps(body).encode()


class State:
    """Plan, log and bearer check, shared by all handler threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []
        self.log = []
        self.tokens = None

    def set_plan(self, rules):
        with self.lock:
            self.rules = rules

    def plan(self):
        with self.lock:
            return [dict(r) for r in self.rules]

    def reset(self):
        with self.lock:
            self.rules = []
            self.log = []

    def take_fault(self, target):
        """Return (a copy of) the rule applying to target, spending one use."""
        with self.lock:
            for rule in self.rules:
                if rule["remaining"] == 0 or rule["match"] not in target:
                    continue
                if rule["remaining"] > 0:
                    rule["remaining"] -= 1
                return dict(rule)
        return None

    def add_log(self, entry):
        with self.lock:
            self.log.append(entry)

    def log_copy(self):
        with self.lock:
            return [dict(e) for e in self.log]


def parse_rules(obj):
    if not isinstance(obj, dict) or not isinstance(obj.get("rules"), list):
        raise ValueError('expected {"rules": [...]}')
    rules = []
    for i, raw in enumerate(obj["rules"]):
        if not isinstance(raw, dict):
            raise ValueError("rule %d is not an object" % i)
        action = str(raw.get("action", ""))
        if action not in ACTIONS:
            raise ValueError("rule %d: unknown action %r" % (i, raw.get("action")))
        match = raw.get("match", "")
        if match is None:
            match = ""
        if not isinstance(match, str):
            raise ValueError("rule %d: match must be a string" % i)
        count = raw.get("count", 1)
        if count is None:
            count = -1
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError("rule %d: count must be an integer" % i)
        if count < 0:
            count = -1
        seconds = raw.get("seconds", 30 if action == "stall" else 1)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError("rule %d: seconds must be a non-negative number" % i)
        retry_after = raw.get("retry_after")
        if retry_after is not None:
            retry_after = str(retry_after)
        rules.append({"match": match, "action": action, "count": count,
                      "remaining": count, "seconds": seconds,
                      "retry_after": retry_after})
    return rules


def unsent_bytes(sock):
    """Bytes still in the kernel send queue (unsent or unacknowledged)."""
    buf = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, buf, True)
    return buf[0]


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faultproxy"
    # Do not let a silent client hold a thread forever.
    timeout = 600

    # -- plumbing ---------------------------------------------------------

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("faultproxy: %s %s\n" % (self.address_string(), fmt % args))

    def _read_request_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("EOF in chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers, up to the empty line.
                    while True:
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after the chunk
            return b"".join(chunks), True
        length = self.headers.get("Content-Length")
        if length is not None:
            n = int(length)
            return (self.rfile.read(n) if n > 0 else b""), True
        return b"", False

    def _head_bytes(self, status, reason, headers):
        lines = ["HTTP/1.1 %d %s" % (status, reason)]
        for k, v in headers:
            lines.append("%s: %s" % (k, v))
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send_simple(self, status, body, content_type="application/json; charset=UTF-8",
                     extra=()):
        headers = [("Content-Type", content_type),
                   ("Content-Length", str(len(body))),
                   ("Date", self.date_time_string())]
        headers.extend(extra)
        data = self._head_bytes(status, REASONS.get(status, "Error"), headers)
        if self.command != "HEAD":
            data += body
        self.wfile.write(data)
        self.log_request(status)

    def _send_json(self, status, obj):
        self._send_simple(status, json.dumps(obj).encode())

    def _target(self):
        path = self.path
        # Absolute-form request target: keep only path and query.
        if path.startswith(("http://", "https://")):
            parts = urllib.parse.urlsplit(path)
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
        return path

    # -- entry points ------------------------------------------------------

    def _handle(self):
        target = self._target()
        try:
            body, had_body = self._read_request_body()
        except (ValueError, ConnectionError):
            self.close_connection = True
            self._send_json(400, {"error": "bad request body"})
            return
        if target == CONTROL_PREFIX or target.startswith(CONTROL_PREFIX + "/") \
                or target.startswith(CONTROL_PREFIX + "?"):
            self._control(target, body)
            return
        self._proxy(target, body, had_body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _handle

    # -- control API -------------------------------------------------------

    def _control(self, target, body):
        state = self.server.state
        path = urllib.parse.urlsplit(target).path
        name = path[len(CONTROL_PREFIX):].strip("/")
        method = self.command

        def parse_json():
            try:
                return json.loads(body.decode("utf-8") or "null")
            except (UnicodeDecodeError, ValueError) as e:
                raise ValueError("invalid JSON: %s" % e)

        try:
            if name == "plan" and method == "POST":
                rules = parse_rules(parse_json())
                state.set_plan(rules)
                self._send_json(200, {"ok": True, "rules": state.plan()})
            elif name == "plan" and method == "GET":
                self._send_json(200, {"rules": state.plan()})
            elif name == "log" and method == "GET":
                self._send_json(200, state.log_copy())
            elif name == "reset" and method == "POST":
                state.reset()
                self._send_json(200, {"ok": True})
            elif name == "require_bearer" and method == "POST":
                obj = parse_json()
                if not isinstance(obj, dict) or "tokens" not in obj:
                    raise ValueError('expected {"tokens": [...] or null}')
                tokens = obj["tokens"]
                if tokens is not None:
                    if not isinstance(tokens, list) or \
                            not all(isinstance(t, str) for t in tokens):
                        raise ValueError("tokens must be a list of strings or null")
                    tokens = set(tokens)
                with state.lock:
                    state.tokens = tokens
                self._send_json(200, {"ok": True, "tokens": None if tokens is None
                                      else sorted(tokens)})
            elif name in ("plan", "log", "reset", "require_bearer"):
                self._send_json(405, {"error": "method not allowed"})
            else:
                self._send_json(404, {"error": "unknown control endpoint %r" % path})
        except ValueError as e:
            self._send_json(400, {"error": str(e)})

    # -- proxying ----------------------------------------------------------

    def _authorized(self):
        state = self.server.state
        with state.lock:
            tokens = state.tokens
        if tokens is None:
            return True
        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        return scheme.lower() == "bearer" and token.strip() in tokens

    def _fetch_upstream(self, target, body, had_body):
        """Return (status, reason, header list, body) of the upstream answer."""
        up = self.server.upstream
        headers = []
        for k, v in self.headers.items():
            lk = k.lower()
            if lk in HOP_BY_HOP or lk in ("host", "content-length", "expect"):
                continue
            headers.append((k, v))
        headers.append(("Host", up.netloc))
        if had_body or self.command in ("POST", "PUT", "PATCH"):
            headers.append(("Content-Length", str(len(body))))
        conn = http.client.HTTPConnection(up.hostname, up.port or 80, timeout=300)
        try:
            conn.putrequest(self.command, target, skip_host=True,
                            skip_accept_encoding=True)
            for k, v in headers:
                conn.putheader(k, v)
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()

    def _proxy(self, target, body, had_body):
        state = self.server.state
        entry = {
            "method": self.command,
            "path": target,
            "range": self.headers.get("Range"),
            "authorization": self.headers.get("Authorization") is not None,
            "fault": None,
            "status": None,
            "time": time.time(),
            # the client's port: requests sharing it shared a connection
            "peer": self.client_address[1],
        }
        state.add_log(entry)
        rule = state.take_fault(target)
        action = rule["action"] if rule else None
        entry["fault"] = action

        if action in STATUS_ACTIONS:
            code = int(action)
            extra = []
            if rule.get("retry_after") is not None:
                extra.append(("Retry-After", rule["retry_after"]))
            msg = None
            if code == 404:
                msg = "No such object: %s" % urllib.parse.urlsplit(target).path
            entry["status"] = code
            self._send_simple(code, gcs_error_body(code, msg), extra=extra)
            return

        if action == "delay":
            time.sleep(rule["seconds"])

        if not self._authorized():
            status, reason = 401, REASONS[401]
            resp_headers = [("Content-Type", "application/json; charset=UTF-8"),
                            ("WWW-Authenticate",
                             'Bearer realm="https://accounts.google.com/"'),
                            ("Date", self.date_time_string())]
            resp_body = gcs_error_body(401)
        else:
            try:
                status, reason, resp_headers, resp_body = \
                    self._fetch_upstream(target, body, had_body)
            except (OSError, http.client.HTTPException) as e:
                entry["status"] = 502
                self.close_connection = True
                self._send_simple(502, gcs_error_body(502, "upstream error: %s" % e))
                return

        entry["status"] = status
        head_request = self.command == "HEAD"
        no_body = head_request or status in (204, 304) or 100 <= status < 200
        out_headers = []
        for k, v in resp_headers:
            lk = k.lower()
            if lk in HOP_BY_HOP:
                continue
            if lk == "content-length" and not head_request:
                continue
            out_headers.append((k, v))
        if not no_body:
            out_headers.append(("Content-Length", str(len(resp_body))))
            payload = resp_body
        else:
            payload = b""

        if action == "reset":
            self._send_partial_then_reset(status, reason, out_headers, payload)
            self.log_request(status)
            return
        if action == "stall":
            self._send_partial_then_stall(status, reason, out_headers, payload,
                                          rule["seconds"])
            self.log_request(status)
            return

        self.wfile.write(self._head_bytes(status, reason, out_headers) + payload)
        self.log_request(status)

    def _send_partial_then_reset(self, status, reason, headers, payload):
        self.close_connection = True
        sock = self.connection
        try:
            self.wfile.write(self._head_bytes(status, reason, headers)
                             + payload[:len(payload) // 2])
            # Let the client receive what was sent: an abortive close throws
            # away whatever is still in the send queue.
            deadline = time.monotonic() + 3
            if fcntl is not None:
                while unsent_bytes(sock) > 0 and time.monotonic() < deadline:
                    time.sleep(0.005)
            else:
                time.sleep(0.2)
        except OSError:
            pass
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        # detach() + os.close() closes the descriptor now even though the
        # handler's file objects still refer to the socket; with SO_LINGER 0
        # the kernel answers with an RST instead of a FIN.
        os.close(sock.detach())

    def _send_partial_then_stall(self, status, reason, headers, payload, seconds):
        self.close_connection = True
        try:
            self.wfile.write(self._head_bytes(status, reason, headers)
                             + payload[:len(payload) // 2])
        except OSError:
            return
        time.sleep(seconds)
        # Returning with close_connection set closes the socket (FIN).


class ProxyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, upstream, verbose):
        self.upstream = upstream
        self.verbose = verbose
        self.state = State()
        super().__init__(addr, ProxyHandler)

    def handle_error(self, request, client_address):
        # Clients hanging up mid-response are expected here.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, BrokenPipeError, TimeoutError)):
            return
        if self.verbose:
            super().handle_error(request, client_address)


def main(argv=None):
    ap = argparse.ArgumentParser(description="fault-injecting reverse proxy")
    ap.add_argument("--listen-port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT")
    ap.add_argument("--verbose", action="store_true", help="log requests on stderr")
    args = ap.parse_args(argv)

    upstream = urllib.parse.urlsplit(args.upstream)
    if upstream.scheme != "http" or not upstream.hostname:
        ap.error("--upstream must look like http://127.0.0.1:PORT")

    def on_signal(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server = ProxyServer(("127.0.0.1", args.listen_port), upstream, args.verbose)
    host, port = server.server_address[:2]
    sys.stdout.write("READY %s:%d\n" % (host, port))
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    except SystemExit:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
