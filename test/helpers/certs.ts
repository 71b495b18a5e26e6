/**
 * A throwaway self-signed certificate for localhost / 127.0.0.1, made with openssl at test time and removed
 * when the test ends.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface TestCert {
  dir: string;
  certFile: string;
  keyFile: string;
  cert: string;
  key: string;
}

export function makeCert(t: { teardown(fn: () => unknown): void }, commonName = 'localhost'): TestCert {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-cert-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const certFile = path.join(dir, 'cert.pem');
  const keyFile = path.join(dir, 'key.pem');
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${commonName}`, '-days', '1', '-keyout', keyFile, '-out', certFile,
      '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'],
    { stdio: 'ignore' },
  );
  return { dir, certFile, keyFile, cert: fs.readFileSync(certFile, 'utf8'), key: fs.readFileSync(keyFile, 'utf8') };
}
