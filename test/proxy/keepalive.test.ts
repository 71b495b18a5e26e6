/**
 * TCP keepalive on both legs of a session (limits.tcp_keepalive, 60 s by default), so that a client that
 * vanished without closing its connection does not hold a server backend forever. Read from the kernel's
 * own table of TCP sockets (/proc/net/tcp: timer 2 is the keepalive timer).
 */
import fs from 'node:fs';
import t from 'tap';
import pg from 'pg';
import { startPostgres } from '../helpers/postgres.js';
import { startStepgate } from '../helpers/stepgate.js';
import { waitFor } from '../helpers/wait.js';

/**
 * The kernel timer of the IPv4 TCP socket from localPort to remotePort: 0 none, 1 retransmit (data not yet
 * acknowledged), 2 keepalive.
 */
function tcpTimer(localPort: number, remotePort: number): number | null {
  const hexPort = (p: number): string => p.toString(16).toUpperCase().padStart(4, '0');
  for (const line of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 6) continue;
    if (f[1].endsWith(`:${hexPort(localPort)}`) && f[2].endsWith(`:${hexPort(remotePort)}`)) return parseInt(f[5].split(':')[0], 16);
  }
  return null;
}

const db = await startPostgres(t, { tcp: true });

for (const [label, configYaml, expected] of [
  ['by default', '', 2],
  ['limits.tcp_keepalive: 0s turns it off', 'limits:\n  tcp_keepalive: 0s\n', 0],
] as const) {
  t.test(label, async (t) => {
    const sg = await startStepgate(t, db, { configYaml });
    const client = new pg.Client({ ...sg.pgConfig(), application_name: 'keepalive-test' });
    await client.connect();
    t.teardown(() => client.end());
    await client.query('SELECT 1');
    const localPort = (client as unknown as { connection: { stream: { localPort: number } } }).connection.stream.localPort;
    const upstreamPort = (await db.query("SELECT client_port FROM pg_stat_activity WHERE application_name = 'keepalive-test'")).rows[0].client_port as number;
    // Once the last reply is acknowledged (the peer may delay its ACK), the socket shows its idle timer.
    const settled = (local: number, remote: number) => () => {
      const timer = tcpTimer(local, remote);
      return timer !== null && timer !== 1 ? { timer } : null;
    };
    t.equal((await waitFor('the client leg to go idle', settled(sg.port, localPort))).timer, expected, 'client leg (stepgate side)');
    t.equal((await waitFor('the server leg to go idle', settled(upstreamPort, db.port))).timer, expected, 'server leg (stepgate side)');
  });
}
