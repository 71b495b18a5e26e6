/**
 * stepgate's configuration: a YAML file (`--config FILE`) with command-line flags on top. Every mistake is
 * reported with file, line and column and what to write instead; `stepgate serve` exits 2 on any.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMap, isScalar, LineCounter, parseDocument, type Node } from 'yaml';
import { parseNotifySection } from './notify/config.js';
import type { NotifyConfig } from './notify/webhooks.js';
import { parseUpstreamUrl, type UpstreamTarget } from './proxy/upstream.js';
import { parseDuration, parseSize } from './util/units.js';

export interface HostPort {
  host: string;
  port: number;
}

export interface Limits {
  /** Largest client message stepgate reads whole (Query, Parse, Bind ...). CopyData streams and is not bound by it. */
  maxMessageBytes: number;
  /** A client must finish startup and authentication within this time. */
  startupTimeoutMs: number;
  /** Pause before answering a failed login, to slow password guessing. */
  authFailureDelayMs: number;
  maxConnections: number;
  upstreamConnectTimeoutMs: number;
  /**
   * TCP keepalive on client and server connections: idle time before the first probe (0: off), so that a
   * client that vanished (a laptop closed, a network gone) does not hold its server backend for hours.
   */
  tcpKeepaliveMs: number;
  /**
   * At SIGTERM/SIGINT, statements that are running (or held) get this long to finish before every client
   * is sent FATAL 57P01 and disconnected; new connections meanwhile get FATAL 57P03.
   */
  shutdownTimeoutMs: number;
  /** A previewed statement's reply is held in memory up to this size; beyond it the statement is held without a preview. */
  previewMaxBytes: number;
}

/** The audit trail (`audit:` in the config file). */
export interface AuditConfig {
  /**
   * When the audit store fails (disk full, locked, corrupt, writer died): `close` refuses every statement
   * that must be recorded; `allow_reads` still lets statements that only read through (unrecorded) and
   * refuses the rest. Step-up and deny always fail closed.
   */
  onFailure: 'close' | 'allow_reads';
  /** Events older than this are pruned at a signed checkpoint (ms); null keeps everything. */
  retentionMs: number | null;
  /** Record bind parameters (redacted); off by default, they often hold personal data. */
  bindParameters: boolean;
  /** Sign a checkpoint of the chain head after this many events ... */
  checkpointEvents: number;
  /** ... or this long after the previous one (ms), and at shutdown. */
  checkpointMs: number;
}

/** Single sign-on (`sso:` in the config file): an OpenID Provider as the baseline login. */
export interface SsoConfig {
  /** The issuer URL exactly as the provider names itself (its discovery document is ISSUER/.well-known/openid-configuration). */
  issuer: string;
  clientId: string;
  clientSecret: string | null;
  scopes: string[];
  /** The claim the stepgate user name is taken from. */
  usernameClaim: string;
  /** The claim groups are taken from; null: groups are not taken from the IdP. */
  groupsClaim: string | null;
  /** E-mail domains accepted (the verified `email` claim); empty: any. */
  allowedDomains: string[];
  /** Audiences accepted for access tokens used as database passwords, besides the client id (ID tokens). */
  audiences: string[];
  /** Tokens as database passwords (cleartext over TLS). */
  tokenLogin: boolean;
  /** A token used as a password must have been issued within this long (ms); null: only its expiry counts. */
  maxTokenAgeMs: number | null;
  /** Lifetime of the database credentials the console and `stepgate login` issue (ms). */
  credentialTtlMs: number;
  /** A console sign-in by SSO lasts at most this long before the IdP is asked again (ms). */
  sessionTtlMs: number;
}

