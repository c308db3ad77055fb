// The official client against a tenant with JWT authentication, and a hub
// deployed through the admin API (with `hubhost deploy`) and replaced while
// the client stays connected.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { execFile } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { startServer, connect, binary, guest } from "./harness.mjs";

const SECRET = "acme-secret-0123456789abcdef0123456789";
const OPERATOR = "operator-key-0123456789";
// Base64 of 32 bytes: the node's key for sealing secrets.
const SECRETS_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/** An HS256 JWT, made by hand: header.payload.signature in base64url. */
function jwt(sub, ttlSeconds, secret = SECRET) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + ttlSeconds })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/** A node serving tenant acme (JWT clients) with `hubs`, each as acme/NAME; `extra` lines end the file. */
async function startAcme(hubs = ["chat"], extra = []) {
  const dir = mkdtempSync(path.join(tmpdir(), "hubhost-node-"));
  const config = path.join(dir, "hubhost.toml");
  writeFileSync(
    config,
    [
      "[admin]",
      `operator_keys = ["${OPERATOR}"]`,
      `secrets_key = "${SECRETS_KEY}"`,
      ...hubs.flatMap((hub) => ["[[hubs]]", 'tenant = "acme"', `hub = "${hub}"`, `path = "${guest(hub)}"`]),
      "[tenants.acme.auth]",
      'mode = "jwt"',
      `hs256_secret = "${SECRET}"`,
      ...extra,
    ].join("\n"),
  );
  return startServer({ hubs: [], args: ["--config", config] });
}

test("JWT: the token's sub is the user id, and bad tokens are refused", { timeout: 60_000 }, async () => {
  const server = await startAcme();
  const url = `${server.url}/acme/chat`;
  const clients = [];
  try {
    for (const options of [{}, { skipNegotiation: true, transport: 1 }]) {
      const ann = await connect(url, (b) => b, { ...options, accessTokenFactory: () => jwt("ann", 300) });
      clients.push(ann);
      const me = await ann.invoke("WhoAmI");
      assert.equal(me.userId, "ann");
      assert.match(me.connectionId, /^[A-Za-z0-9_-]{22}$/);
    }
    const bob = await connect(url, (b) => b, { accessTokenFactory: () => jwt("bob", 300) });
    clients.push(bob);
    await bob.invoke("SendToUser", "ann", "bob", "hello ann");
    for (const ann of clients.slice(0, 2)) {
      await ann.waitFor(([user, message]) => user === "bob" && message === "hello ann", "the user-addressed message");
    }
    assert.equal(bob.received.length, 0);
    for (const token of [jwt("ann", -120), jwt("ann", 300, "wrong-secret-0123456789abcdef01234567"), ""]) {
      await assert.rejects(connect(url, (b) => b, { accessTokenFactory: () => token }), /401|Unauthorized/);
    }
  } finally {
    await Promise.all(clients.map((c) => c.stop()));
    await server.stop();
  }
});

