"""A notification endpoint for the tests: an HTTP server on 127.0.0.1 that
records every POST (path, headers, body) as one JSON line in a log file and
answers 200, or, while told to, some other status.

    notify_receiver.py --port N --log FILE [--fail-first K --fail-status S]

Prints "READY 127.0.0.1:N" once it listens (see servers.start_server).
The first K POSTs are answered with status S (default 503) and still logged
with "answered": S, so a test can see the retries.
"""

import argparse
import base64
import http.server
import json
import sys
import threading


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--fail-first", type=int, default=0)
    ap.add_argument("--fail-status", type=int, default=503)
    args = ap.parse_args()
    lock = threading.Lock()
    state = {"failures_left": args.fail_first}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with lock:
                fail = state["failures_left"] > 0
                if fail:
                    state["failures_left"] -= 1
                status = args.fail_status if fail else 200
                with open(args.log, "a") as f:
                    f.write(json.dumps({
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": base64.b64encode(body).decode(),
                        "answered": status,
                    }) + "\n")
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, fmt, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("READY 127.0.0.1:%d" % args.port, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