export interface Config {
  listen: HostPort;
  /** Default server and stepgate's credentials for it. */
  upstream: UpstreamTarget | null;
  /** Client database name → server (like pgbouncer's [databases]); `*` is the fallback. */
  databases: Map<string, UpstreamTarget>;
  dataDir: string;
  rulesDir: string;
  tls: { cert: string; key: string } | null;
  requireTls: boolean;
  console: HostPort;
  /** URL people open for the console (links in notices); derived from `console` when not set. */
  consoleUrl: string | null;
  auth: 'scram-sha-256' | 'trust';
  limits: Limits;
  audit: AuditConfig;
  /** Single sign-on; null: local users only. */
  sso: SsoConfig | null;
  /** `metrics: {listen: HOST:PORT}`: /metrics, /healthz and /readyz on a listener of their own; null: off. */
  metrics: { listen: HostPort } | null;
  /** Webhooks that tell approvers about held statements (`notify:`; see src/notify/config.ts). */
  notify: NotifyConfig;
  /**
   * `state: postgres://...`: what several instances share (users, factors, grants, holds, console
   * sign-ins) lives in that PostgreSQL database (src/state/); null: this instance's SQLite files only.
   */
  state: StateConfig | null;
  /**
   * `workers: N`: N proxy processes on the one listening port (Node's cluster), each an instance of its own
   * on the shared state (so N > 1 needs `state:`). 1: this process alone.
   */
  workers: number;
  /** Where the file came from, for messages. */
  source: string | null;
}

export interface StateConfig {
  url: string;
  /** This instance's name among those sharing the state (default: host name, listening port and pid). */
  instance: string | null;
  /** How long an instance that stopped renewing its lease is trusted: then its holds are abandoned (ms). */
  leaseMs: number;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
  }
}

/** The `rules/` directory shipped with stepgate (dist/src/config.js → package root). */
export const SHIPPED_RULES_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'rules');

export const DEFAULTS = {
  listen: '127.0.0.1:6432',
  console: '127.0.0.1:6480',
  data: './.stepgate',
  limits: {
    maxMessageBytes: 64 * 1024 * 1024,
    startupTimeoutMs: 30_000,
    authFailureDelayMs: 1000,
    maxConnections: 2000,
    upstreamConnectTimeoutMs: 10_000,
    tcpKeepaliveMs: 60_000,
    shutdownTimeoutMs: 10_000,
    previewMaxBytes: 16 * 1024 * 1024,
  },
  audit: {
    onFailure: 'close',
    retentionMs: null,
    bindParameters: false,
    checkpointEvents: 10_000,
    checkpointMs: 5 * 60_000,
  },
} as const;

export function parseHostPort(text: string): HostPort | null {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(text.trim());
  if (!m) return null;
  const port = Number(m[3]);
  if (port > 65535) return null;
  return { host: m[1] ?? m[2], port };
}

export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (net.isIPv4(host)) return host.startsWith('127.');
  return host === '::1';
}

/** Command-line values that override the file. */
export interface ConfigFlags {
  config?: string;
  listen?: string;
  upstream?: string;
  data?: string;
  rules?: string;
  tlsCert?: string;
  tlsKey?: string;
  requireTls?: boolean;
  console?: string;
}

type Where = (node: Node | null | undefined) => string;

