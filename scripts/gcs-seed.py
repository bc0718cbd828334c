#!/usr/bin/python3
"""Upload a directory tree into a bucket of the local GCS emulator.

    gcs-seed.py --endpoint http://127.0.0.1:N --bucket B SRC_DIR [--prefix P]

Every regular file under SRC_DIR becomes the object "P/REL_PATH" (or just
"REL_PATH" without --prefix), REL_PATH using "/" separators. Files up to
100 MiB go through the JSON API simple media upload, larger ones through the
emulator's Firebase /v0 resumable upload in 64 MiB chunks (the JSON API
rejects bodies over 130 MB). Uploads run on a pool of 8 threads.

Also importable (Python 3 standard library only):

    upload(endpoint, bucket, name, data_or_path) -> object metadata (dict)
    delete(endpoint, bucket, name) -> True if deleted, False if not found

See scripts/GCS-EMULATOR.md for the emulator's behaviour.
"""

import argparse
import concurrent.futures
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

CHUNKED_THRESHOLD = 100 * 1024 * 1024  # above this: /v0 chunked upload
CHUNK_SIZE = 64 * 1024 * 1024          # must stay below the 130 MB body limit
TIMEOUT = 600                          # seconds per HTTP request
JOBS = 8

__all__ = ["upload", "delete", "seed", "GcsError"]


class GcsError(Exception):
    """An HTTP request to the emulator failed."""


def _q(s):
    """Percent-encode a bucket or object name for a path segment or query."""
    return urllib.parse.quote(s, safe="", encoding="utf-8", errors="strict")


