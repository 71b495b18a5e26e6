/**
 * The console's JSON API from the page: fetch wrappers and the passkey library.
 *
 * Every request carries `X-Stepgate: 1` (the server's CSRF defence) and sends JSON; an error answer
 * becomes an ApiError with the server's message and code. A network failure (stepgate unreachable) is an
 * ApiError with status 0 and code `unreachable`, so callers can tell "refused" from "not there".
 */
import type { ApiErrorBody } from '../protocol.js';

export class ApiError extends Error {
  constructor(
    message: string,
    /** HTTP status; 0 when no answer came. */
    readonly status: number,
    readonly code: string,
  ) {
    super(message);
  }
}

export type Method = 'GET' | 'POST' | 'DELETE';

/** Calls the API; resolves with the answer (typed by the caller with protocol.ts's types). */
export async function api<T = unknown>(method: Method, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { 'X-Stepgate': '1' };
  const init: RequestInit = { method, credentials: 'same-origin', headers };
  if (method !== 'GET') {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body ?? {});
  }
  let res: Response;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError('stepgate is unreachable: check that it is running and that this computer can reach it', 0, 'unreachable');
  }
  let data: unknown = {};
  try {
    data = await res.json();
  } catch {
    data = {};
  }
  if (!res.ok) {
    const e = (data ?? {}) as Partial<ApiErrorBody>;
    throw new ApiError(e.error || `the server answered ${res.status}`, res.status, e.code ?? 'error');
  }
  return data as T;
}

/** The part of the @simplewebauthn/browser bundle (window.SimpleWebAuthnBrowser) the page uses. */
export interface WebAuthnLib {
  browserSupportsWebAuthn(): boolean;
  startAuthentication(options: { optionsJSON: unknown }): Promise<unknown>;
  startRegistration(options: { optionsJSON: unknown }): Promise<unknown>;
}

declare global {
  interface Window {
    SimpleWebAuthnBrowser?: WebAuthnLib;
  }
}

export function webauthn(): WebAuthnLib {
  const lib = window.SimpleWebAuthnBrowser;
  if (!lib || !lib.browserSupportsWebAuthn()) {
    throw new ApiError('This browser cannot use passkeys here. Use a current Chrome, Edge, Firefox or Safari, over https or on localhost.', 0, 'unsupported');
  }
  return lib;
}

/** A sentence for people from any error (passkey ceremonies' DOMExceptions included). */
export function friendly(err: unknown): string {
  const e = err as { name?: string; code?: string; message?: string } | null;
  const name = e?.name;
  if (name === 'NotAllowedError') return 'The passkey request was cancelled or timed out. Try again.';
  if (name === 'InvalidStateError') return 'This passkey is already registered for you.';
  if (name === 'SecurityError') return 'The browser refused passkeys on this address. Open the console at its configured URL.';
  if (e?.code === 'ERROR_CEREMONY_ABORTED') return 'The passkey request was cancelled.';
  return e?.message || String(err);
}

/** The error's HTTP status and code (0 and '' for errors that are not the API's). */
export function errorOf(err: unknown): { status: number; code: string } {
  return err instanceof ApiError ? { status: err.status, code: err.code } : { status: 0, code: (err as { code?: string } | null)?.code ?? '' };
}