/** Reads the config file (if any) and applies flags. Throws ConfigError listing every problem. */
export function loadConfig(flags: ConfigFlags): Config {
  const problems: string[] = [];
  let raw: Record<string, unknown> = {};
  let nodes = new Map<string, Node>();
  const keyNodes = new Map<string, Node>();
  let where: Where = () => '';
  let baseDir = process.cwd();
  const file = flags.config ? path.resolve(flags.config) : null;

  if (file) {
    baseDir = path.dirname(file);
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError([`${file}: cannot read the config file: ${(err as Error).message}`]);
    }
    const lineCounter = new LineCounter();
    const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
    where = (node) => {
      const offset = node?.range?.[0] ?? 0;
      const { line, col } = lineCounter.linePos(offset);
      return `${file}:${line}:${col}`;
    };
    for (const e of doc.errors) {
      const { line, col } = lineCounter.linePos(e.pos[0]);
      problems.push(`${file}:${line}:${col}: YAML syntax error: ${e.message.split('\n')[0]}`);
    }
    if (problems.length) throw new ConfigError(problems);
    if (doc.contents !== null && !isMap(doc.contents)) {
      throw new ConfigError([`${where(doc.contents)}: the config file must be a mapping of keys such as listen: and upstream:`]);
    }
    raw = (doc.toJS() ?? {}) as Record<string, unknown>;
    if (isMap(doc.contents)) {
      for (const pair of doc.contents.items) {
        if (!isScalar(pair.key)) continue;
        nodes.set(String(pair.key.value), (pair.value ?? pair.key) as Node);
        keyNodes.set(String(pair.key.value), pair.key as Node);
      }
    }
  }
  const prefix = (node: Node | null | undefined): string => {
    const loc = where(node);
    return loc ? `${loc}: ` : '';
  };
  /** Where a top-level key's value is; `sub`: a key inside it (its value), when it is a mapping. */
  const at = (key: string, sub?: string): string => {
    const value = nodes.get(key);
    if (sub !== undefined && isMap(value)) {
      const pair = value.items.find((p) => isScalar(p.key) && String(p.key.value) === sub);
      if (pair) return prefix((pair.value ?? pair.key) as Node);
    }
    return prefix(value);
  };
  const known = ['listen', 'upstream', 'databases', 'data', 'rules', 'tls', 'console', 'console_url', 'auth', 'limits', 'audit', 'sso', 'metrics', 'notify', 'state', 'workers'];
  for (const key of Object.keys(raw)) {
    if (!known.includes(key)) {
      const near = known.find((k) => k.startsWith(key.slice(0, 3)));
      problems.push(`${prefix(keyNodes.get(key))}unknown key "${key}"${near ? `: did you mean "${near}"?` : `; valid keys: ${known.join(', ')}`}`);
    }
  }
  const str = (key: string, value: unknown): string | undefined => {
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'string' && typeof value !== 'number') {
      problems.push(`${at(key)}"${key}" must be a string`);
      return undefined;
    }
    return String(value);
  };
  const resolvePath = (p: string): string => path.resolve(baseDir, p);

  const hostPort = (key: string, text: string, flag: boolean): HostPort => {
    const hp = parseHostPort(text);
    if (!hp) problems.push(`${flag ? `--${key}: ` : at(key)}"${text}" is not HOST:PORT (for example 127.0.0.1:6432)`);
    return hp ?? { host: '127.0.0.1', port: 0 };
  };
  const listen = hostPort('listen', flags.listen ?? str('listen', raw.listen) ?? DEFAULTS.listen, flags.listen !== undefined);
  const consoleAt = hostPort('console', flags.console ?? str('console', raw.console) ?? DEFAULTS.console, flags.console !== undefined);

  const upstreamUrl = (url: string, prefix: string): UpstreamTarget | null => {
    try {
      return parseUpstreamUrl(url);
    } catch (err) {
      problems.push(`${prefix}${(err as Error).message}`);
      return null;
    }
  };
  const upstreamText = flags.upstream ?? str('upstream', raw.upstream);
  const upstream = upstreamText ? upstreamUrl(upstreamText, flags.upstream ? '--upstream: ' : at('upstream')) : null;

  const databases = new Map<string, UpstreamTarget>();
  if (raw.databases !== undefined) {
    if (typeof raw.databases !== 'object' || raw.databases === null || Array.isArray(raw.databases)) {
      problems.push(`${at('databases')}"databases" must map database names to postgres:// URLs`);
    } else {
      for (const [name, url] of Object.entries(raw.databases as Record<string, unknown>)) {
        if (typeof url !== 'string') {
          problems.push(`${at('databases', name)}databases.${name} must be a postgres:// URL`);
          continue;
        }
        const target = upstreamUrl(url, `${at('databases', name)}databases.${name}: `);
        if (target) databases.set(name, target);
      }
    }
  }
  if (!upstream && databases.size === 0) {
    problems.push(
      `${file ? `${file}: ` : ''}no upstream server: set "upstream: postgres://USER:PASSWORD@HOST:PORT/DB" or pass --upstream`,
    );
  }

  const dataDir = resolvePath(flags.data ?? str('data', raw.data) ?? DEFAULTS.data);
  const rulesDir = flags.rules ? path.resolve(flags.rules) : raw.rules ? resolvePath(String(raw.rules)) : SHIPPED_RULES_DIR;

  let tlsConf: Config['tls'] = null;
  let requireTls = flags.requireTls ?? false;
  const rawTls = raw.tls as Record<string, unknown> | undefined;
  if (rawTls !== undefined && (typeof rawTls !== 'object' || rawTls === null)) {
    problems.push(`${at('tls')}"tls" must be a mapping with cert:, key: and optionally require: true`);
  }
  const tlsObj = typeof rawTls === 'object' && rawTls !== null ? rawTls : {};
  for (const key of Object.keys(tlsObj)) {
    if (!['cert', 'key', 'require'].includes(key)) problems.push(`${at('tls', key)}unknown key tls.${key}: valid keys are cert, key, require`);
  }
  const cert = flags.tlsCert ? path.resolve(flags.tlsCert) : tlsObj.cert ? resolvePath(String(tlsObj.cert)) : null;
  const key = flags.tlsKey ? path.resolve(flags.tlsKey) : tlsObj.key ? resolvePath(String(tlsObj.key)) : null;
  if (tlsObj.require !== undefined && typeof tlsObj.require !== 'boolean') problems.push(`${at('tls', 'require')}tls.require must be true or false`);
  if (flags.requireTls === undefined && tlsObj.require === true) requireTls = true;
  if ((cert === null) !== (key === null)) {
    problems.push(`${at('tls')}TLS needs both a certificate and a key (--tls-cert FILE --tls-key FILE)`);
  } else if (cert && key) {
    for (const [what, p] of [['certificate', cert], ['key', key]] as const) {
      if (!fs.existsSync(p)) problems.push(`${at('tls', what === 'key' ? 'key' : 'cert')}TLS ${what} file ${p} does not exist`);
    }
    tlsConf = { cert, key };
  }
  if (requireTls && !tlsConf) problems.push(`${at('tls')}--require-tls needs a certificate and key (--tls-cert FILE --tls-key FILE)`);

  const auth = str('auth', raw.auth) ?? 'scram-sha-256';
  if (auth !== 'scram-sha-256' && auth !== 'trust') {
    problems.push(`${at('auth')}auth must be scram-sha-256 or trust, not "${auth}"`);
  } else if (auth === 'trust' && !isLoopback(listen.host)) {
    problems.push(`${at('auth')}auth: trust is only allowed when listening on a loopback address, not ${listen.host}; use scram-sha-256`);
  }

  const limits: Limits = { ...DEFAULTS.limits };
  const rawLimits = raw.limits;
  if (rawLimits !== undefined) {
    if (typeof rawLimits !== 'object' || rawLimits === null) {
      problems.push(`${at('limits')}"limits" must be a mapping`);
    } else {
      const specs: Record<string, [keyof Limits, 'size' | 'duration' | 'count']> = {
        max_message_size: ['maxMessageBytes', 'size'],
        startup_timeout: ['startupTimeoutMs', 'duration'],
        auth_failure_delay: ['authFailureDelayMs', 'duration'],
        max_connections: ['maxConnections', 'count'],
        upstream_connect_timeout: ['upstreamConnectTimeoutMs', 'duration'],
        tcp_keepalive: ['tcpKeepaliveMs', 'duration'],
        shutdown_timeout: ['shutdownTimeoutMs', 'duration'],
        preview_max_size: ['previewMaxBytes', 'size'],
      };
      for (const [k, v] of Object.entries(rawLimits as Record<string, unknown>)) {
        const spec = specs[k];
        if (!spec) {
          problems.push(`${at('limits', k)}unknown key limits.${k}; valid keys: ${Object.keys(specs).join(', ')}`);
          continue;
        }
        const [field, kind] = spec;
        const parsed =
          kind === 'count' ? (Number.isInteger(v) && (v as number) > 0 ? (v as number) : null) : kind === 'size' ? parseSize(String(v)) : parseDuration(String(v));
        if (parsed === null) {
          const example = kind === 'size' ? '64MB' : kind === 'duration' ? '30s' : '1000';
          problems.push(`${at('limits', k)}limits.${k}: "${String(v)}" is not a ${kind === 'count' ? 'positive integer' : kind} (for example ${example})`);
        } else {
          limits[field] = parsed;
        }
      }
    }
  }

  const audit = parseAuditSection(raw.audit, nodes.get('audit'), where, at('audit'), problems);
  const notify = parseNotifySection(raw.notify, nodes.get('notify'), where, at('notify'), problems, baseDir);
  const sso = parseSsoSection(raw.sso, nodes.get('sso'), where, at('sso'), problems, baseDir);
  // Tokens travel as cleartext passwords, so only over TLS: on by default when TLS is configured.
  if (sso && (raw.sso as Record<string, unknown>).token_login === undefined) sso.tokenLogin = tlsConf !== null;
  if (sso?.tokenLogin && !tlsConf) {
    problems.push(`${at('sso', 'token_login')}sso.token_login needs TLS for clients: a token is sent as a cleartext password, which stepgate accepts only over TLS`);
  }

  let metrics: Config['metrics'] = null;
  if (raw.metrics !== undefined && raw.metrics !== null) {
    const m = raw.metrics as Record<string, unknown>;
    if (typeof m !== 'object' || Array.isArray(m)) {
      problems.push(`${at('metrics')}"metrics" must be a mapping: metrics: {listen: "127.0.0.1:9187"}`);
    } else {
      for (const k of Object.keys(m)) if (k !== 'listen') problems.push(`${at('metrics', k)}unknown key metrics.${k}: the only key is listen (HOST:PORT)`);
      if (typeof m.listen !== 'string' && typeof m.listen !== 'number') {
        problems.push(`${at('metrics')}metrics.listen is missing: add listen: "127.0.0.1:9187" (HOST:PORT for /metrics, /healthz and /readyz)`);
      } else {
        const hp = parseHostPort(String(m.listen));
        if (!hp) problems.push(`${at('metrics', 'listen')}metrics.listen: "${String(m.listen)}" is not HOST:PORT (for example 127.0.0.1:9187)`);
        else metrics = { listen: hp };
      }
    }
  }

  const state = parseStateSection(raw.state, at, problems);
  let workers = 1;
  if (raw.workers !== undefined) {
    if (!Number.isInteger(raw.workers) || (raw.workers as number) < 1 || (raw.workers as number) > 64) {
      problems.push(`${at('workers')}workers must be a whole number from 1 to 64 (proxy processes sharing the listening port; about one per core)`);
    } else {
      workers = raw.workers as number;
      if (workers > 1 && !state) {
        problems.push(`${at('workers')}workers: ${workers} needs shared state: the workers are instances that share users, held statements and grants through it; add ${STATE_EXAMPLE}`);
      }
    }
  }

  const consoleUrl = str('console_url', raw.console_url) ?? null;
  if (consoleUrl !== null && !/^https?:\/\/[^\s]+$/.test(consoleUrl)) {
    problems.push(`${at('console_url')}console_url must be an http:// or https:// URL`);
  }

  if (problems.length) throw new ConfigError(problems);
  return {
    listen,
    upstream,
    databases,
    dataDir,
    rulesDir,
    tls: tlsConf,
    requireTls,
    console: consoleAt,
    consoleUrl,
    auth: auth as Config['auth'],
    limits,
    audit,
    sso,
    metrics,
    notify,
    state,
    workers,
    source: file,
  };
}

