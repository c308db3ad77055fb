// A round-robin reverse proxy for the tests that put nodes behind a load
// balancer with no affinity (roundrobin, drain).
import http from "node:http";
import net from "node:net";

const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"]);
function endToEnd(headers) {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !HOP_BY_HOP.has(name)));
}

/**
 * A round-robin reverse proxy in front of `backends` (base URLs): request n
 * goes to backend n mod N, whatever connection it belongs to. Bodies stream
 * both ways (SSE is not buffered), there is no timeout (long polls last 90 s),
 * and WebSocket upgrades are piped as raw sockets. `log` has one entry per
 * request: { node, method, path, id, kind, status, token? }.
 *
 * With `checkReady`, it also asks each backend's /readyz every 100 ms, as a
 * load balancer's health check would, and sends nothing to a backend that is
 * not ready (draining, or gone) while another one is.
 */
export async function startProxy(backends, { checkReady = false } = {}) {
  let next = 0;
  const log = [];
  const agent = new http.Agent({ keepAlive: true });
  const sockets = new Set();
  const ready = backends.map(() => true);
  const checks = checkReady
    ? setInterval(() => {
        backends.forEach((url, i) => {
          fetch(`${url}/readyz`)
            .then((r) => (ready[i] = r.status === 200))
            .catch(() => (ready[i] = false));
        });
      }, 100)
    : null;
  const pick = () => {
    for (let tries = 0; tries < backends.length; tries++) {
      const node = next++ % backends.length;
      if (ready[node]) return node;
    }
    return next++ % backends.length;
  };

  const entryFor = (req, kind) => {
    const url = new URL(req.url, "http://proxy");
    const node = pick();
    const entry = { node, method: req.method, path: url.pathname, id: url.searchParams.get("id"), kind, status: null };
    log.push(entry);
    return entry;
  };
  const kindOf = (req) => {
    const url = new URL(req.url, "http://proxy");
    if (url.pathname.endsWith("/negotiate")) return "negotiate";
    if (req.method === "GET") return /text\/event-stream/.test(req.headers.accept ?? "") ? "sse" : "poll";
    if (req.method === "POST") return "send";
    if (req.method === "DELETE") return "delete";
    return req.method;
  };

  const server = http.createServer({ requestTimeout: 0 }, (req, res) => {
    const entry = entryFor(req, kindOf(req));
    const target = new URL(backends[entry.node]);
    const upstream = http.request(
      { hostname: target.hostname, port: target.port, method: req.method, path: req.url, headers: endToEnd(req.headers), agent },
      (response) => {
        entry.status = response.statusCode;
        res.writeHead(response.statusCode, response.statusMessage, endToEnd(response.headers));
        res.flushHeaders();
        if (entry.kind === "negotiate") {
          const chunks = [];
          response.on("data", (chunk) => chunks.push(chunk));
          response.on("end", () => {
            try {
              entry.token = JSON.parse(Buffer.concat(chunks).toString("utf8")).connectionToken;
            } catch {
              entry.token = null;
            }
          });
        }
        response.on("error", () => res.destroy());
        response.pipe(res);
      },
    );
    upstream.on("error", (e) => {
      if (entry.status === null) entry.status = `proxy error: ${e.message}`;
      if (!res.headersSent) res.writeHead(502).end(String(e));
      else res.destroy();
    });
    // The client went away (an SSE stream dropped, a poll aborted): so does the upstream request.
    res.on("close", () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  });

  server.on("upgrade", (req, socket, head) => {
    const entry = entryFor(req, "upgrade");
    const target = new URL(backends[entry.node]);
    const backend = net.connect(Number(target.port), target.hostname);
    sockets.add(socket);
    sockets.add(backend);
    const close = () => {
      socket.destroy();
      backend.destroy();
      sockets.delete(socket);
      sockets.delete(backend);
    };
    socket.on("error", close);
    socket.on("close", close);
    backend.on("error", (e) => {
      if (entry.status === null) entry.status = `proxy error: ${e.message}`;
      close();
    });
    backend.on("close", close);
    backend.on("connect", () => {
      let raw = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) raw += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      backend.write(`${raw}\r\n`);
      if (head?.length) backend.write(head);
      backend.once("data", (chunk) => {
        entry.status = Number(chunk.toString("latin1").split(" ")[1]);
      });
      backend.pipe(socket);
      socket.pipe(backend);
    });
  });

  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    log,
    /** Cut every WebSocket passing through now (both TCP connections), as a network blip would. */
    cutWebSockets() {
      const cut = sockets.size / 2;
      for (const s of sockets) s.destroy();
      return cut;
    },
    /** Requests per node, by kind. */
    counts() {
      const counts = backends.map(() => ({}));
      for (const e of log) counts[e.node][e.kind] = (counts[e.node][e.kind] ?? 0) + 1;
      return counts;
    },
    async close() {
      clearInterval(checks);
      for (const s of sockets) s.destroy();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      agent.destroy();
    },
  };
}
