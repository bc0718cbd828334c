#!/usr/bin/env python3
"""Fake GCE metadata server and OAuth2 token endpoint for the zipperfs tests.

Server mode:
    fakeauth.py --listen-port N [--expires-in SECONDS]
                [--public-key PEM_FILE --client-email EMAIL]
                [--token-uri URI] [--project-id ID] [--verbose]

Prints "READY 127.0.0.1:N" on stdout once listening (port 0 picks a free
port). SIGTERM or SIGINT stops it. Listens on 127.0.0.1 only.

    GET  /computeMetadata/v1/instance/service-accounts/default/token[?scopes=...]
         needs "Metadata-Flavor: Google" (else 403); answers
         {"access_token": "meta-<counter>-<random>", "expires_in": E,
          "token_type": "Bearer"}
    GET  /computeMetadata/v1/instance/service-accounts/default/email
    GET  /computeMetadata/v1/instance/service-accounts/default/?recursive=true
    GET  /computeMetadata/v1/project/project-id
    GET  /computeMetadata/v1/project/numeric-project-id
    GET  /                       probe; always 200 with Metadata-Flavor: Google
    POST /token                  grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer
                                 &assertion=JWT (RS256, checked with the openssl
                                 command against --public-key); answers
                                 {"access_token": "jwt-<counter>-<random>", ...}
                                 or 400 {"error": "invalid_grant",
                                         "error_description": "..."}
    GET  /__issued__             {"tokens": [...], "requests": [{"path", "ok",
                                  "reason", ...}]}
    POST /__config__             {"expires_in": E} and/or {"fail": N}: lifetime of
                                 tokens issued from now on / answer the next N
                                 token requests with 500

The JWT's aud must equal the token URI, by default http://127.0.0.1:N/token
(the path of --token-uri, if given, is served as the token endpoint too).

Key mode:
    fakeauth.py --make-key DIR --client-email EMAIL --token-uri URI [--project-id ID]
writes DIR/key.pem (PKCS#8), DIR/pub.pem and DIR/sa.json (a service-account key
file shaped like Google's) using the openssl command, prints their paths as JSON.
"""

import argparse
import base64
import binascii
import http.server
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ALLOWED_SCOPES = {
    "https://www.googleapis.com/auth/devstorage.read_only",
    "https://www.googleapis.com/auth/devstorage.read_write",
    "https://www.googleapis.com/auth/devstorage.full_control",
    "https://www.googleapis.com/auth/cloud-platform",
}
META_SA_PREFIX = "/computeMetadata/v1/instance/service-accounts/"
B64URL = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")
MAX_SKEW = 300
MAX_LIFETIME = 3600


class JwtError(Exception):
    pass


def b64url_decode(part, what):
    if not B64URL.match(part):
        raise JwtError("%s is not base64url" % what)
    part = part.rstrip("=")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise JwtError("%s is not base64url" % what)


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class State:
    def __init__(self, expires_in):
        self.lock = threading.Lock()
        self.expires_in = expires_in
        self.fail = 0
        self.counter = 0
        self.tokens = []
        self.requests = []

    def issue(self, prefix):
        with self.lock:
            self.counter += 1
            token = "%s-%d-%s" % (prefix, self.counter, secrets.token_hex(8))
            self.tokens.append(token)
            return token, self.expires_in

    def take_failure(self):
        with self.lock:
            if self.fail > 0:
                self.fail -= 1
                return True
            return False

    def record(self, path, ok, reason, status):
        with self.lock:
            self.requests.append({"path": path, "ok": ok, "reason": reason,
                                  "status": status, "time": time.time()})


class AuthHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fakeauth"
    timeout = 600

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("fakeauth: %s %s\n" % (self.address_string(), fmt % args))

    # -- helpers -----------------------------------------------------------

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, status, body, content_type, metadata=False, extra=()):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if metadata:
            self.send_header("Metadata-Flavor", "Google")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status, obj, metadata=False, extra=()):
        self._send(status, json.dumps(obj), "application/json", metadata, extra)

    def _text(self, status, text, metadata=True):
        self._send(status, text, "text/plain; charset=utf-8", metadata)

    def _has_flavor(self):
        return self.headers.get("Metadata-Flavor") == "Google"

    # -- GET ----------------------------------------------------------------

    def do_GET(self):
        srv = self.server
        parts = urllib.parse.urlsplit(self.path)
        path = parts.path
        query = urllib.parse.parse_qs(parts.query)

        if path in ("/", ""):
            self._text(200, "computeMetadata/\n")
            return
        if path == "/__issued__":
            with srv.state.lock:
                self._json(200, {"tokens": list(srv.state.tokens),
                                 "requests": [dict(r) for r in srv.state.requests],
                                 "expires_in": srv.state.expires_in,
                                 "fail": srv.state.fail})
            return
        if path.startswith("/computeMetadata/"):
            self._metadata(path, query)
            return
        self._text(404, "not found\n", metadata=False)

    do_HEAD = do_GET

    def _metadata(self, path, query):
        srv = self.server
        sa_rest = path[len(META_SA_PREFIX):] if path.startswith(META_SA_PREFIX) else None
        is_token = sa_rest is not None and re.fullmatch(r"[^/]+/token", sa_rest)

        if is_token:
            if srv.state.take_failure():
                srv.state.record(self.path, False, "injected failure", 500)
                self._text(500, "injected failure\n")
                return
        if not self._has_flavor():
            if is_token:
                srv.state.record(self.path, False, "missing Metadata-Flavor header", 403)
            self._text(403, "Missing required header: Metadata-Flavor\n")
            return
        if self.headers.get("X-Forwarded-For"):
            self._text(403, "X-Forwarded-For not allowed\n")
            return

        if is_token:
            token, expires_in = srv.state.issue("meta")
            srv.state.record(self.path, True, None, 200)
            self._json(200, {"access_token": token, "expires_in": expires_in,
                             "token_type": "Bearer"}, metadata=True)
            return
        email = srv.client_email or "default@%s.iam.gserviceaccount.com" % srv.project_id
        if sa_rest is not None and re.fullmatch(r"[^/]+/email", sa_rest):
            self._text(200, email)
            return
        if sa_rest is not None and re.fullmatch(r"[^/]+/?", sa_rest) and \
                query.get("recursive") == ["true"]:
            self._json(200, {"aliases": ["default"], "email": email,
                             "scopes": sorted(ALLOWED_SCOPES)}, metadata=True)
            return
        if sa_rest == "":
            self._text(200, "default/\n%s/\n" % email)
            return
        if path == "/computeMetadata/v1/project/project-id":
            self._text(200, srv.project_id)
            return
        if path == "/computeMetadata/v1/project/numeric-project-id":
            self._text(200, "123456789012")
            return
        if path in ("/computeMetadata/", "/computeMetadata/v1", "/computeMetadata/v1/"):
            self._text(200, "instance/\nproject/\n")
            return
        self._text(404, "not found\n")

    # -- POST ---------------------------------------------------------------

    def do_POST(self):
        srv = self.server
        path = urllib.parse.urlsplit(self.path).path
        body = self._body()
        if path == "/__config__":
            self._config(body)
            return
        if path in ("/token", srv.token_path):
            self._token(body)
            return
        self._text(404, "not found\n", metadata=False)

    def _config(self, body):
        state = self.server.state
        try:
            obj = json.loads(body.decode("utf-8") or "{}")
            if not isinstance(obj, dict):
                raise ValueError("expected an object")
            new_e = obj.get("expires_in")
            new_f = obj.get("fail")
            for name, v in (("expires_in", new_e), ("fail", new_f)):
                if v is not None and (isinstance(v, bool) or not isinstance(v, int)
                                      or v < 0):
                    raise ValueError("%s must be a non-negative integer" % name)
        except (UnicodeDecodeError, ValueError) as e:
            self._json(400, {"error": str(e)})
            return
        with state.lock:
            if new_e is not None:
                state.expires_in = new_e
            if new_f is not None:
                state.fail = new_f
            cfg = {"ok": True, "expires_in": state.expires_in, "fail": state.fail}
        self._json(200, cfg)

    def _token(self, body):
        srv = self.server
        state = srv.state
        if state.take_failure():
            state.record(self.path, False, "injected failure", 500)
            self._json(500, {"error": "internal_failure",
                             "error_description": "injected failure"})
            return
        try:
            self._check_grant(body)
        except JwtError as e:
            state.record(self.path, False, str(e), 400)
            self._json(400, {"error": "invalid_grant", "error_description": str(e)},
                       extra=[("Cache-Control", "no-store")])
            return
        token, expires_in = state.issue("jwt")
        state.record(self.path, True, None, 200)
        self._json(200, {"access_token": token, "expires_in": expires_in,
                         "token_type": "Bearer"},
                   extra=[("Cache-Control", "no-store"), ("Pragma", "no-cache")])

    def _check_grant(self, body):
        srv = self.server
        if srv.public_key is None or srv.client_email is None:
            raise JwtError("JWT flow not configured (--public-key/--client-email)")
        ctype = self.headers.get("Content-Type", "")
        if not ctype.lower().startswith("application/x-www-form-urlencoded"):
            raise JwtError("Content-Type must be application/x-www-form-urlencoded")
        try:
            form = urllib.parse.parse_qs(body.decode("ascii"), keep_blank_values=True,
                                         strict_parsing=bool(body))
        except (UnicodeDecodeError, ValueError):
            raise JwtError("malformed form body")
        grant = form.get("grant_type", [])
        if grant != [JWT_GRANT]:
            raise JwtError("Invalid grant_type: %s" % (grant[0] if grant else ""))
        assertion = form.get("assertion", [])
        if len(assertion) != 1 or not assertion[0]:
            raise JwtError("missing assertion")
        self._verify_jwt(assertion[0])

    def _verify_jwt(self, jwt):
        srv = self.server
        parts = jwt.split(".")
        if len(parts) != 3:
            raise JwtError("JWT must have three parts")
        try:
            header = json.loads(b64url_decode(parts[0], "header"))
            claims = json.loads(b64url_decode(parts[1], "claims"))
        except (UnicodeDecodeError, ValueError):
            raise JwtError("JWT header or claims are not JSON")
        signature = b64url_decode(parts[2], "signature")
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise JwtError("JWT header and claims must be objects")
        if header.get("alg") != "RS256":
            raise JwtError("alg must be RS256, got %r" % header.get("alg"))
        if header.get("typ") != "JWT":
            raise JwtError("typ must be JWT, got %r" % header.get("typ"))
        if claims.get("iss") != srv.client_email:
            raise JwtError("iss %r is not the expected client_email" % claims.get("iss"))
        scope = claims.get("scope")
        if not isinstance(scope, str) or not (set(scope.split()) & ALLOWED_SCOPES):
            raise JwtError("scope %r has no storage scope" % scope)
        if claims.get("aud") != srv.token_uri:
            raise JwtError("aud %r is not %s" % (claims.get("aud"), srv.token_uri))
        iat, exp = claims.get("iat"), claims.get("exp")
        if not is_number(iat) or not is_number(exp):
            raise JwtError("iat and exp must be numbers")
        now = time.time()
        if abs(now - iat) > MAX_SKEW:
            raise JwtError("iat %s is more than %d s from now (%d)" % (iat, MAX_SKEW, now))
        if exp <= iat:
            raise JwtError("exp must be after iat")
        if exp - iat > MAX_LIFETIME:
            raise JwtError("exp - iat must be at most %d s" % MAX_LIFETIME)
        if exp <= now:
            raise JwtError("assertion has expired")
        if not signature:
            raise JwtError("empty signature")
        signing_input = (parts[0] + "." + parts[1]).encode("ascii")
        with tempfile.TemporaryDirectory(prefix="fakeauth-") as tmp:
            data_file = os.path.join(tmp, "data")
            sig_file = os.path.join(tmp, "sig")
            with open(data_file, "wb") as f:
                f.write(signing_input)
            with open(sig_file, "wb") as f:
                f.write(signature)
            try:
                res = subprocess.run(
                    ["openssl", "dgst", "-sha256", "-verify", srv.public_key,
                     "-signature", sig_file, data_file],
                    stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired) as e:
                raise JwtError("could not run openssl: %s" % e)
        if res.returncode != 0 or b"Verified OK" not in res.stdout:
            raise JwtError("invalid JWT signature")


class AuthServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, args):
        self.verbose = args.verbose
        self.state = State(args.expires_in)
        self.public_key = os.path.abspath(args.public_key) if args.public_key else None
        self.client_email = args.client_email
        self.project_id = args.project_id
        super().__init__(addr, AuthHandler)
        port = self.server_address[1]
        self.token_uri = args.token_uri or "http://127.0.0.1:%d/token" % port
        self.token_path = urllib.parse.urlsplit(self.token_uri).path or "/token"

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        if self.verbose:
            super().handle_error(request, client_address)


def run_openssl(argv):
    res = subprocess.run(["openssl"] + argv, stdin=subprocess.DEVNULL,
                         capture_output=True, timeout=120)
    if res.returncode != 0:
        raise SystemExit("openssl %s failed: %s" % (argv[0], res.stderr.decode(errors="replace")))


def make_key(directory, client_email, token_uri, project_id):
    os.makedirs(directory, exist_ok=True)
    key = os.path.join(directory, "key.pem")
    pub = os.path.join(directory, "pub.pem")
    sa = os.path.join(directory, "sa.json")
    old_umask = os.umask(0o077)
    try:
        run_openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                     "-out", key])
        run_openssl(["pkey", "-in", key, "-pubout", "-out", pub])
        with open(key) as f:
            private_key = f.read()
        info = {
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": secrets.token_hex(20),
            "private_key": private_key,
            "client_email": client_email,
            "client_id": str(100000000000000000000 + secrets.randbelow(10 ** 20)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
                                    + urllib.parse.quote(client_email, safe=""),
            "universe_domain": "googleapis.com",
        }
        with open(sa, "w") as f:
            json.dump(info, f, indent=2)
            f.write("\n")
    finally:
        os.umask(old_umask)
    sys.stdout.write(json.dumps({"key": key, "pub": pub, "sa": sa}) + "\n")
    sys.stdout.flush()


def main(argv=None):
    ap = argparse.ArgumentParser(description="fake GCE metadata server and OAuth2 "
                                             "token endpoint")
    ap.add_argument("--listen-port", type=int)
    ap.add_argument("--expires-in", type=int, default=3600)
    ap.add_argument("--public-key", help="PEM public key checking JWT signatures")
    ap.add_argument("--client-email", help="expected iss of JWTs / sa.json client_email")
    ap.add_argument("--token-uri", help="expected aud of JWTs (default "
                                        "http://127.0.0.1:N/token); with --make-key, "
                                        "the token_uri written to sa.json")
    ap.add_argument("--project-id", default="zipperfs-test")
    ap.add_argument("--make-key", metavar="DIR",
                    help="write DIR/key.pem, DIR/pub.pem, DIR/sa.json and exit")
    ap.add_argument("--verbose", action="store_true", help="log requests on stderr")
    args = ap.parse_args(argv)

    if args.make_key:
        if not args.client_email or not args.token_uri:
            ap.error("--make-key needs --client-email and --token-uri")
        make_key(args.make_key, args.client_email, args.token_uri, args.project_id)
        return 0
    if args.listen_port is None:
        ap.error("--listen-port is required")
    if args.expires_in < 0:
        ap.error("--expires-in must not be negative")
    if args.public_key and not os.path.isfile(args.public_key):
        ap.error("--public-key %s: no such file" % args.public_key)

    def on_signal(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server = AuthServer(("127.0.0.1", args.listen_port), args)
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
