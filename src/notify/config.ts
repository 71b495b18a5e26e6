/**
 * The `notify:` section of the config file:
 *
 * ```yaml
 * notify:
 *   webhooks:
 *     - name: dba-slack
 *       url: https://hooks.slack.com/services/T000/B000/XXXX   # or url_env: DBA_SLACK_URL
 *       format: slack                  # slack ({text, blocks}) or json (the plain event)
 *       secret_env: DBA_SLACK_SECRET   # or secret_file: /etc/stepgate/dba-slack.secret
 *       events: [held, decided]        # default: [held]
 *       rules: [four-eyes*]            # default: every rule that holds; []: only rules with notify: [dba-slack]
 *       attempts: 5                    # tries, the first included (1-10)
 * ```
 *
 * Invariants: every problem names file:line:column of the offending key and what to write instead; a
 * secret (and a URL from url_env, which may itself be a secret) is read here and never echoed in a message.
 */
import fs from 'node:fs';
import path from 'node:path';
import { isMap, isScalar, isSeq, type Node } from 'yaml';
import { globProblem } from '../rules/glob.js';
import { NOTIFY_EVENTS, type NotifyEventKind } from './messages.js';
import { NOTIFY_DEFAULTS, type NotifyConfig, type WebhookConfig } from './webhooks.js';

const WEBHOOK_KEYS = ['name', 'url', 'url_env', 'format', 'secret_env', 'secret_file', 'events', 'rules', 'attempts'];
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

type Where = (node: Node | null | undefined) => string;

