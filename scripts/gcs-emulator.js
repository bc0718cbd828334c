#!/usr/bin/env node
// A local Google Cloud Storage stand-in for the zipperfs integration tests and
// benchmarks: the Cloud Storage emulator of the npm package firebase-tools,
// started directly from Node (no firebase CLI, no Java), offline.
//
//   node scripts/gcs-emulator.js --port N [--host 127.0.0.1]
//        [--project demo-zipperfs] [--exit-on-stdin-close]
//
// Prints exactly one line "READY HOST:PORT" to stdout once the port accepts
// connections. Exits cleanly on SIGTERM/SIGINT (and on stdin EOF with
// --exit-on-stdin-close). Object bytes live in a private temp directory that
// is removed on exit; metadata lives in memory. Security rules are replaced
// by an allow-all stub. Install the package first:
//   npm ci --prefix scripts/test-servers --no-audit --no-fund
// See scripts/GCS-EMULATOR.md for the API quirks.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");

function usage(msg) {
  if (msg) process.stderr.write(`gcs-emulator: ${msg}\n`);
  process.stderr.write(
    "usage: node gcs-emulator.js --port N [--host 127.0.0.1] " +
      "[--project demo-zipperfs] [--exit-on-stdin-close]\n");
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { host: "127.0.0.1", port: null, project: "demo-zipperfs",
                 exitOnStdinClose: false };
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
      case "--project": opts.project = next(); break;
      case "--exit-on-stdin-close": opts.exitOnStdinClose = true; break;
      case "-h": case "--help": usage(); break;
      default: usage(`unknown argument ${a}`);
    }
  }
  if (opts.port === null) usage("--port is required");
  if (!/^\d+$/.test(String(opts.port))) usage("--port must be a number");
  opts.port = Number(opts.port);
  // Port 0 is not supported: the emulator treats 0 as "use its default 9199".
  if (opts.port < 1 || opts.port > 65535) usage("--port must be 1..65535");
  // A project id not starting with "demo-" makes firebase-tools try to reach
  // the Firebase API (e.g. on GET /b), which is not possible offline.
  if (!opts.project.startsWith("demo-")) usage("--project must start with demo-");
  return opts;
}

const opts = parseArgs(process.argv.slice(2));

// Everything firebase-tools may write (blob files under os.tmpdir(),
// configstore under $HOME / $XDG_CONFIG_HOME) goes into one private temp dir.
const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "zipperfs-gcs-emu-"));
let tmpRemoved = false;
function removeTmp() {
  if (tmpRemoved) return;
  tmpRemoved = true;
  try {
    fs.rmSync(tmpRoot, { recursive: true, force: true });
  } catch (e) {
    process.stderr.write(`gcs-emulator: cannot remove ${tmpRoot}: ${e.message}\n`);
  }
}
process.on("exit", removeTmp);

for (const d of ["tmp", "home", "config", "cache"]) {
  fs.mkdirSync(path.join(tmpRoot, d));
}
process.env.TMPDIR = path.join(tmpRoot, "tmp");
process.env.HOME = path.join(tmpRoot, "home");
process.env.XDG_CONFIG_HOME = path.join(tmpRoot, "config");
process.env.XDG_CACHE_HOME = path.join(tmpRoot, "cache");
process.env.FIREBASE_CLI_DISABLE_UPDATE_CHECK = "true";
process.env.NO_UPDATE_NOTIFIER = "1";
delete process.env.DEBUG; // would turn on firebase-tools console logging
delete process.env.IS_FIREBASE_CLI;

function fbt(sub) {
  const base = path.join(__dirname, "test-servers");
  let resolved;
  try {
    resolved = require.resolve(`firebase-tools/${sub}`, { paths: [base] });
  } catch (e) {
    process.stderr.write(
      `gcs-emulator: cannot find firebase-tools/${sub} under ${base}/node_modules;\n` +
        "  run: npm ci --prefix scripts/test-servers --no-audit --no-fund\n");
    removeTmp();
    process.exit(1);
  }
  return require(resolved);
}

const { StorageEmulator } = fbt("lib/emulator/storage");
const { EmulatorRegistry } = fbt("lib/emulator/registry");
const { StorageRulesIssues } = fbt("lib/emulator/storage/rules/runtime");
const fbUtils = fbt("lib/utils");

// StorageEmulator.start() calls app.listen() and hands the server only to
// utils.createDestroyer(); wrap that to get hold of the http.Server so that
// listen errors (EADDRINUSE) are caught instead of another process's port
// being mistaken for ours.
let httpServer = null;
let resolveListening, rejectListening;
const listening = new Promise((resolve, reject) => {
  resolveListening = resolve;
  rejectListening = reject;
});
const origCreateDestroyer = fbUtils.createDestroyer;
fbUtils.createDestroyer = function (server) {
  if (!httpServer) {
    httpServer = server;
    if (server.listening) resolveListening();
    server.once("listening", resolveListening);
    server.once("error", rejectListening);
  }
  return origCreateDestroyer.apply(this, arguments);
};

