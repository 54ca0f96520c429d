/**
 * The host side of the network benchmark, run inside its namespace: an
 * HTTP server on HOST:PORT that serves `GET /blob` (BYTES bytes) and
 * swallows `POST /sink`, printing one JSON line per transfer with its
 * direction, bytes and milliseconds (first byte to last, as the host sees
 * them). Prints "listening" once it is; stops when stdin closes.
 *
 * Usage: deno run -A bench/net_peer.ts HOST PORT BYTES
 *
 * @module
 */
const [hostname, port, size] = Deno.args;
const bytes = Number(size);
const chunk = new Uint8Array(1 << 16).fill(0x5a);

function blob(): ReadableStream<Uint8Array> {
  let sent = 0;
  const t0 = performance.now();
  return new ReadableStream({
    pull(c) {
      if (sent >= bytes) {
        console.log(
          JSON.stringify({ dir: "host-to-guest", bytes: sent, ms: performance.now() - t0 }),
        );
        c.close();
        return;
      }
      const n = Math.min(chunk.length, bytes - sent);
      c.enqueue(chunk.subarray(0, n));
      sent += n;
    },
  });
}

async function sink(req: Request): Promise<Response> {
  let got = 0, t0 = 0;
  for await (const part of req.body ?? new ReadableStream()) {
    if (got === 0) t0 = performance.now();
    got += part.length;
  }
  console.log(JSON.stringify({ dir: "guest-to-host", bytes: got, ms: performance.now() - t0 }));
  return new Response("ok\n");
}

const server = Deno.serve(
  { hostname, port: Number(port), onListen: () => console.log("listening") },
  (req) =>
    new URL(req.url).pathname === "/sink" ? sink(req) : new Response(blob(), {
      headers: { "content-length": String(bytes) },
    }),
);
for await (const _ of Deno.stdin.readable) { /* until the benchmark closes us */ }
await server.shutdown();
