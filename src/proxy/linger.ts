/**
 * Closing a client connection after a last message (a FATAL ErrorResponse ...) so that the client gets to
 * read it. Destroying a socket while the client is still sending leaves unread bytes in the kernel's
 * receive buffer, and the kernel then answers with RST instead of FIN: the client sees "connection reset"
 * and may lose the error it had not read yet (a client refused in the middle of sending a large message,
 * for instance). So: end our side, keep reading and discarding, and destroy once the client has closed
 * too, or after a short delay at the latest (a client that never closes must not keep its slot).
 */
import type { Socket } from 'node:net';

/** How long a refused client may take to close its side after our FATAL. */
export const LINGER_MS = 2000;

export function endAndLinger(socket: Socket, last?: Buffer, lingerMs = LINGER_MS): void {
  if (socket.destroyed) return;
  socket.on('error', () => {});
  if (!socket.writableEnded) {
    if (last) socket.end(last);
    else socket.end();
  }
  // Flowing without a consumer discards the input. With allowHalfOpen off (the default), the socket is
  // destroyed as soon as the client's FIN arrives.
  socket.resume();
  const timer = setTimeout(() => socket.destroy(), lingerMs);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}
