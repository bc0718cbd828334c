#!/usr/bin/env node
// A local S3 stand-in for the zipperfs integration tests: the npm package
// s3rver (path-style, objects in a private temp directory removed on exit),
// behind a front that adds what s3rver lacks and the tests need:
//
//   - SigV4 verification. s3rver 3.7.1 checks only that a SigV4 request
//     names a known access key; the front recomputes the signature of every
//     request that has an Authorization header (canonical URI, sorted
//     canonical query, the signed headers, x-amz-content-sha256 as the
//     payload hash, the scope's region) and answers 403
//     SignatureDoesNotMatch, InvalidAccessKeyId or InvalidToken as S3 does.
//   - Private buckets (--private NAME): anonymous requests get 403
//     AccessDenied. Every other bucket is public: s3rver has no ACLs.
//   - If-Match on GET and HEAD of an object (s3rver ignores it): 412
//     PreconditionFailed when the object's ETag differs. Can be turned off
//     at run time to stand for a server that ignores it.
//   - A request log.
//   - A per-request rate (--rate-mbs, or the control API): the body of
//     every GET is sent at most that many MB/s, as a cloud store serves
//     each connection at a bounded rate (about 100 MB/s) while parallel
//     connections add up. Off by default: loopback speed.
//   - A per-request latency (--latency-ms, or the control API): every
//     request is answered no sooner than that many ms after it came, as a
//     cloud store's first byte comes tens of ms after the request (one
//     round trip and its own time). Off by default.
//
//   node scripts/s3-server.js --port N [--host 127.0.0.1] [--region us-east-1]
//        [--bucket NAME]... [--private NAME]... [--key ID:SECRET[:TOKEN]]...
//        [--rate-mbs MB_PER_S] [--latency-ms MS] [--exit-on-stdin-close]
//
// --key replaces the default credentials S3RVER:S3RVER; a key given with a
// TOKEN is a temporary one whose requests must carry x-amz-security-token.
// Prints exactly one line "READY HOST:PORT" once listening; exits cleanly on
// SIGTERM/SIGINT. Control API (never a bucket: S3 bucket names hold no "_"):
//   GET  /__control__/log        JSON list of {method, path, range, ifMatch,
//                                authorization, signedHeaders, status, peer,
//                                active: requests in progress when it came,
//                                itself included, at: when it came and ms:
//                                how long its answer took, in ms}
//   POST /__control__/reset      clears the log
//   POST /__control__/if_match   {"enabled": true|false}
//   POST /__control__/rate       {"mbs": N} each GET's body at most N MB/s
//                                from the next request on; 0: no limit
//   POST /__control__/latency    {"ms": N} every request answered N ms
//                                late from the next one on; 0: none
// See scripts/S3-SERVER.md for what s3rver does. Install the package first:
//   npm ci --prefix scripts/test-servers --no-audit --no-fund
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const http = require("http");
const os = require("os");
const path = require("path");

