/**
 * A real OpenID Provider (oidc-provider) in this process on a loopback port, for single sign-on tests:
 * accounts the test can change (groups) or remove, clients registered once the console's URL is known,
 * signing keys it can rotate, and tokens fetched through the provider's own authorization code flow
 * (its login form posted over HTTP, no browser), so every token is one the provider really issued.
 *
 * The provider is rebuilt (same issuer, same port) when clients or keys change; its HTTP server stays.
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type net from 'node:net';
import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

export interface IdpAccount {
  /** The provider's subject (`sub`). */
  sub: string;
  preferred_username: string;
  email: string;
  groups: string[];
}

export interface IdpClient {
  client_id: string;
  client_secret: string;
  redirect_uris: string[];
}

export interface TestIdp {
  issuer: string;
  accounts: Map<string, IdpAccount>;
  /** Registers clients (rebuilds the provider). */
  setClients(clients: IdpClient[]): Promise<void>;
  /** A new signing key first; `keepOld`: the old one stays published (a rotation), else it is gone. */
  rotateKeys(keepOld?: boolean): Promise<void>;
  /** The kid the provider signs with now. */
  readonly signingKid: string;
  /** An ID token for `login` (an account's sub) from `client`, through the code flow. */
  idToken(login: string, client: IdpClient, redirectUri?: string): Promise<string>;
  /** Requests the provider served (path only), for tests of caching. */
  readonly requests: string[];
  close(): Promise<void>;
}

export async function startIdp(t: { teardown(fn: () => unknown): void }, options: { idTokenTtl?: number } = {}): Promise<TestIdp> {
  const accounts = new Map<string, IdpAccount>();
  const requests: string[] = [];
  let provider: Provider | null = null;
  let clients: IdpClient[] = [];
  let keys: Record<string, unknown>[] = [];
  const sockets = new Set<net.Socket>();
  const server = http.createServer((req, res) => {
    requests.push((req.url ?? '').split('?')[0]!);
    if (!provider) {
      res.writeHead(503).end();
      return;
    }
    provider.callback()(req, res);
  });
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const issuer = `http://127.0.0.1:${port}`;

  const newKey = async (): Promise<Record<string, unknown>> => {
    const { privateKey } = await generateKeyPair('RS256', { extractable: true });
    const jwk = await exportJWK(privateKey);
    return { ...jwk, kid: randomBytes(6).toString('hex'), alg: 'RS256', use: 'sig' };
  };
  keys = [await newKey()];

  const build = (): void => {
    const p = new Provider(issuer, {
      clients: clients.map((c) => ({ ...c, grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'client_secret_basic' })),
      jwks: { keys: keys as never },
      cookies: { keys: ['stepgate-test-cookies'] },
      pkce: { required: () => true },
      scopes: ['openid', 'profile', 'email', 'groups'],
      claims: { openid: ['sub'], profile: ['preferred_username', 'name'], email: ['email', 'email_verified'], groups: ['groups'] },
      // Claims in the ID token too (as IdPs configured for groups claims do), not only at userinfo.
      conformIdTokenClaims: false,
      ttl: { IdToken: options.idTokenTtl ?? 3600, AccessToken: 3600, Session: 3600, Interaction: 600, Grant: 3600 },
      findAccount: async (_ctx: unknown, sub: string) => {
        const a = accounts.get(sub);
        if (!a) return undefined;
        return { accountId: sub, claims: async () => ({ sub, preferred_username: a.preferred_username, email: a.email, email_verified: true, groups: a.groups }) };
      },
      // Consent is given: these are the organisation's own applications.
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      loadExistingGrant: async (ctx: any) => {
        const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session!.grantIdFor(ctx.oidc.client!.clientId);
        if (grantId) {
          const found = await ctx.oidc.provider.Grant.find(grantId);
          if (found) return found;
        }
        const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client!.clientId, accountId: ctx.oidc.session!.accountId! });
        grant.addOIDCScope('openid profile email groups');
        await grant.save();
        return grant;
      },
    });
    p.on('server_error', () => {});
    provider = p;
  };
  build();

  const idp: TestIdp = {
    issuer,
    accounts,
    requests,
    get signingKid() {
      return keys[0]!.kid as string;
    },
    async setClients(list) {
      clients = list;
      build();
    },
    async rotateKeys(keepOld = true) {
      const fresh = await newKey();
      keys = keepOld ? [fresh, ...keys] : [fresh];
      build();
    },
    idToken: (login, client, redirectUri) => codeFlow(issuer, login, client, redirectUri ?? client.redirect_uris[0]!),
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
    },
  };
  t.teardown(() => idp.close());
  return idp;
}

/** The authorization code flow over plain HTTP: the provider's login form posted, the code exchanged. */
async function codeFlow(issuer: string, login: string, client: IdpClient, redirectUri: string): Promise<string> {
  const jar = new Map<string, string>();
  const remember = (res: Response): void => {
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const eq = pair!.indexOf('=');
      jar.set(pair!.slice(0, eq), pair!.slice(eq + 1));
    }
  };
  const cookie = (): string => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  const go = async (url: string, init: RequestInit = {}): Promise<Response> => {
    const res = await fetch(url, { ...init, redirect: 'manual', headers: { ...(init.headers as Record<string, string>), cookie: cookie() } });
    remember(res);
    return res;
  };
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const auth = new URL(`${issuer}/auth`);
  for (const [k, v] of Object.entries({
    client_id: client.client_id,
    response_type: 'code',
    scope: 'openid profile email groups',
    redirect_uri: redirectUri,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state: randomBytes(8).toString('hex'),
    nonce: randomBytes(8).toString('hex'),
  })) auth.searchParams.set(k, v);
  let res = await go(auth.href);
  let location = res.headers.get('location');
  for (let hops = 0; hops < 10 && location && !location.startsWith(redirectUri); hops++) {
    const url = new URL(location, issuer).href;
    if (/\/interaction\/[^/]+$/.test(new URL(url).pathname)) {
      await go(url); // the login page (sets nothing we need, but behaves like a browser)
      res = await go(url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ prompt: 'login', login, password: 'any' }).toString(),
      });
    } else {
      res = await go(url);
    }
    location = res.headers.get('location');
  }
  if (!location || !location.startsWith(redirectUri)) throw new Error(`the provider did not redirect back (status ${res.status}: ${await res.text()})`);
  const back = new URL(location);
  const code = back.searchParams.get('code');
  if (!code) throw new Error(`no code: ${back.search}`);
  const token = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${Buffer.from(`${encodeURIComponent(client.client_id)}:${encodeURIComponent(client.client_secret)}`).toString('base64')}`,
    },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier }).toString(),
  });
  const body = (await token.json()) as { id_token?: string; error?: string; error_description?: string };
  if (!body.id_token) throw new Error(`no id_token: ${body.error} ${body.error_description}`);
  return body.id_token;
}
