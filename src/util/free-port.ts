import net from 'node:net';

/**
 * A TCP port on 127.0.0.1 that is free right now, for servers that cannot listen on port 0 and report
 * what they got (PostgreSQL, pgbouncer). Another process could take it before them; callers that start
 * such a server on it report that clearly.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
