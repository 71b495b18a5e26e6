/**
 * The floor for any Node.js proxy: a bare socket relay that does nothing but `client.pipe(server)` and
 * `server.pipe(client)`, with no parsing, no classification, no audit trail. `npm run bench` runs it as
 * a reference beside stepgate, so the report shows how much of stepgate's cost is Node's own socket I/O.
 *
 *   node dist/bench/node-pipe.js <listen port> <server's Unix socket path>
 */
import net from 'node:net';

const [port, upstreamPath] = process.argv.slice(2);
if (!port || !upstreamPath) {
  process.stderr.write('usage: node-pipe <listen port> <upstream Unix socket path>\n');
  process.exit(2);
}

const server = net.createServer({ noDelay: true }, (client) => {
  const upstream = net.connect({ path: upstreamPath });
  client.pipe(upstream);
  upstream.pipe(client);
  client.on('error', () => upstream.destroy());
  upstream.on('error', () => client.destroy());
  client.on('close', () => upstream.destroy());
  upstream.on('close', () => client.destroy());
});
server.listen(Number(port), '127.0.0.1');
process.on('SIGTERM', () => {
  server.close();
  process.exit(0);
});
