// Test harness: start real hubhost processes and connect official clients.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { createWriteStream, existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import path from "node:path";
import * as signalR from "@microsoft/signalr";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const target = process.env.CARGO_TARGET_DIR ?? path.join(root, "target");
export const binary = path.join(target, "debug", "hubhost");
export const guest = (name) => path.join(target, "wasm32-wasip2", "guest", `${name}.wasm`);
const cache = path.join(target, "hubhost-cache");

/**
 * Start `hubhost serve` on `listen` (port 0 by default) serving `demo/NAME`
 * for each of `hubs`; resolves once it listens. Compiled components are
 * cached, so only the first start of a large (Python, JS) hub compiles it.
 */
export async function startServer({ listen = "127.0.0.1:0", args = [], hubs = ["chat"] } = {}) {
  for (const file of [binary, ...hubs.map(guest)]) {
    if (!existsSync(file)) throw new Error(`${file} is missing: run the README test command (make test)`);
  }
  const hubArgs = hubs.flatMap((name) => ["--hub", `demo/${name}=${guest(name)}`]);
  // No drain window unless a test sets one: a stop moves the clients at once.
  const drain = args.includes("--drain-window-ms") ? [] : ["--drain-window-ms", "0"];
  const child = spawn(binary, ["serve", "--listen", listen, "--cache-dir", cache, ...drain, ...hubArgs, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn,hubhost=info", NO_COLOR: "1" },
  });
  let output = "";
  const address = await new Promise((resolve, reject) => {
    // A cold start compiles the Python and JS components: seconds each.
    const timer = setTimeout(() => reject(new Error(`hubhost did not start:\n${output}`)), 120_000);
    child.stdout.on("data", (chunk) => {
      output += chunk;
      const match = output.match(/listening on (http:\/\/[0-9.]+:\d+)/);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    child.on("exit", (code) => reject(new Error(`hubhost exited with ${code}:\n${output}`)));
  });
  // HUBHOST_TEST_LOGS=FILE keeps every node's log (for debugging a test).
  if (process.env.HUBHOST_TEST_LOGS) {
    const log = createWriteStream(process.env.HUBHOST_TEST_LOGS, { flags: "a" });
    log.write(output);
    child.stdout.pipe(log);
  } else child.stdout.resume();
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  return {
    url: address,
    port: Number(new URL(address).port),
    /** SIGTERM, then wait for a clean exit. */
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      return exited;
    },
    /** SIGKILL: the node dies at once, as in a crash. */
    async kill() {
      if (child.exitCode === null) child.kill("SIGKILL");
      return exited;
    },
  };
}

/** A started HubConnection that records every ReceiveMessage call. */
export async function connect(url, configure = (b) => b, options = {}) {
  const builder = configure(
    new signalR.HubConnectionBuilder().withUrl(url, options).configureLogging(signalR.LogLevel.Warning),
  );
  const connection = builder.build();
  const received = [];
  const waiters = [];
  connection.on("ReceiveMessage", (user, message) => {
    received.push([user, message]);
    for (const w of [...waiters]) w();
  });
  /** Resolves once a message satisfies `pred`; rejects after 10 s. */
  connection.waitFor = (pred, what = "message") =>
    new Promise((resolve, reject) => {
      const check = () => {
        const found = received.find(pred);
        if (found) {
          waiters.splice(waiters.indexOf(check), 1);
          clearTimeout(timer);
          resolve(found);
        }
      };
      const timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(check), 1);
        reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(received)}`));
      }, 10_000);
      waiters.push(check);
      check();
    });
  connection.received = received;
  await connection.start();
  return connection;
}

/** Resolves once `url` answers /readyz with 200 (backplane up, hubs loaded); 15 s at most. */
export async function waitReady(url) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const response = await fetch(`${url}/readyz`).catch(() => null);
    if (response?.status === 200) return;
    if (Date.now() > deadline) throw new Error(`${url} never became ready`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Rejects after `ms` with a message naming `what`. */
export function within(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Client-side log: Warning and above are printed (as the harness does) and
 * kept, so failures can name them; SIGNALR_LOG=Trace prints everything.
 */
export function recordingLogger(name) {
  const printLevel = signalR.LogLevel[process.env.SIGNALR_LOG ?? "Warning"] ?? signalR.LogLevel.Warning;
  const entries = [];
  return {
    entries,
    log(level, message) {
      if (level >= signalR.LogLevel.Warning) entries.push(`${signalR.LogLevel[level]}: ${message}`);
      if (level >= printLevel) console.error(`[${name}] ${signalR.LogLevel[level]}: ${message}`);
    },
  };
}

export { signalR };

/** An HS256 JWT for `sub` signed with `secret`, made by hand (header.payload.signature). */
export function jwt(sub, secret, ttlSeconds = 300) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + ttlSeconds })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/** A configuration file (in a new temporary directory): `operatorKey`, and tenant demo's clients signing in with HS256 JWTs of `secret`. */
export function jwtConfig(operatorKey, secret) {
  const file = path.join(mkdtempSync(path.join(tmpdir(), "hubhost-node-")), "hubhost.toml");
  const lines = ["[admin]", `operator_keys = ["${operatorKey}"]`, "[tenants.demo.auth]", 'mode = "jwt"', `hs256_secret = "${secret}"`];
  writeFileSync(file, lines.join("\n"));
  return file;
}