function usage(msg) {
  if (msg) process.stderr.write(`s3-server: ${msg}\n`);
  process.stderr.write(
    "usage: node s3-server.js --port N [--host 127.0.0.1] [--region us-east-1] " +
      "[--bucket NAME]... [--private NAME]... [--key ID:SECRET[:TOKEN]]... " +
      "[--rate-mbs MB_PER_S] [--latency-ms MS] [--exit-on-stdin-close]\n");
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { host: "127.0.0.1", port: null, region: "us-east-1", buckets: [],
                 private: new Set(), keys: [], exitOnStdinClose: false, rateMbs: 0,
                 latencyMs: 0 };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let val = null;
    const eq = a.indexOf("=");
    if (a.startsWith("--") && eq > 0) {
      val = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    const next = () => {
      if (val !== null) return val;
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case "--port": opts.port = next(); break;
      case "--host": opts.host = next(); break;
      case "--region": opts.region = next(); break;
      case "--bucket": opts.buckets.push(next()); break;
      case "--private": opts.private.add(next()); break;
      case "--key": {
        const parts = next().split(":");
        if (parts.length < 2 || parts.length > 3 || !parts[0] || !parts[1]) {
          usage("--key takes ID:SECRET[:TOKEN]");
        }
        opts.keys.push({ id: parts[0], secret: parts[1], token: parts[2] || null });
        break;
      }
      case "--exit-on-stdin-close": opts.exitOnStdinClose = true; break;
      case "--rate-mbs": {
        const v = Number(next());
        if (!(v >= 0)) usage("--rate-mbs takes a number of MB/s (0: no limit)");
        opts.rateMbs = v;
        break;
      }
      case "--latency-ms": {
        const v = Number(next());
        if (!(v >= 0)) usage("--latency-ms takes a number of ms (0: none)");
        opts.latencyMs = v;
        break;
      }
      case "-h": case "--help": usage(); break;
      default: usage(`unknown argument ${a}`);
    }
  }
  if (opts.port === null) usage("--port is required");
  if (!/^\d+$/.test(String(opts.port))) usage("--port must be a number");
  opts.port = Number(opts.port);
  if (opts.port < 1 || opts.port > 65535) usage("--port must be 1..65535");
  if (opts.keys.length === 0) opts.keys.push({ id: "S3RVER", secret: "S3RVER", token: null });
  return opts;
}

const opts = parseArgs(process.argv.slice(2));

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "zipperfs-s3-"));
let tmpRemoved = false;
function removeTmp() {
  if (tmpRemoved) return;
  tmpRemoved = true;
  try {
    fs.rmSync(tmpRoot, { recursive: true, force: true });
  } catch (e) {
    process.stderr.write(`s3-server: cannot remove ${tmpRoot}: ${e.message}\n`);
  }
}
process.on("exit", removeTmp);

function s3rverModule(sub) {
  const base = path.join(__dirname, "test-servers");
  try {
    return require(require.resolve(`s3rver/${sub}`, { paths: [base] }));
  } catch (e) {
    process.stderr.write(
      `s3-server: cannot load s3rver/${sub} under ${base}/node_modules (${e.message});\n` +
        "  run: npm ci --prefix scripts/test-servers --no-audit --no-fund\n");
    removeTmp();
    process.exit(1);
  }
}

// s3rver 3.7.1 makes ListObjectsV2 continuation tokens with DES, which
// OpenSSL 3 (Node 17 and later) no longer offers: every truncated page would
// be a 500. The tokens are s3rver's own business, so AES-128-CTR (same
// lengths, an 8-byte IV padded to 16) stands in for DES.
(function replaceDes() {
  try {
    crypto.createCipheriv("des", Buffer.alloc(8), Buffer.alloc(8));
    return;
  } catch (e) {
    // not available: replace it below
  }
  const wrap = (orig) => function (algorithm, key, iv, ...rest) {
    if (String(algorithm).toLowerCase() === "des") {
      const k = Buffer.alloc(16);
      Buffer.from(key).copy(k);
      const v = Buffer.alloc(16);
      Buffer.from(iv).copy(v);
      return orig.call(this, "aes-128-ctr", k, v, ...rest);
    }
    return orig.call(this, algorithm, key, iv, ...rest);
  };
  crypto.createCipheriv = wrap(crypto.createCipheriv);
  crypto.createDecipheriv = wrap(crypto.createDecipheriv);
})();

const S3rver = s3rverModule("lib/s3rver.js");
const AWSAccount = s3rverModule("lib/models/account.js");

// s3rver's own check wants the access key in its registry
for (const k of opts.keys) AWSAccount.DUMMY_ACCOUNT.createKeyPair(k.id, k.secret);
const keysById = new Map(opts.keys.map((k) => [k.id, k]));

// ---- SigV4 ------------------------------------------------------------

// RFC 3986 percent-decoding to bytes (no "+" for space: SigV4 has none)
function pctDecode(s) {
  const out = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x25 && i + 2 < s.length && /^[0-9A-Fa-f]{2}$/.test(s.substr(i + 1, 2))) {
      out.push(parseInt(s.substr(i + 1, 2), 16));
      i += 2;
    } else {
      for (const b of Buffer.from(s[i], "utf8")) out.push(b);
    }
  }
  return Buffer.from(out);
}