test("IsOnline follows a user's connections, in every language of the chat hub", { timeout: 120_000 }, async () => {
  const server = await startAcme(["chat", "chat-python", "chat-js"]);
  const clients = [];
  const open = async (url, user) => {
    const client = await connect(url, (b) => b, { accessTokenFactory: () => jwt(user, 300) });
    clients.push(client);
    return client;
  };
  try {
    for (const hub of ["chat", "chat-python", "chat-js"]) {
      const url = `${server.url}/acme/${hub}`;
      const bob = await open(url, "bob");
      assert.equal(await bob.invoke("IsOnline", "ann"), false, hub);
      const [first, second] = [await open(url, "ann"), await open(url, "ann")];
      assert.equal(await bob.invoke("IsOnline", "ann"), true, hub);
      await first.stop();
      assert.equal(await bob.invoke("IsOnline", "ann"), true, `${hub}: one connection left`);
      await second.stop();
      // The node forgets a connection once its close is handled: soon, not
      // necessarily before stop() resolves.
      const deadline = Date.now() + 5_000;
      while ((await bob.invoke("IsOnline", "ann")) && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      assert.equal(await bob.invoke("IsOnline", "ann"), false, hub);
      assert.equal(await bob.invoke("IsOnline", "bob"), true, hub);
    }
  } finally {
    await Promise.all(clients.map((c) => c.stop()));
    await server.stop();
  }
});

test("Config reads tenant variables and secrets, in every language of the chat hub", { timeout: 120_000 }, async () => {
  const server = await startAcme(["chat", "chat-python", "chat-js"]);
  const run = (...args) =>
    promisify(execFile)(binary, args, { env: { ...process.env, HUBHOST_SERVER: server.url, HUBHOST_ADMIN_KEY: OPERATOR } });
  const clients = [];
  try {
    await run("vars", "set", "acme", "MODEL", "small");
    await run("vars", "set", "acme", "API_KEY", "sk-node-test", "--secret");
    const { stdout } = await run("vars", "list", "acme");
    assert.equal(stdout, "API_KEY (secret)\nMODEL=small\n");
    for (const hub of ["chat", "chat-python", "chat-js"]) {
      const client = await connect(`${server.url}/acme/${hub}`, (b) => b, { accessTokenFactory: () => jwt("ann", 300) });
      clients.push(client);
      assert.equal(await client.invoke("Config", "MODEL"), "small", hub);
      assert.equal(await client.invoke("Config", "API_KEY"), "sk-node-test", hub);
      assert.equal(await client.invoke("Config", "MISSING"), null, hub);
    }
  } finally {
    await Promise.all(clients.map((c) => c.stop()));
    await server.stop();
  }
});

test("Fetch goes through the tenant's allow-list, in every language of the chat hub", { timeout: 120_000 }, async () => {
  const upstream = createServer((request, response) => response.end(request.url === "/ok" ? "hello" : "other"));
  await new Promise((resolve) => upstream.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${upstream.address().port}`;
  const server = await startAcme(["chat", "chat-python", "chat-js"], [
    "[tenants.acme.hub_limits]",
    `http_allow = ["${base}"]`,
    "http_allow_private = true",
  ]);
  const clients = [];
  try {
    for (const hub of ["chat", "chat-python", "chat-js"]) {
      const client = await connect(`${server.url}/acme/${hub}`, (b) => b, { accessTokenFactory: () => jwt("ann", 300) });
      clients.push(client);
      assert.deepEqual(await client.invoke("Fetch", `${base}/ok`), { status: 200, bytes: 5 }, hub);
      await assert.rejects(
        client.invoke("Fetch", `http://localhost:${upstream.address().port}/ok`),
        (e) => e.message.includes("hub_limits.http_allow"),
        hub,
      );
    }
  } finally {
    await Promise.all(clients.map((c) => c.stop()));
    await server.stop();
    upstream.close();
  }
});

test("hubhost deploy replaces a hub while official clients stay connected", { timeout: 60_000 }, async () => {
  const server = await startAcme();
  const run = (...args) =>
    promisify(execFile)(binary, args, { env: { ...process.env, HUBHOST_SERVER: server.url, HUBHOST_ADMIN_KEY: OPERATOR } });
  const clients = [];
  try {
    await run("deploy", "acme/live", guest("versioned_v1"));
    const url = `${server.url}/acme/live`;
    for (let i = 0; i < 3; i++) {
      const client = await connect(url, (b) => b, { accessTokenFactory: () => jwt(`user-${i}`, 300) });
      await client.invoke("JoinGroup", "g");
      clients.push(client);
    }
    let closed = 0;
    for (const client of clients) client.onclose(() => closed++);
    assert.equal(await clients[0].invoke("Version"), "v1");
    const { stdout } = await run("deploy", "acme/live", guest("versioned_v2"));
    assert.match(stdout, /acme\/live version 2 .* deployed and active/);
    for (const client of clients) assert.equal(await client.invoke("Version"), "v2");
    // Group memberships survived the swap.
    const ticks = clients.map((c) => new Promise((resolve) => c.on("Tick", (...args) => resolve(args))));
    assert.equal(await clients[1].invoke("Tick", "g", "node", 1), "v2");
    for (const tick of await Promise.all(ticks)) assert.deepEqual(tick, ["v2", "node", 1]);
    assert.equal(clients.filter((c) => c.state !== "Connected").length, 0);
    assert.equal(closed, 0, "no client was disconnected");
  } finally {
    await Promise.all(clients.map((c) => c.stop()));
    await server.stop();
  }
});
