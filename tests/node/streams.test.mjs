// Streams both ways and client results, through the official client, with
// the chat hub in Rust, Python and JavaScript; JSON and MessagePack over
// WebSockets and long polling; and client results across two nodes on Redis,
// one of them killed while a result is awaited.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import { startServer, connect, signalR, waitReady, within } from "./harness.mjs";

const HUBS = ["chat", "chat-python", "chat-js"];
const { WebSockets, LongPolling } = signalR.HttpTransportType;
const VARIANTS = [
  { name: "WebSockets×JSON", transport: WebSockets, msgpack: false },
  { name: "WebSockets×MessagePack", transport: WebSockets, msgpack: true },
  { name: "LongPolling×JSON", transport: LongPolling, msgpack: false },
  { name: "LongPolling×MessagePack", transport: LongPolling, msgpack: true },
];
// A short call deadline, so that a client that never answers fails soon;
// long enough for the JavaScript hub's Counter(10000) (1.4–1.8 s alone on
// the 2-core machine) while other test files run beside it.
const CALL_TIMEOUT_MS = 5000;
const redis = process.env.HUBHOST_TEST_REDIS ?? "redis://127.0.0.1:6379";

function config(callTimeoutMs = CALL_TIMEOUT_MS, extra = "") {
  const file = path.join(mkdtempSync(path.join(tmpdir(), "hubhost-streams-")), "hubhost.toml");
  writeFileSync(file, `${extra}\n[hub_limits]\ncall_timeout_ms = ${callTimeoutMs}\n`);
  return file;
}

let server;
const open = [];

before(async () => {
  server = await startServer({ hubs: HUBS, args: ["--config", config()] });
});

after(async () => {
  await Promise.allSettled(open.map((c) => c.stop()));
  assert.equal((await server.stop()).code, 0, "hubhost exits cleanly on SIGTERM");
});

async function client(url, variant = VARIANTS[0]) {
  const c = await connect(
    url,
    (b) => (variant.msgpack ? b.withHubProtocol(new MessagePackHubProtocol()) : b),
    { transport: variant.transport },
  );
  open.push(c);
  return c;
}

/** Every item of `stream`, and how it ended. */
function collect(stream) {
  const items = [];
  return new Promise((resolve, reject) => {
    stream.subscribe({
      next: (item) => items.push(item),
      complete: () => resolve(items),
      error: (error) => reject(Object.assign(error, { items })),
    });
  });
}

