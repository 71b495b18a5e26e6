/**
 * `client:` — CIDR lists matched against the client's IP address. IPv4-mapped IPv6 addresses
 * (`::ffff:10.1.2.3`, what a dual-stack listener reports for IPv4 clients) are matched as the IPv4
 * address they carry, so `10.0.0.0/8` means the same whichever socket the client came in on.
 */
import { BlockList, isIPv4, isIPv6 } from 'node:net';

export interface CidrProblem {
  message: string;
  fix: string;
}

interface ParsedCidr {
  family: 'ipv4' | 'ipv6';
  address: string;
  prefix: number;
}

/** Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address (a single host). */
function parseCidr(text: string): ParsedCidr | CidrProblem {
  const slash = text.indexOf('/');
  const address = slash < 0 ? text : text.slice(0, slash);
  const family = isIPv4(address) ? 'ipv4' : isIPv6(address) ? 'ipv6' : null;
  if (family === null) {
    return {
      message: `\`${text}\` is not an IP address or CIDR range`,
      fix: 'write an address with an optional prefix length, e.g. `10.0.0.0/8`, `192.168.1.7` or `2001:db8::/32`',
    };
  }
  const max = family === 'ipv4' ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const prefixText = text.slice(slash + 1);
    prefix = /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
    if (!(prefix >= 0 && prefix <= max)) {
      return {
        message: `\`${text}\` has prefix length \`/${prefixText}\`; an ${family === 'ipv4' ? 'IPv4' : 'IPv6'} prefix is 0 to ${max}`,
        fix: `write a prefix length from 0 to ${max}`,
      };
    }
  }
  const network = maskAddress(address, family, prefix);
  if (slash >= 0 && !sameAddress(network, address, family)) {
    // 10.1.2.3/8: a range or a host? Refuse to guess.
    return {
      message: `\`${text}\` has bits set after the /${prefix} prefix`,
      fix: `write \`${network}/${prefix}\` for the range, or \`${address}\` for the single host`,
    };
  }
  return { family, address, prefix };
}

/** Why `text` is not a usable CIDR, or null. */
export function cidrProblem(text: string): CidrProblem | null {
  const parsed = parseCidr(text);
  return 'message' in parsed ? parsed : null;
}

export type ClientMatcher = (clientAddress: string) => boolean;

/** One matcher for a validated CIDR list. */
export function compileCidrList(cidrs: readonly string[]): ClientMatcher {
  const list = new BlockList();
  for (const text of cidrs) {
    const parsed = parseCidr(text);
    if ('message' in parsed) throw new Error(`invalid CIDR reached the compiler: ${text}`);
    const mappedV4 = parsed.family === 'ipv6' ? ipv4FromMapped(parsed.address) : null;
    if (mappedV4 !== null && parsed.prefix >= 96) {
      // ::ffff:10.0.0.0/104 is 10.0.0.0/8 written the IPv6 way.
      list.addSubnet(mappedV4, parsed.prefix - 96, 'ipv4');
    }
    list.addSubnet(parsed.address, parsed.prefix, parsed.family);
  }
  return (clientAddress) => {
    const client = normalizeClientAddress(clientAddress);
    return client !== null && list.check(client.address, client.family);
  };
}

let lastRaw = '';
let lastNormalized: { address: string; family: 'ipv4' | 'ipv6' } | null = null;

/**
 * The address to match: IPv4-mapped IPv6 becomes IPv4, an IPv6 zone (`%eth0`) is dropped. Null when the
 * client has no IP address (a Unix socket): then no `client:` pattern matches. One-entry cache because
 * decide() sees the same connection's address over and over.
 */
export function normalizeClientAddress(raw: string): { address: string; family: 'ipv4' | 'ipv6' } | null {
  if (raw === lastRaw) return lastNormalized;
  let result: { address: string; family: 'ipv4' | 'ipv6' } | null = null;
  const address = raw.includes('%') ? raw.slice(0, raw.indexOf('%')) : raw;
  if (isIPv4(address)) result = { address, family: 'ipv4' };
  else if (isIPv6(address)) {
    const v4 = ipv4FromMapped(address);
    result = v4 !== null ? { address: v4, family: 'ipv4' } : { address, family: 'ipv6' };
  }
  lastRaw = raw;
  lastNormalized = result;
  return result;
}

/** `::ffff:1.2.3.4` or `::ffff:102:304` -> `1.2.3.4`; null for any other address. */
function ipv4FromMapped(address: string): string | null {
  const words = expandIPv6(address);
  if (words === null) return null;
  for (let i = 0; i < 5; i++) if (words[i] !== 0) return null;
  if (words[5] !== 0xffff) return null;
  return `${words[6]! >> 8}.${words[6]! & 0xff}.${words[7]! >> 8}.${words[7]! & 0xff}`;
}

/** Eight 16-bit words of a valid IPv6 address (including the dotted-quad tail form). */
export function expandIPv6(address: string): number[] | null {
  if (!isIPv6(address)) return null;
  let text = address.toLowerCase();
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') as [string, string] : [text, null];
  const headWords = head ? head.split(':').map((w) => parseInt(w, 16)) : [];
  const tailWords = tail ? tail.split(':').map((w) => parseInt(w, 16)) : [];
  const zeros = tail === null ? 0 : 8 - headWords.length - tailWords.length;
  return [...headWords, ...new Array<number>(zeros).fill(0), ...tailWords];
}

function maskAddress(address: string, family: 'ipv4' | 'ipv6', prefix: number): string {
  if (family === 'ipv4') {
    const bytes = address.split('.').map(Number);
    return bytes.map((byte, i) => byte & maskByte(prefix - i * 8)).join('.');
  }
  const words = expandIPv6(address)!;
  const masked = words.map((word, i) => {
    const bits = Math.max(0, Math.min(16, prefix - i * 16));
    return bits === 0 ? 0 : word & ((0xffff << (16 - bits)) & 0xffff);
  });
  return compressIPv6(masked);
}

function maskByte(bits: number): number {
  if (bits >= 8) return 0xff;
  if (bits <= 0) return 0;
  return (0xff << (8 - bits)) & 0xff;
}

function sameAddress(a: string, b: string, family: 'ipv4' | 'ipv6'): boolean {
  if (family === 'ipv4') return a === b;
  return expandIPv6(a)!.join(':') === expandIPv6(b)!.join(':');
}

/** Canonical short form (RFC 5952): the longest run of two or more zero words becomes `::`. */
function compressIPv6(words: number[]): string {
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = words.map((word) => word.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}
