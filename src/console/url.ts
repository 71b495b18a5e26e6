/**
 * The console's public URL: what people open, what WebAuthn binds passkeys to (its host is the RP ID) and
 * the only Origin the console's API and WebSocket accept.
 *
 * `console_url` in the config wins (a reverse proxy, a DNS name). Otherwise it is derived from where the
 * console listens: loopback becomes `localhost` (an IP address cannot be a WebAuthn RP ID, and
 * http://localhost is a secure context), a wildcard address becomes this machine's host name, and the
 * scheme is https when stepgate has a TLS certificate.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseDocument } from 'yaml';
import { DEFAULTS, isLoopback, parseHostPort } from '../config.js';

export interface ConsoleUrlInput {
  host: string;
  port: number;
  tls: boolean;
  consoleUrl: string | null;
}

export function deriveConsoleUrl(input: ConsoleUrlInput): string {
  if (input.consoleUrl) return input.consoleUrl.replace(/\/+$/, '');
  const scheme = input.tls ? 'https' : 'http';
  let host = input.host;
  if (isLoopback(host)) host = 'localhost';
  else if (host === '0.0.0.0' || host === '::' || host === '') host = os.hostname();
  if (host.includes(':')) host = `[${host}]`;
  const defaultPort = input.tls ? 443 : 80;
  return `${scheme}://${host}${input.port === defaultPort ? '' : `:${input.port}`}`;
}

/** Origin (scheme://host[:port]) and WebAuthn RP ID (host name) of a console URL. */
export function consoleIdentity(url: string): { origin: string; rpId: string; secure: boolean } {
  const u = new URL(url);
  return { origin: u.origin, rpId: u.hostname.replace(/^\[|\]$/g, ''), secure: u.protocol === 'https:' };
}

/** True when WebAuthn can work at this URL (a domain name, and https unless it is localhost). */
export function webauthnProblem(url: string): string | null {
  const { rpId, secure } = consoleIdentity(url);
  if (/^[0-9.]+$/.test(rpId) || rpId.includes(':')) {
    return `the console URL ${url} uses an IP address; passkeys need a host name (set console_url: https://NAME:PORT in the config)`;
  }
  if (!secure && rpId !== 'localhost' && !rpId.endsWith('.localhost')) {
    return `the console URL ${url} is plain http on a host other than localhost; browsers only allow passkeys over https (configure tls or console_url)`;
  }
  return null;
}

/**
 * The console URL for commands that do not start the server (`stepgate users add`): --console-url, else
 * the config file's `console_url`, `console` and `tls`, else the default. Lenient like resolveDataDir.
 */
export function resolveConsoleUrl(flags: { config?: string; consoleUrl?: string }): string {
  if (flags.consoleUrl) return flags.consoleUrl.replace(/\/+$/, '');
  let raw: Record<string, unknown> = {};
  if (flags.config) {
    try {
      raw = (parseDocument(fs.readFileSync(path.resolve(flags.config), 'utf8')).toJS() as Record<string, unknown> | null) ?? {};
    } catch {
      raw = {};
    }
  }
  if (typeof raw.console_url === 'string') return raw.console_url.replace(/\/+$/, '');
  const at = parseHostPort(typeof raw.console === 'string' ? raw.console : DEFAULTS.console) ?? parseHostPort(DEFAULTS.console)!;
  const tls = typeof raw.tls === 'object' && raw.tls !== null && 'cert' in raw.tls;
  return deriveConsoleUrl({ host: at.host, port: at.port, tls, consoleUrl: null });
}

export function enrollmentLink(consoleUrl: string, token: string): string {
  return `${consoleUrl}/enroll#token=${token}`;
}