def _request(method, url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method,
                                 headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        body = e.read()
        return e.code, e.headers, body


def _check(status, body, what):
    if status // 100 != 2:
        text = body[:500].decode("utf-8", "replace") if body else ""
        raise GcsError(f"{what}: HTTP {status}: {text}")


def _media_upload(endpoint, bucket, name, data):
    url = (f"{endpoint}/upload/storage/v1/b/{_q(bucket)}/o"
           f"?uploadType=media&name={_q(name)}")
    status, _, body = _request(
        "POST", url, data=bytes(data),
        headers={"Content-Type": "application/octet-stream"})
    _check(status, body, f"upload {name}")
    return json.loads(body)


def _chunked_upload(endpoint, bucket, name, size, read_chunk):
    """Firebase /v0 resumable upload; read_chunk(offset, length) -> bytes."""
    start_url = f"{endpoint}/v0/b/{_q(bucket)}/o?name={_q(name)}"
    status, headers, body = _request(
        "POST", start_url,
        data=json.dumps({"contentType": "application/octet-stream"}).encode(),
        headers={"X-Goog-Upload-Protocol": "resumable",
                 "X-Goog-Upload-Command": "start",
                 "Content-Type": "application/json"})
    _check(status, body, f"start upload {name}")
    upload_url = headers.get("X-Goog-Upload-URL")
    if not upload_url:
        raise GcsError(f"start upload {name}: no X-Goog-Upload-URL header")
    offset = 0
    while True:
        length = min(CHUNK_SIZE, size - offset)
        chunk = read_chunk(offset, length)
        if len(chunk) != length:
            raise GcsError(f"upload {name}: short read at offset {offset}")
        last = offset + length >= size
        status, _, body = _request(
            "POST", upload_url, data=chunk,
            headers={"X-Goog-Upload-Command":
                     "upload, finalize" if last else "upload",
                     "X-Goog-Upload-Offset": str(offset),
                     "Content-Type": "application/octet-stream"})
        _check(status, body, f"upload {name} at offset {offset}")
        offset += length
        if last:
            return json.loads(body)


def upload(endpoint, bucket, name, data_or_path):
    """Create or replace object NAME in BUCKET.

    data_or_path is bytes-like (the object's content) or a path (str or
    os.PathLike) of a file to upload. Returns the object's metadata as a
    dict; note that objects uploaded in chunks get Firebase-style metadata
    (see GCS-EMULATOR.md), fetch it with GET /storage/v1/... if it matters.
    """
    endpoint = endpoint.rstrip("/")
    if isinstance(data_or_path, (bytes, bytearray, memoryview)):
        data = memoryview(data_or_path).cast("B")
        if len(data) <= CHUNKED_THRESHOLD:
            return _media_upload(endpoint, bucket, name, data)
        return _chunked_upload(endpoint, bucket, name, len(data),
                               lambda off, n: bytes(data[off:off + n]))
    path = os.fspath(data_or_path)
    size = os.path.getsize(path)
    if size <= CHUNKED_THRESHOLD:
        with open(path, "rb") as f:
            return _media_upload(endpoint, bucket, name, f.read())
    with open(path, "rb") as f:
        def read_chunk(off, n):
            f.seek(off)
            return f.read(n)
        return _chunked_upload(endpoint, bucket, name, size, read_chunk)


def delete(endpoint, bucket, name):
    """Delete object NAME; True if it existed, False if it was not found."""
    url = f"{endpoint.rstrip('/')}/storage/v1/b/{_q(bucket)}/o/{_q(name)}"
    status, _, body = _request("DELETE", url)
    if status == 404:
        return False
    _check(status, body, f"delete {name}")
    return True


def _walk(src_dir):
    """Yield (path, relative name with '/' separators) of regular files."""
    for root, dirs, files in os.walk(src_dir):
        dirs.sort()
        for fn in sorted(files):
            path = os.path.join(root, fn)
            if not os.path.isfile(path):
                continue  # sockets, fifos, dangling links
            rel = os.path.relpath(path, src_dir)
            yield path, rel.replace(os.sep, "/")


def seed(endpoint, bucket, src_dir, prefix="", jobs=JOBS, verbose=False):
    """Upload every file under src_dir; returns (files, bytes, errors)."""
    prefix = prefix.strip("/")
    items = []
    for path, rel in _walk(src_dir):
        items.append((path, f"{prefix}/{rel}" if prefix else rel))
    n_files = n_bytes = 0
    errors = []

    def one(item):
        path, name = item
        try:
            _q(name)
        except UnicodeEncodeError:
            raise GcsError(f"{path}: file name is not valid UTF-8")
        md = upload(endpoint, bucket, name, path)
        return name, int(md.get("size", 0))

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futs = {pool.submit(one, it): it for it in items}
        for fut in concurrent.futures.as_completed(futs):
            try:
                name, size = fut.result()
            except Exception as e:  # report all failures, keep going
                errors.append(f"{futs[fut][0]}: {e}")
                continue
            n_files += 1
            n_bytes += size
            if verbose:
                print(f"{size:>12} {name}", file=sys.stderr)
    return n_files, n_bytes, errors


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Upload SRC_DIR into a bucket of the local GCS emulator.")
    ap.add_argument("--endpoint", required=True,
                    help="emulator base URL, e.g. http://127.0.0.1:9199")
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--prefix", default="",
                    help="object name prefix: objects become PREFIX/REL_PATH")
    ap.add_argument("--jobs", type=int, default=JOBS,
                    help=f"parallel uploads (default {JOBS})")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("src_dir", metavar="SRC_DIR")
    args = ap.parse_args(argv)
    if not os.path.isdir(args.src_dir):
        ap.error(f"{args.src_dir} is not a directory")
    t0 = time.monotonic()
    n_files, n_bytes, errors = seed(args.endpoint, args.bucket, args.src_dir,
                                    args.prefix, max(1, args.jobs),
                                    args.verbose)
    for e in errors:
        print(f"gcs-seed: {e}", file=sys.stderr)
    print(f"gcs-seed: uploaded {n_files} files, {n_bytes} bytes in "
          f"{time.monotonic() - t0:.1f}s"
          + (f", {len(errors)} failed" if errors else ""), file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
