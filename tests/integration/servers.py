"""Process helpers for the integration tests.

    free_port()                       a TCP port on 127.0.0.1 that was free a moment ago
    start_server(argv, timeout=30)    run argv, wait for its "READY host:port" line,
                                      return (Popen, "host:port")
    stop_server(popen)                SIGTERM the process by PID, SIGKILL if it lingers
    script_argv(name, *args)          [python, <this directory>/name, *args]

start_server stops the process itself if it never says READY, so callers only
have to stop what start_server returned, e.g. with addCleanup(stop_server, p).
"""

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def script_argv(name, *args):
    return [sys.executable, os.path.join(HERE, name)] + [str(a) for a in args]


def _drain(stream):
    # The server should print nothing after READY; read anyway so that a
    # chatty server can never block on a full pipe. Closes the pipe at EOF.
    try:
        while True:
            data = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
            if not data:
                break
            sys.stderr.write(data.decode("utf-8", "replace"))
    except (OSError, ValueError):
        pass
    finally:
        try:
            stream.close()
        except OSError:
            pass


def start_server(argv, timeout=30, env=None, cwd=None, stderr=None):
    """Start argv and wait until it prints "READY host:port" on stdout.

    Returns (popen, "host:port"). Raises RuntimeError if the process exits or
    stays silent for `timeout` seconds; the process is stopped in that case.
    stderr is passed to Popen (default: inherited).
    """
    popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=stderr, env=env, cwd=cwd)
    try:
        addr = _wait_ready(popen, argv, timeout)
    except BaseException:
        stop_server(popen)
        if popen.stdout is not None:
            popen.stdout.close()
        raise
    threading.Thread(target=_drain, args=(popen.stdout,), daemon=True,
                     name="drain-%d" % popen.pid).start()
    return popen, addr


def _wait_ready(popen, argv, timeout):
    fd = popen.stdout.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError("%s: no READY line within %s s (got %r)"
                               % (argv, timeout, buf[-500:]))
        ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
        if not ready:
            if popen.poll() is not None:
                raise RuntimeError("%s exited with %s before READY (output %r)"
                                   % (argv, popen.returncode, buf[-500:]))
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            rc = popen.wait(timeout=5)
            raise RuntimeError("%s exited with %s before READY (output %r)"
                               % (argv, rc, buf[-500:]))
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            line = line.strip().decode("utf-8", "replace")
            if line.startswith("READY "):
                if buf:
                    sys.stderr.write(buf.decode("utf-8", "replace"))
                return line[len("READY "):].strip()
            sys.stderr.write(line + "\n")


def stop_server(popen, timeout=5):
    """Stop popen by PID: SIGTERM, then SIGKILL after `timeout` seconds.

    Safe to call twice or on a process that already exited. Returns the exit
    status.
    """
    if popen is None:
        return None
    if popen.poll() is None:
        try:
            os.kill(popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.kill(popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            popen.wait()
    return popen.returncode