const STATE_EXAMPLE = 'state: postgres://stepgate:PASSWORD@db.internal:5432/stepgate_state';

function parseStateSection(value: unknown, at: (key: string, sub?: string) => string, problems: string[]): StateConfig | null {
  if (value === undefined || value === null) return null;
  const m: Record<string, unknown> = typeof value === 'string' ? { url: value } : (value as Record<string, unknown>);
  if (typeof m !== 'object' || Array.isArray(m)) {
    problems.push(`${at('state')}"state" must be a postgres:// URL or a mapping {url, instance, lease}: ${STATE_EXAMPLE}`);
    return null;
  }
  for (const k of Object.keys(m)) if (!['url', 'instance', 'lease'].includes(k)) problems.push(`${at('state', k)}unknown key state.${k}: the keys are url, instance and lease`);
  const url = m.url;
  if (typeof url !== 'string' || !/^postgres(ql)?:\/\/[^\s]+$/.test(url)) {
    problems.push(`${typeof value === 'string' ? at('state') : at('state', 'url')}state.url must be a postgres:// URL of a database for stepgate's shared state: ${STATE_EXAMPLE}`);
    return null;
  }
  let instance: string | null = null;
  if (m.instance !== undefined) {
    if (typeof m.instance !== 'string' || !/^[A-Za-z0-9_.:-]{1,63}$/.test(m.instance)) problems.push(`${at('state', 'instance')}state.instance must be 1-63 letters, digits, "_", ".", ":" or "-"`);
    else instance = m.instance;
  }
  let leaseMs = 10_000;
  if (m.lease !== undefined) {
    const ms = typeof m.lease === 'string' ? parseDuration(m.lease) : null;
    if (ms === null || ms < 1000) problems.push(`${at('state', 'lease')}state.lease must be a duration of at least 1s (for example 10s)`);
    else leaseMs = ms;
  }
  return { url, instance, leaseMs };
}