for (const hub of HUBS) {
  describe(`${hub} hub`, () => {
    const url = () => `${server.url}/demo/${hub}`;

    for (const variant of VARIANTS) {
      test(`${variant.name}: Counter streams 10,000 items in order`, async () => {
        const c = await client(url(), variant);
        const items = await within(collect(c.stream("Counter", 10_000)), 30_000, "Counter(10000)");
        assert.equal(items.length, 10_000);
        assert.ok(items.every((item, i) => item === i), "items 0..9999 in order");
      });

      test(`${variant.name}: UploadSum reads a stream while other calls go on`, async () => {
        const c = await client(url(), variant);
        const subject = new signalR.Subject();
        const sum = c.invoke("UploadSum", subject);
        for (let i = 1; i <= 100; i++) {
          subject.next(i);
          // A plain call between the items is answered while the upload
          // is still open.
          if (i % 25 === 0) assert.equal(await c.invoke("Echo", `between ${i}`), `between ${i}`);
        }
        subject.complete();
        assert.equal(await within(sum, 10_000, "UploadSum"), 5050);
      });

      test(`${variant.name}: AskName gets another client's result`, async () => {
        const [asker, named] = [await client(url(), variant), await client(url(), variant)];
        named.on("GetName", () => `name of ${named.connectionId}`);
        assert.equal(await asker.invoke("AskName", named.connectionId), `name of ${named.connectionId}`);
      });
    }

    test("Ticks: a stream that outlives its call, sent to by timers through its handle", async () => {
      const c = await client(url());
      assert.deepEqual(await within(collect(c.stream("Ticks", 5, 20)), 10_000, "Ticks(5, 20)"), [0, 1, 2, 3, 4]);
      assert.deepEqual(await collect(c.stream("Ticks", 0, 20)), []);
      // Tick is for timers only.
      await assert.rejects(c.invoke("Tick", "x:y", 0, 1, 20), /unauthorized|timers only/);
    });

    test("a cancelled stream stops; the connection carries on", async () => {
      const c = await client(url());
      let received = 0;
      let afterCancel = 0;
      let cancelled = false;
      const halfway = new Promise((resolve) => {
        const subscription = c.stream("Counter", 1_000_000_000).subscribe({
          next: () => {
            received++;
            if (cancelled) afterCancel++;
            if (received === 1000 && !cancelled) {
              cancelled = true;
              subscription.dispose();
              resolve();
            }
          },
          complete: () => {},
          error: () => {},
        });
      });
      await within(halfway, 10_000, "1000 items");
      // Once an Echo sent after the cancel is answered, the items in flight
      // have arrived: they stop well short of the stream's end.
      assert.equal(await c.invoke("Echo", "still here"), "still here");
      assert.ok(received < 1_000_000_000, `stopped after ${received} items`);
      const settled = afterCancel;
      assert.equal(await c.invoke("Echo", "again"), "again");
      assert.equal(afterCancel, settled, "no item arrives after the cancel has settled");
      // The next stream on the same connection works.
      assert.deepEqual(await collect(c.stream("Counter", 3)), [0, 1, 2]);
    });

    test("an upload's item over the message size limit closes the connection with the reason", async () => {
      const c = await client(url());
      const closed = new Promise((resolve) => c.onclose(resolve));
      const subject = new signalR.Subject();
      const sum = c.invoke("UploadSum", subject).catch((e) => e);
      subject.next("x".repeat(40 * 1024));
      const error = await within(closed, 10_000, "the close");
      assert.match(String(error), /exceeds the maximum message size of 32768 bytes/);
      assert.ok((await sum) instanceof Error);
    });

    test("an upload the client ends with an error fails the call with it", async () => {
      const c = await client(url());
      const subject = new signalR.Subject();
      const sum = c.invoke("UploadSum", subject);
      subject.next(1);
      subject.error(new Error("sensor unplugged"));
      await assert.rejects(sum, /sensor unplugged/);
      assert.equal(await c.invoke("Echo", 1), 1);
    });

    test("client results: a handler that throws, none at all, one that never answers, one that leaves", async () => {
      const asker = await client(url());
      const thrower = await client(url());
      thrower.on("GetName", () => {
        throw new Error("no name today");
      });
      await assert.rejects(asker.invoke("AskName", thrower.connectionId), /no name today/);

      const silent = await client(url());
      await assert.rejects(asker.invoke("AskName", silent.connectionId), /Client didn't provide a result/);

      const stuck = await client(url());
      stuck.on("GetName", () => new Promise(() => {}));
      const started = Date.now();
      const waiting = asker.invoke("AskName", stuck.connectionId);
      // Meanwhile other connections' calls are answered at once.
      const other = await client(url());
      assert.equal(await within(other.invoke("Echo", "not held"), 1000, "Echo while a result is awaited"), "not held");
      assert.ok(Date.now() - started < CALL_TIMEOUT_MS, "answered before the awaited call's deadline");
      await assert.rejects(waiting, /did not answer within|time limit/);
      assert.ok(Date.now() - started < CALL_TIMEOUT_MS + 2000, "fails at the call's deadline");

      const leaver = await client(url());
      leaver.on("GetName", () => {
        setTimeout(() => leaver.stop(), 50);
        return new Promise(() => {});
      });
      await assert.rejects(asker.invoke("AskName", leaver.connectionId), /Connection disconnected/);

      await assert.rejects(asker.invoke("AskName", "no-such-connection"), /Connection disconnected/);
      // The asker was never held up for good.
      assert.equal(await asker.invoke("Echo", "fine"), "fine");
    });

    test("a method cannot wait for its own caller's result, and says so", async () => {
      const c = await client(url());
      c.on("GetName", () => "myself");
      await assert.rejects(c.invoke("AskName", c.connectionId), /cannot wait for a result from its own caller/);
    });
  });
}

describe("client results across nodes", () => {
  const prefix = `node-streams-${process.pid}-${Date.now()}`;
  const nodes = [];

  before(async () => {
    for (let i = 0; i < 2; i++) {
      // A long call deadline and quick heartbeats: a dead node's results
      // must fail when the cluster counts it gone, not at the deadline.
      const settings = config(30_000, "[backplane]\nheartbeat_interval_ms = 500");
      const node = await startServer({ args: ["--config", settings, "--redis", redis, "--cluster-prefix", prefix] });
      await waitReady(node.url);
      nodes.push(node);
    }
  });

  after(async () => {
    for (const node of nodes) await node.stop();
  });

  test("a result from a connection on the other node", async () => {
    const asker = await client(`${nodes[0].url}/demo/chat`);
    const named = await client(`${nodes[1].url}/demo/chat`);
    named.on("GetName", () => "across");
    assert.equal(await asker.invoke("AskName", named.connectionId), "across");
    const thrower = await client(`${nodes[1].url}/demo/chat`);
    thrower.on("GetName", () => {
      throw new Error("remote refusal");
    });
    await assert.rejects(asker.invoke("AskName", thrower.connectionId), /remote refusal/);
  });

  test("a stream's items pushed by timers firing on either node arrive in order", async () => {
    const c = await client(`${nodes[0].url}/demo/chat`);
    const items = await within(collect(c.stream("Ticks", 40, 15)), 20_000, "Ticks(40, 15)");
    assert.deepEqual(items, [...Array(40).keys()]);
  });

  test("the other node killed while a result is awaited fails the call", async () => {
    const asker = await client(`${nodes[0].url}/demo/chat`);
    const victim = await client(`${nodes[1].url}/demo/chat`);
    let asked;
    const wasAsked = new Promise((resolve) => (asked = resolve));
    victim.on("GetName", () => {
      asked();
      return new Promise(() => {});
    });
    const answer = asker.invoke("AskName", victim.connectionId);
    await within(wasAsked, 5000, "the question reaching the victim");
    await nodes[1].kill();
    const killed = Date.now();
    await assert.rejects(answer, /Connection disconnected/);
    const took = Date.now() - killed;
    assert.ok(took < 10_000, `failed ${took} ms after the kill, well before the 30 s deadline`);
    assert.equal(await asker.invoke("Echo", "alive"), "alive");
  });
});