export function parseNotifySection(
  value: unknown,
  node: Node | undefined,
  where: Where,
  sectionAt: string,
  problems: string[],
  baseDir: string,
  env: NodeJS.ProcessEnv = process.env,
): NotifyConfig {
  const config: NotifyConfig = { webhooks: [] };
  if (value === undefined || value === null) return config;
  const at = (n: Node | null | undefined, fallback: string): string => {
    const loc = where(n);
    return loc ? `${loc}: ` : fallback;
  };
  if (typeof value !== 'object' || Array.isArray(value) || !isMap(node)) {
    problems.push(`${sectionAt}"notify" must be a mapping with webhooks: (a list; see README: Notifications)`);
    return config;
  }
  const pairOf = (map: Node, key: string) => (isMap(map) ? map.items.find((p) => isScalar(p.key) && String(p.key.value) === key) : undefined);
  for (const pair of node.items) {
    const k = isScalar(pair.key) ? String(pair.key.value) : '';
    if (k !== 'webhooks') problems.push(`${at(pair.key as Node, sectionAt)}unknown key notify.${k}; valid keys: webhooks`);
  }
  const list = (value as Record<string, unknown>).webhooks;
  const listNode = pairOf(node, 'webhooks')?.value as Node | undefined;
  if (list === undefined || list === null) return config;
  if (!Array.isArray(list) || !isSeq(listNode)) {
    problems.push(`${at(listNode, sectionAt)}notify.webhooks must be a list: start each webhook with "- name: ..."`);
    return config;
  }
  const names = new Set<string>();
  list.forEach((raw, i) => {
    const itemNode = listNode.items[i] as Node | undefined;
    const itemAt = at(itemNode, sectionAt);
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw) || !isMap(itemNode)) {
      problems.push(`${itemAt}notify.webhooks[${i}] must be a mapping with name:, url:, format: and secret_env: or secret_file:`);
      return;
    }
    const o = raw as Record<string, unknown>;
    const keyAt = (k: string, atKey = false): string => {
      const p = pairOf(itemNode, k);
      return at(((atKey ? p?.key : p?.value) ?? p?.key ?? itemNode) as Node, itemAt);
    };
    const before = problems.length;
    const label = typeof o.name === 'string' && o.name ? `webhook "${o.name}"` : `notify.webhooks[${i}]`;
    for (const k of Object.keys(o)) {
      if (!WEBHOOK_KEYS.includes(k)) {
        const near = WEBHOOK_KEYS.find((x) => x.startsWith(k.slice(0, 3))) ?? WEBHOOK_KEYS.find((x) => editDistance(x, k) <= 2);
        problems.push(`${keyAt(k, true)}unknown key "${k}" in ${label}${near ? `: did you mean "${near}"?` : `; valid keys: ${WEBHOOK_KEYS.join(', ')}`}`);
      }
    }
    const name = typeof o.name === 'string' ? o.name : '';
    if (!NAME.test(name)) problems.push(`${keyAt('name')}${label} needs a name: letters, digits, "-", "_" or "." (for example name: dba-slack); it names the webhook in the audit trail`);
    else if (names.has(name)) problems.push(`${keyAt('name')}two webhooks are named "${name}": give each its own name`);
    names.add(name);

    // The URL: inline, or from the environment (a Slack webhook URL is a credential).
    let url: string | null = null;
    if (o.url !== undefined && o.url_env !== undefined) problems.push(`${keyAt('url_env', true)}${label}: set url or url_env, not both`);
    if (o.url_env !== undefined) {
      const v = typeof o.url_env === 'string' ? env[o.url_env] : undefined;
      if (typeof o.url_env !== 'string' || !o.url_env) problems.push(`${keyAt('url_env')}${label}: url_env must name an environment variable`);
      else if (!v) problems.push(`${keyAt('url_env')}${label}: the environment variable ${o.url_env} is not set: export it with the webhook's URL before starting stepgate`);
      else url = v.trim();
    } else if (typeof o.url === 'string') {
      url = o.url.trim();
    } else {
      problems.push(`${keyAt('url')}${label} needs url: https://... (or url_env: VARIABLE)`);
    }
    if (url !== null) {
      let u: URL | null = null;
      try {
        u = new URL(url);
      } catch {
        // said below
      }
      const shown = o.url_env !== undefined ? `the URL in ${String(o.url_env)}` : `"${url}"`;
      if (!u || (u.protocol !== 'https:' && u.protocol !== 'http:')) problems.push(`${keyAt(o.url_env !== undefined ? 'url_env' : 'url')}${label}: ${shown} is not an http:// or https:// URL`);
      else if (u.protocol === 'http:' && !['localhost', '127.0.0.1', '[::1]'].includes(u.hostname)) {
        problems.push(`${keyAt(o.url_env !== undefined ? 'url_env' : 'url')}${label}: use https:// (http:// only to localhost): the body names users and statements`);
      } else if (u.username || u.password) problems.push(`${keyAt(o.url_env !== undefined ? 'url_env' : 'url')}${label}: put no credentials in the URL; the request is signed with the secret instead`);
    }

    const format = o.format ?? 'json';
    if (format !== 'slack' && format !== 'json') problems.push(`${keyAt('format')}${label}: format must be slack or json, not ${JSON.stringify(format)}`);

    // The HMAC secret: required, and never inline (config files end up in repositories).
    let secret: string | null = null;
    if (o.secret_env !== undefined && o.secret_file !== undefined) problems.push(`${keyAt('secret_file', true)}${label}: set secret_env or secret_file, not both`);
    if (o.secret_env !== undefined) {
      if (typeof o.secret_env !== 'string' || !o.secret_env) problems.push(`${keyAt('secret_env')}${label}: secret_env must name an environment variable`);
      else if (!env[o.secret_env]) problems.push(`${keyAt('secret_env')}${label}: the environment variable ${o.secret_env} is not set: export the signing secret (at least 16 characters; openssl rand -hex 32) before starting stepgate`);
      else secret = env[o.secret_env]!;
    } else if (o.secret_file !== undefined) {
      if (typeof o.secret_file !== 'string' || !o.secret_file) problems.push(`${keyAt('secret_file')}${label}: secret_file must be a file name`);
      else {
        try {
          secret = fs.readFileSync(path.resolve(baseDir, o.secret_file), 'utf8').trim();
        } catch (err) {
          problems.push(`${keyAt('secret_file')}${label}: cannot read secret_file: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
        }
      }
    } else {
      problems.push(`${itemAt}${label} needs a signing secret: add secret_env: VARIABLE or secret_file: FILE (every request is signed; see README: Notifications)`);
    }
    if (secret !== null && secret.length < 16) {
      problems.push(`${keyAt(o.secret_env !== undefined ? 'secret_env' : 'secret_file')}${label}: the signing secret is shorter than 16 characters; use a random one (openssl rand -hex 32)`);
    }

    let events: NotifyEventKind[] = ['held'];
    if (o.events !== undefined) {
      const v = typeof o.events === 'string' ? [o.events] : o.events;
      if (!Array.isArray(v) || v.length === 0 || v.some((e) => !NOTIFY_EVENTS.includes(e as NotifyEventKind))) {
        problems.push(`${keyAt('events')}${label}: events must be a list of ${NOTIFY_EVENTS.join(', ')} (for example events: [held, decided])`);
      } else events = [...new Set(v as NotifyEventKind[])];
    }

    let rules: string[] | null = null;
    if (o.rules !== undefined) {
      const v = typeof o.rules === 'string' ? [o.rules] : o.rules;
      if (!Array.isArray(v) || v.some((r) => typeof r !== 'string' || !r)) {
        problems.push(`${keyAt('rules')}${label}: rules must be a list of rule names (globs allowed), for example rules: [four-eyes, prod-*]; [] for only the rules that name this webhook (notify: in a rule)`);
      } else {
        for (const r of v as string[]) {
          const g = globProblem(r);
          if (g) problems.push(`${keyAt('rules')}${label}: rules: ${g.message}: ${g.fix}`);
        }
        rules = v as string[];
      }
    }

    let attempts: number = NOTIFY_DEFAULTS.attempts;
    if (o.attempts !== undefined) {
      if (!Number.isInteger(o.attempts) || (o.attempts as number) < 1 || (o.attempts as number) > 10) problems.push(`${keyAt('attempts')}${label}: attempts must be a whole number from 1 to 10`);
      else attempts = o.attempts as number;
    }

    if (problems.length === before) {
      const hook: WebhookConfig = { name, url: url!, format: format as WebhookConfig['format'], secret: secret!, events, rules, attempts };
      config.webhooks.push(hook);
    }
  });
  return config;
}

/** Levenshtein distance, for "did you mean" (keys are short). */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length]!;
}