export const SSO_DEFAULTS = {
  scopes: ['openid', 'profile', 'email'],
  usernameClaim: 'preferred_username',
  groupsClaim: 'groups',
  maxTokenAgeMs: 60 * 60_000,
  credentialTtlMs: 8 * 60 * 60_000,
  sessionTtlMs: 8 * 60 * 60_000,
} as const;

const SSO_KEYS = [
  'issuer',
  'client_id',
  'client_secret',
  'client_secret_file',
  'scopes',
  'username_claim',
  'groups_claim',
  'allowed_domains',
  'audiences',
  'token_login',
  'max_token_age',
  'credential_ttl',
  'session_ttl',
];

/** `sso:`: the OpenID Provider. Problems name the line of each key and what to write. */
function parseSsoSection(value: unknown, node: Node | undefined, where: Where, sectionAt: string, problems: string[], baseDir: string): SsoConfig | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'object' || Array.isArray(value) || !isMap(node)) {
    problems.push(`${sectionAt}"sso" must be a mapping with issuer:, client_id: and client_secret: (see README: Single sign-on)`);
    return null;
  }
  const keyAt = (key: string, atKey = false): string => {
    const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === key);
    const loc = where(((atKey ? pair?.key : pair?.value) ?? pair?.key ?? node) as Node);
    return loc ? `${loc}: ` : sectionAt;
  };
  const o = value as Record<string, unknown>;
  const before = problems.length;
  for (const k of Object.keys(o)) {
    if (!SSO_KEYS.includes(k)) {
      const near = SSO_KEYS.find((x) => x.startsWith(k.slice(0, 4)));
      problems.push(`${keyAt(k, true)}unknown key sso.${k}${near ? `: did you mean "${near}"?` : `; valid keys: ${SSO_KEYS.join(', ')}`}`);
    }
  }
  const text = (k: string, required: boolean, example: string): string | null => {
    const v = o[k];
    if (v === undefined || v === null) {
      if (required) problems.push(`${sectionAt}sso.${k} is missing: add ${k}: ${example}`);
      return null;
    }
    if (typeof v !== 'string' || v.trim() === '') {
      problems.push(`${keyAt(k)}sso.${k} must be a non-empty string, for example ${example}`);
      return null;
    }
    return v.trim();
  };
  const list = (k: string, example: string): string[] | null => {
    const v = o[k];
    if (v === undefined || v === null) return null;
    const items = typeof v === 'string' ? v.split(/[\s,]+/).filter(Boolean) : v;
    if (!Array.isArray(items) || items.length === 0 || items.some((x) => typeof x !== 'string' || !x)) {
      problems.push(`${keyAt(k)}sso.${k} must be a list of strings, for example ${example}`);
      return null;
    }
    return items as string[];
  };
  const duration = (k: string, fallback: number | null): number | null => {
    const v = o[k];
    if (v === undefined) return fallback;
    if (k === 'max_token_age' && (v === null || v === 'none')) return null;
    const ms = typeof v === 'string' ? parseDuration(v) : null;
    if (ms === null || ms <= 0) {
      problems.push(`${keyAt(k)}sso.${k}: ${JSON.stringify(v)} is not a duration (for example 8h, 30m${k === 'max_token_age' ? ', or none' : ''})`);
      return fallback;
    }
    return ms;
  };

  const issuer = text('issuer', true, 'https://login.example.com');
  if (issuer !== null) {
    let u: URL | null = null;
    try {
      u = new URL(issuer);
    } catch {
      problems.push(`${keyAt('issuer')}sso.issuer "${issuer}" is not a URL: write the issuer as the provider names it, e.g. https://login.example.com/realms/acme`);
    }
    if (u && u.protocol !== 'https:' && !(u.protocol === 'http:' && ['localhost', '127.0.0.1', '[::1]'].includes(u.hostname))) {
      problems.push(`${keyAt('issuer')}sso.issuer must be an https:// URL (http:// only on localhost, for tests)`);
    }
  }
  const clientId = text('client_id', true, 'stepgate');
  let clientSecret = text('client_secret', false, 'a secret from the IdP');
  const secretFile = text('client_secret_file', false, '/etc/stepgate/oidc-secret');
  if (secretFile !== null) {
    if (clientSecret !== null) problems.push(`${keyAt('client_secret_file', true)}set sso.client_secret or sso.client_secret_file, not both`);
    try {
      clientSecret = fs.readFileSync(path.resolve(baseDir, secretFile), 'utf8').trim();
    } catch (err) {
      problems.push(`${keyAt('client_secret_file')}cannot read sso.client_secret_file: ${(err as Error).message}`);
    }
  }
  const scopes = list('scopes', '[openid, profile, email, groups]') ?? [...SSO_DEFAULTS.scopes];
  if (!scopes.includes('openid')) problems.push(`${keyAt('scopes')}sso.scopes must include openid`);
  const usernameClaim = text('username_claim', false, 'preferred_username') ?? SSO_DEFAULTS.usernameClaim;
  let groupsClaim: string | null = SSO_DEFAULTS.groupsClaim;
  if (o.groups_claim === null || o.groups_claim === false) groupsClaim = null;
  else groupsClaim = text('groups_claim', false, 'groups') ?? groupsClaim;
  const allowedDomains = (list('allowed_domains', '[example.com]') ?? []).map((d) => d.toLowerCase().replace(/^@/, ''));
  for (const d of allowedDomains) {
    if (!/^[a-z0-9.-]+\.[a-z]{2,}$/.test(d)) problems.push(`${keyAt('allowed_domains')}sso.allowed_domains: "${d}" is not a domain name (write example.com, without @)`);
  }
  const audiences = list('audiences', '[stepgate-db]') ?? [];
  let tokenLogin = true;
  if (o.token_login !== undefined) {
    if (typeof o.token_login !== 'boolean') problems.push(`${keyAt('token_login')}sso.token_login must be true or false`);
    else tokenLogin = o.token_login;
  }
  const sso: SsoConfig = {
    issuer: issuer ?? '',
    clientId: clientId ?? '',
    clientSecret,
    scopes,
    usernameClaim,
    groupsClaim,
    allowedDomains,
    audiences,
    tokenLogin,
    maxTokenAgeMs: duration('max_token_age', SSO_DEFAULTS.maxTokenAgeMs),
    credentialTtlMs: duration('credential_ttl', SSO_DEFAULTS.credentialTtlMs)!,
    sessionTtlMs: duration('session_ttl', SSO_DEFAULTS.sessionTtlMs)!,
  };
  if (sso.sessionTtlMs > 24 * 60 * 60_000) problems.push(`${keyAt('session_ttl')}sso.session_ttl must be at most 24h (the console asks the IdP again at least daily)`);
  if (sso.credentialTtlMs > 7 * 24 * 60 * 60_000) problems.push(`${keyAt('credential_ttl')}sso.credential_ttl must be at most 7d: credentials are meant to be short-lived`);
  return problems.length > before ? null : sso;
}