// SigV4's URI encoding: unreserved bytes kept, the rest %XX upper case
function uriEncode(bytes, keepSlash) {
  let out = "";
  for (const b of bytes) {
    const ch = String.fromCharCode(b);
    if (/[A-Za-z0-9\-._~]/.test(ch) || (keepSlash && ch === "/")) out += ch;
    else out += "%" + b.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

function canonicalQuery(query) {
  if (!query) return "";
  const pairs = query.split("&").filter((p) => p.length > 0).map((p) => {
    const eq = p.indexOf("=");
    const name = eq < 0 ? p : p.slice(0, eq);
    const value = eq < 0 ? "" : p.slice(eq + 1);
    return [uriEncode(pctDecode(name), false), uriEncode(pctDecode(value), false)];
  });
  pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return pairs.map(([n, v]) => `${n}=${v}`).join("&");
}

function hmac(key, data) {
  return crypto.createHmac("sha256", key).update(data, "utf8").digest();
}

function s3Error(res, status, code, message, method) {
  const body =
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
  res.writeHead(status, { "Content-Type": "application/xml",
                          "Content-Length": method === "HEAD" ? 0 : Buffer.byteLength(body) });
  res.end(method === "HEAD" ? undefined : body);
}

// Returns null when the request is signed correctly, else [status, code, message].
function verifySigV4(req) {
  const auth = req.headers["authorization"];
  const m = /^AWS4-HMAC-SHA256 Credential=([^,]+),\s*SignedHeaders=([^,]+),\s*Signature=([0-9a-f]{64})$/.exec(auth);
  if (!m) return [400, "AuthorizationHeaderMalformed", "The authorization header is malformed."];
  const [, credential, signedHeaders, signature] = m;
  const scope = credential.split("/");
  if (scope.length !== 5 || scope[3] !== "s3" || scope[4] !== "aws4_request") {
    return [400, "AuthorizationHeaderMalformed", "The credential scope is malformed."];
  }
  const [keyId, date, region] = scope;
  const key = keysById.get(keyId);
  if (!key) {
    return [403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."];
  }
  if (region !== opts.region) {
    return [400, "AuthorizationHeaderMalformed",
            `The authorization header is malformed; the region '${region}' is wrong; expecting '${opts.region}'`];
  }
  const amzDate = req.headers["x-amz-date"];
  if (!amzDate || amzDate.slice(0, 8) !== date) {
    return [403, "AccessDenied", "x-amz-date is missing or does not match the credential scope"];
  }
  const payloadHash = req.headers["x-amz-content-sha256"];
  if (!payloadHash) {
    return [400, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256"];
  }
  const names = signedHeaders.split(";");
  if (!names.includes("host")) {
    return [403, "AccessDenied", "host must be a signed header"];
  }
  for (const h of Object.keys(req.headers)) {
    if (h.startsWith("x-amz-") && !names.includes(h)) {
      return [403, "AccessDenied", `There were headers present in the request which were not signed: ${h}`];
    }
  }
  const token = req.headers["x-amz-security-token"];
  if ((key.token || token) && token !== key.token) {
    return [403, "InvalidToken", "The provided token is malformed or otherwise invalid."];
  }
  const q = req.url.indexOf("?");
  const rawPath = q < 0 ? req.url : req.url.slice(0, q);
  const rawQuery = q < 0 ? "" : req.url.slice(q + 1);
  const canonicalHeaders = names.map((n) => {
    const v = req.headers[n];
    return `${n}:${v === undefined ? "" : String(v).trim().replace(/\s+/g, " ")}\n`;
  }).join("");
  const canonicalRequest = [
    req.method,
    uriEncode(pctDecode(rawPath), true),
    canonicalQuery(rawQuery),
    canonicalHeaders,
    signedHeaders,
    payloadHash,
  ].join("\n");
  const stringToSign = [
    "AWS4-HMAC-SHA256",
    amzDate,
    `${date}/${region}/s3/aws4_request`,
    crypto.createHash("sha256").update(canonicalRequest, "utf8").digest("hex"),
  ].join("\n");
  let k = hmac("AWS4" + key.secret, date);
  k = hmac(k, region);
  k = hmac(k, "s3");
  k = hmac(k, "aws4_request");
  const expected = hmac(k, stringToSign).toString("hex");
  if (!crypto.timingSafeEqual(Buffer.from(expected), Buffer.from(signature))) {
    return [403, "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided."];
  }
  return null;
}

// ---- the front --------------------------------------------------------

const requestLog = [];
const LOG_CAP = 200000;
let activeRequests = 0; // requests received and not yet answered in full
let ifMatchEnabled = true;
const startedAt = Date.now();
let rateMbs = opts.rateMbs; // each GET body at most this many MB/s; 0: no limit
let latencyMs = opts.latencyMs; // every request answered this many ms late; 0: none

function bucketAndKey(req) {
  const q = req.url.indexOf("?");
  const rawPath = (q < 0 ? req.url : req.url.slice(0, q)).replace(/^\/+/, "");
  const slash = rawPath.indexOf("/");
  const bucket = pctDecode(slash < 0 ? rawPath : rawPath.slice(0, slash)).toString("utf8");
  const key = slash < 0 ? "" : pctDecode(rawPath.slice(slash + 1)).toString("utf8");
  return [bucket, key];
}

function normalizeEtag(e) {
  return String(e).trim().replace(/^W\//, "").replace(/^"(.*)"$/, "$1");
}

function control(req, res) {
  const send = (obj) => {
    const body = JSON.stringify(obj);
    res.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
    res.end(body);
  };
  let data = "";
  req.on("data", (c) => { data += c; });
  req.on("end", () => {
    const what = req.url.split("?")[0].slice("/__control__/".length);
    if (what === "log" && req.method === "GET") return send(requestLog);
    if (what === "reset" && req.method === "POST") {
      requestLog.length = 0;
      return send({});
    }
    // a setting of N >= 0 given as {"<field>": N}; anything else is a 400
    const number = (field, set) => {
      let v;
      try {
        v = Number(JSON.parse(data || "{}")[field]);
      } catch (e) {
        v = NaN;
      }
      if (!(v >= 0)) {
        res.writeHead(400);
        return res.end();
      }
      set(v);
      return send({ [field]: v });
    };
    if (what === "rate" && req.method === "POST") return number("mbs", (v) => { rateMbs = v; });
    if (what === "latency" && req.method === "POST") return number("ms", (v) => { latencyMs = v; });
    if (what === "if_match" && req.method === "POST") {
      try {
        ifMatchEnabled = !!JSON.parse(data || "{}").enabled;
      } catch (e) {
        res.writeHead(400);
        return res.end();
      }
      return send({ enabled: ifMatchEnabled });
    }
    res.writeHead(404);
    res.end();
  });
}

// Paces res: each write goes out no sooner than the bytes before it allow
// at `rate` bytes per second (from the first write on). A write that must
// wait is held back and the writer told to wait for "drain" (a pipe pauses
// its source), so nothing piles up; end() waits for the held writes.
function pace(res, rate) {
  const write = res.write.bind(res);
  const end = res.end.bind(res);
  let start = 0;
  let sent = 0;
  let held = 0;
  let endArgs = null;
  res.write = function (chunk, enc, cb) {
    if (!start) start = Date.now();
    sent += typeof chunk === "string" ? Buffer.byteLength(chunk, enc) : chunk.length;
    const wait = start + (sent / rate) * 1000 - Date.now();
    if (wait <= 1 && held === 0) return write(chunk, enc, cb);
    held++;
    setTimeout(() => {
      held--;
      if (res.destroyed) return;
      const ok = write(chunk, enc, cb);
      if (held === 0 && endArgs) end(...endArgs);
      else if (ok) res.emit("drain");
    }, Math.max(wait, 0));
    return false;
  };
  res.end = function (...args) {
    if (held > 0) {
      endArgs = args;
      return res;
    }
    return end(...args);
  };
}

async function front(req, res, handler, store) {
  if (req.url.startsWith("/__control__/")) return control(req, res);
  const entry = {
    method: req.method,
    path: req.url,
    range: req.headers["range"] || null,
    ifMatch: req.headers["if-match"] || null,
    authorization: "authorization" in req.headers,
    signedHeaders: null,
    status: null,
    peer: req.socket.remotePort,
    active: ++activeRequests, // this one included
    at: Date.now() - startedAt, // ms since the server started
    ms: null,                   // ms until the answer was sent in full
  };
  const m = /SignedHeaders=([^,]+)/.exec(req.headers["authorization"] || "");
  if (m) entry.signedHeaders = m[1];
  if (requestLog.length < LOG_CAP) requestLog.push(entry);
  let counted = true;
  const done = () => { if (counted) { counted = false; activeRequests--; } };
  res.on("finish", () => {
    entry.status = res.statusCode;
    entry.ms = Date.now() - startedAt - entry.at;
    done();
  });
  res.on("close", done);

  if (latencyMs > 0) await new Promise((resolve) => setTimeout(resolve, latencyMs));
  if (rateMbs > 0 && req.method === "GET") pace(res, rateMbs * 1e6);
  const [bucket, key] = bucketAndKey(req);
  if (entry.authorization) {
    const err = verifySigV4(req);
    if (err) return s3Error(res, err[0], err[1], err[2], req.method);
  } else if (opts.private.has(bucket)) {
    return s3Error(res, 403, "AccessDenied", "Access Denied", req.method);
  }
  const ifMatch = req.headers["if-match"];
  if (ifMatchEnabled && ifMatch && key && (req.method === "GET" || req.method === "HEAD")) {
    let meta = null;
    try {
      meta = await store.getMetadata(bucket, key);
    } catch (e) {
      meta = null; // no such object: s3rver answers 404
    }
    if (meta && ifMatch.trim() !== "*" &&
        !ifMatch.split(",").map(normalizeEtag).includes(normalizeEtag(meta.etag))) {
      return s3Error(res, 412, "PreconditionFailed",
                     "At least one of the pre-conditions you specified did not hold", req.method);
    }
  }
  return handler(req, res);
}

let server = null;
let shuttingDown = false;
function shutdown(code, why) {
  if (shuttingDown) return;
  shuttingDown = true;
  if (why) process.stderr.write(`s3-server: ${why}\n`);
  const done = () => { removeTmp(); process.exit(code); };
  const force = setTimeout(done, 3000);
  force.unref();
  if (server) server.close(done);
  else done();
}

process.on("SIGTERM", () => shutdown(0));
process.on("SIGINT", () => shutdown(0));
process.on("SIGHUP", () => shutdown(0));
process.on("uncaughtException", (e) => shutdown(1, `fatal: ${e && e.stack ? e.stack : e}`));
process.on("unhandledRejection", (e) => shutdown(1, `fatal: ${e && e.stack ? e.stack : e}`));

if (opts.exitOnStdinClose) {
  process.stdin.on("data", () => {});
  process.stdin.on("end", () => shutdown(0));
  process.stdin.on("close", () => shutdown(0));
  process.stdin.on("error", () => shutdown(0));
  process.stdin.resume();
}

async function main() {
  const s3 = new S3rver({
    silent: true,
    directory: path.join(tmpRoot, "data"),
    vhostBuckets: false,
    configureBuckets: opts.buckets.map((name) => ({ name })),
  });
  fs.mkdirSync(path.join(tmpRoot, "data"));
  await s3.configureBuckets();
  const handler = s3.callback();
  server = http.createServer((req, res) => {
    front(req, res, handler, s3.store).catch((e) => {
      process.stderr.write(`s3-server: ${e && e.stack ? e.stack : e}\n`);
      if (!res.headersSent) s3Error(res, 500, "InternalError", "internal error", req.method);
      else res.destroy();
    });
  });
  // large objects and slow readers: no per-request time limit
  server.requestTimeout = 0;
  server.headersTimeout = 60000;
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, resolve);
  });
  process.stdout.write(`READY ${opts.host}:${opts.port}\n`);
}

main().catch((e) => shutdown(1, `cannot start: ${e && e.message ? e.message : e}`));
