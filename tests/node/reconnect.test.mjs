// withAutomaticReconnect: a server restart closes clients with
// allowReconnect, and they come back to the new process on their own.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, connect } from "./harness.mjs";

test("withAutomaticReconnect reconnects after the server restarts", { timeout: 60_000 }, async () => {
  let server = await startServer();
  const hubUrl = `${server.url}/demo/chat`;
  const c = await connect(hubUrl, (b) => b.withAutomaticReconnect([0, 100, 200, 400, 800, 1000, 1000, 1000, 1000, 1000]));
  const firstId = c.connectionId;
  const reconnecting = new Promise((resolve) => c.onreconnecting(resolve));
  const reconnected = new Promise((resolve) => c.onreconnected(resolve));

  const exit = await server.stop();
  assert.equal(exit.code, 0);
  await reconnecting;
  server = await startServer({ listen: `127.0.0.1:${new URL(hubUrl).port}` });
  try {
    const newId = await reconnected;
    assert.notEqual(newId, firstId, "a full reconnect gets a new connection id");
    assert.equal(await c.invoke("Echo", "back"), "back");
  } finally {
    await c.stop();
    await server.stop();
  }
});