/** `audit:`: on_failure, retention, bind_parameters, checkpoint_every. Problems name the line of each key. */
function parseAuditSection(value: unknown, node: Node | undefined, where: Where, sectionAt: string, problems: string[]): AuditConfig {
  const audit: AuditConfig = { ...DEFAULTS.audit };
  if (value === undefined || value === null) return audit;
  if (typeof value !== 'object' || Array.isArray(value) || !isMap(node)) {
    problems.push(`${sectionAt}"audit" must be a mapping with on_failure:, retention:, bind_parameters: or checkpoint_every:`);
    return audit;
  }
  const keyAt = (key: string, atKey = false): string => {
    const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === key);
    const loc = where(((atKey ? pair?.key : pair?.value) ?? pair?.key ?? node) as Node);
    return loc ? `${loc}: ` : sectionAt;
  };
  const valid = ['on_failure', 'retention', 'bind_parameters', 'checkpoint_every'];
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    switch (k) {
      case 'on_failure':
        if (v === 'close' || v === 'allow_reads') audit.onFailure = v;
        else problems.push(`${keyAt(k)}audit.on_failure must be close or allow_reads, not ${JSON.stringify(v)}`);
        break;
      case 'retention': {
        if (v === null || v === 'none' || v === 'forever') {
          audit.retentionMs = null;
          break;
        }
        const ms = typeof v === 'string' ? parseDuration(v) : null;
        if (ms === null || ms <= 0) problems.push(`${keyAt(k)}audit.retention: ${JSON.stringify(v)} is not a duration (for example 90d, 12h; or none to keep everything)`);
        else audit.retentionMs = ms;
        break;
      }
      case 'bind_parameters':
        if (typeof v === 'boolean') audit.bindParameters = v;
        else problems.push(`${keyAt(k)}audit.bind_parameters must be true or false`);
        break;
      case 'checkpoint_every': {
        // A number of events, a duration, or both: {events: 10000, time: 5m}.
        const one = (x: unknown): boolean => {
          if (Number.isInteger(x) && (x as number) > 0) {
            audit.checkpointEvents = x as number;
            return true;
          }
          const ms = typeof x === 'string' ? parseDuration(x) : null;
          if (ms !== null && ms >= 1000) {
            audit.checkpointMs = ms;
            return true;
          }
          return false;
        };
        let ok: boolean;
        if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
          const o = v as Record<string, unknown>;
          const extra = Object.keys(o).filter((x) => x !== 'events' && x !== 'time');
          ok = extra.length === 0 && (o.events === undefined || (Number.isInteger(o.events) && (o.events as number) > 0 && one(o.events))) && (o.time === undefined || one(String(o.time)));
        } else {
          ok = one(v);
        }
        if (!ok) problems.push(`${keyAt(k)}audit.checkpoint_every: ${JSON.stringify(v)} must be a number of events (10000), a duration of at least 1s (5m), or {events: 10000, time: 5m}`);
        break;
      }
      default: {
        const near = valid.find((x) => x.startsWith(k.slice(0, 3)));
        problems.push(`${keyAt(k, true)}unknown key audit.${k}${near ? `: did you mean "${near}"?` : `; valid keys: ${valid.join(', ')}`}`);
      }
    }
  }
  return audit;
}