let shuttingDown = false;
async function shutdown(code, why) {
  if (shuttingDown) return;
  shuttingDown = true;
  if (why) process.stderr.write(`gcs-emulator: ${why}\n`);
  const force = setTimeout(() => { removeTmp(); process.exit(code); }, 5000);
  force.unref();
  try {
    await EmulatorRegistry.stopAll();
  } catch (e) {
    process.stderr.write(`gcs-emulator: stop failed: ${e && e.message}\n`);
  }
  removeTmp();
  process.exit(code);
}

process.on("SIGTERM", () => shutdown(0));
process.on("SIGINT", () => shutdown(0));
process.on("SIGHUP", () => shutdown(0));
process.on("uncaughtException", (e) => {
  shutdown(1, `fatal: ${e && e.stack ? e.stack : e}`);
});
process.on("unhandledRejection", (e) => {
  shutdown(1, `fatal: ${e && e.stack ? e.stack : e}`);
});

if (opts.exitOnStdinClose) {
  process.stdin.on("data", () => {});
  process.stdin.on("end", () => shutdown(0));
  process.stdin.on("close", () => shutdown(0));
  process.stdin.on("error", () => shutdown(0));
  process.stdin.resume();
}

async function main() {
  const emu = new StorageEmulator({
    projectId: opts.project,
    host: opts.host,
    port: opts.port,
    // Never read: the rules manager below replaces the one built from this.
    rules: { name: path.join(tmpRoot, "storage.rules"), content: "" },
    auto_download: false,
  });

  // The real rules runtime is a Java process (downloaded jar); stub it out.
  // The GCS JSON API (/storage/v1, /upload/storage/v1, /download/...) uses
  // an admin-only layer that never consults rules; the Firebase /v0 API does
  // and gets an allow-all ruleset here.
  const allowAll = {
    verify: async () => ({ permitted: true, issues: new StorageRulesIssues() }),
  };
  emu._rulesRuntime = { alive: true, start: async () => {}, stop: async () => {} };
  emu._rulesManager = {
    start: async () => new StorageRulesIssues(),
    stop: async () => {},
    getRuleset: () => allowAll,
  };
  emu.replaceRules = async () => new StorageRulesIssues();

  // Every read (and the hash at upload finalize) is one fs.readSync of the
  // whole object, which throws for lengths >= 2 GiB and kills the process
  // from inside an async express handler. Refuse such uploads up front with
  // HTTP 400 (UploadNotActiveError) instead.
  const { UploadNotActiveError } = fbt("lib/emulator/storage/upload");
  const MAX_OBJECT = 2 ** 31 - 1;
  const us = emu.uploadService;
  const origContinue = us.continueResumableUpload;
  us.continueResumableUpload = function (uploadId, dataRaw) {
    const up = this.getResumableUpload(uploadId);
    if (up.size + dataRaw.byteLength > MAX_OBJECT) {
      try { this.cancelResumableUpload(uploadId); } catch (e) { /* ignore */ }
      try { this._persistence.deleteFile(up.path, true); } catch (e) { /* ignore */ }
      process.stderr.write(
        `gcs-emulator: refusing upload of ${up.objectId}: objects over ${MAX_OBJECT} bytes are not supported\n`);
      throw new UploadNotActiveError();
    }
    return origContinue.apply(this, arguments);
  };

  // Fail fast on listen errors (EADDRINUSE, EADDRNOTAVAIL, ...): the
  // registry alone would only wait until *something* accepts on the port.
  await Promise.all([EmulatorRegistry.start(emu), listening]);
  // Large chunks and slow clients: no per-request time limit.
  httpServer.requestTimeout = 0;
  httpServer.headersTimeout = 60000;

  // Same 2 GiB limit for one-shot uploads: a media upload sent without a
  // Content-Type header bypasses the emulator's 130 MB body limit. Requests
  // with a larger Content-Length get 413 before express sees them.
  const appHandlers = httpServer.listeners("request");
  httpServer.removeAllListeners("request");
  httpServer.on("request", (req, res) => {
    const len = Number(req.headers["content-length"] || 0);
    if (len > MAX_OBJECT) {
      const message = `request body of ${len} bytes: objects over ${MAX_OBJECT} bytes are not supported`;
      res.writeHead(413, { "Content-Type": "application/json", Connection: "close" });
      res.end(JSON.stringify({ error: { code: 413, message } }), () => req.socket.destroy());
      return;
    }
    for (const h of appHandlers) h.call(httpServer, req, res);
  });

  process.stdout.write(`READY ${opts.host}:${opts.port}\n`);
}

main().catch((e) => shutdown(1, `cannot start: ${e && e.message ? e.message : e}`));
