"""Process helpers for the integration tests.

    free_port()                       a TCP port on 127.0.0.1 that was free a moment ago
    start_server(argv, timeout=30)    run argv, wait for its "READY host:port" line,
                                      return (Popen, "host:port")
    stop_server(popen)                SIGTERM the process by PID, SIGKILL if it lingers
    script_argv(name, *args)          [python, <this directory>/name, *args]

start_server stops the process itself if it never says READY, so callers only
have to stop what start_server returned, e.g. with addCleanup(stop_server, p).

What a test run holds until its cleanups give it back (processes, mounts,
directories) is also listed here (hold, release), for a run that gets no
cleanups: meson's time limit sends SIGTERM to the run's process group and
SIGKILL half a second later. release_all_on_sigterm() makes the first signal
hand the list to a process of a session of its own, out of the SIGKILL's
reach, which lazily unmounts each mount, stops each process by PID and
removes each directory (`python3 servers.py --release JSON`).
"""

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


_held = {"pids": set(), "mounts": set(), "dirs": set()}


def hold(kind, value):
    """Lists value (a PID, a mountpoint, a directory) as held by this run."""
    _held[kind].add(value)
    return value


def release(kind, value):
    _held[kind].discard(value)


def remove_dir(path):
    """Removes a directory listed with hold("dirs", path), and its entry."""
    shutil.rmtree(path, ignore_errors=True)
    release("dirs", path)


def _release_all(held):
    """Run by the process release_all_on_sigterm() starts."""
    for mnt in held["mounts"]:
        try:
            subprocess.run(["fusermount3", "-uz", mnt], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in held["pids"]:
            try:
                os.kill(pid, sig)
                alive.append(pid)
            except ProcessLookupError:
                pass
        if not alive:
            break
        time.sleep(2)
    for d in held["dirs"]:
        shutil.rmtree(d, ignore_errors=True)


def release_all_on_sigterm():
    """On SIGTERM, releases what the run holds (see above) and exits."""
    def on_sigterm(signum, frame):
        try:
            held = {k: sorted(v) for k, v in _held.items()}
            subprocess.Popen([sys.executable, os.path.abspath(__file__), "--release",
                              json.dumps(held)], start_new_session=True,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
            sys.stderr.write("terminated: %d mounts, %d processes and %d directories "
                             "released\n" % (len(held["mounts"]), len(held["pids"]),
                                              len(held["dirs"])))
            sys.stderr.flush()
        finally:
            os._exit(128 + signum)
    signal.signal(signal.SIGTERM, on_sigterm)


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
    hold("pids", popen.pid)
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
    release("pids", popen.pid)
    return popen.returncode


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--release":
    _release_all(json.loads(sys.argv[2]))