/** The upstream a client's database name routes to, and the database name to ask it for. */
export function routeDatabase(config: Pick<Config, 'upstream' | 'databases'>, database: string): { target: UpstreamTarget; database: string } | null {
  const mapped = config.databases.get(database) ?? config.databases.get('*');
  const target = mapped ?? config.upstream;
  if (!target) return null;
  return { target, database: target.database && mapped ? target.database : database };
}

/** The `state:` URL of a config file (for `stepgate audit`, which reads nothing else of it); null without one. */
export function resolveStateUrl(configFile: string): string | null {
  return resolveState({ config: configFile })?.url ?? null;
}

/**
 * The data directory for commands that need only it (users, audit): --data, else the config file's
 * `data:`, else the default. Lenient: the rest of the config file is not checked here.
 */
export function resolveDataDir(flags: { data?: string; config?: string }): string {
  if (flags.data) return path.resolve(flags.data);
  if (flags.config) {
    const file = path.resolve(flags.config);
    const data = topLevelValue(file, 'data');
    if (typeof data === 'string') return path.resolve(path.dirname(file), data);
  }
  return path.resolve(DEFAULTS.data);
}

/**
 * The config file's `state:` without the rest of the file checked (`stepgate users` on a host that has
 * only the config, not its TLS files or rules); null without `--config` or without `state:`.
 */
export function resolveState(flags: { config?: string }): StateConfig | null {
  if (!flags.config) return null;
  const file = path.resolve(flags.config);
  const problems: string[] = [];
  const state = parseStateSection(topLevelValue(file, 'state'), () => `${file}: `, problems);
  if (problems.length > 0) throw new ConfigError(problems);
  return state;
}

function topLevelValue(file: string, key: string): unknown {
  try {
    return (parseDocument(fs.readFileSync(file, 'utf8')).toJS() as Record<string, unknown> | null)?.[key];
  } catch (err) {
    throw new ConfigError([`${file}: cannot read the config file: ${(err as Error).message}`]);
  }
}
