// One Socket.IO 4 node of the comparison benchmark, scaled out with the
// official Redis adapter: the same chat contract as the hubhost chat hub.
//   SendMessage(user, message) -> every client gets ReceiveMessage(user, message)
//   Echo(value, ack)           -> ack(value)
// PORT (0: any), REDIS_URL, PREFIX (the adapter's channel prefix) from the environment.
import { createServer } from "node:http";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";

const pub = createClient({ url: process.env.REDIS_URL ?? "redis://127.0.0.1:6379" });
const sub = pub.duplicate();
await Promise.all([pub.connect(), sub.connect()]);

const http = createServer();
const io = new Server(http, {
  adapter: createAdapter(pub, sub, { key: process.env.PREFIX ?? "socket.io" }),
  transports: ["websocket"],
  serveClient: false,
});
io.on("connection", (socket) => {
  socket.on("SendMessage", (user, message) => io.emit("ReceiveMessage", user, message));
  socket.on("Echo", (value, ack) => ack?.(value));
});
http.listen(Number(process.env.PORT ?? 0), "127.0.0.1", () => {
  console.log(`listening on http://127.0.0.1:${http.address().port}`);
});
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    io.close();
    Promise.allSettled([pub.quit(), sub.quit()]).then(() => process.exit(0));
  });
}
