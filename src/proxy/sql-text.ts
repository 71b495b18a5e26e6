/**
 * Turning the bytes of a Query or Parse message into the text the server will parse. The server converts
 * from the client encoding first, so the proxy must decode the same way, or refuse to read the text
 * (the statement is then `unknown`, never a read).
 */
import { isUtf8 } from 'node:buffer';

export type DecodedSql =
  | { ok: true; text: string }
  /** The server would refuse these bytes too: answer with this error. */
  | { ok: false; sqlstate: string; message: string; unreadable: false }
  /** The server would read them, but the proxy cannot be sure how: classify as unknown. */
  | { ok: false; sqlstate: string; message: string; unreadable: true };

/** PostgreSQL encoding names → WHATWG labels for encodings where every byte below 0x80 is ASCII. */
const DECODERS: Record<string, string> = {
  LATIN1: 'iso-8859-1',
  LATIN2: 'iso-8859-2',
  LATIN3: 'iso-8859-3',
  LATIN4: 'iso-8859-4',
  LATIN5: 'windows-1254',
  LATIN6: 'iso-8859-10',
  LATIN7: 'iso-8859-13',
  LATIN8: 'iso-8859-14',
  LATIN9: 'iso-8859-15',
  LATIN10: 'iso-8859-16',
  ISO_8859_5: 'iso-8859-5',
  ISO_8859_6: 'iso-8859-6',
  ISO_8859_7: 'iso-8859-7',
  ISO_8859_8: 'iso-8859-8',
  WIN866: 'ibm866',
  WIN874: 'windows-874',
  WIN1250: 'windows-1250',
  WIN1251: 'windows-1251',
  WIN1252: 'windows-1252',
  WIN1253: 'windows-1253',
  WIN1254: 'windows-1254',
  WIN1255: 'windows-1255',
  WIN1256: 'windows-1256',
  WIN1257: 'windows-1257',
  WIN1258: 'windows-1258',
  KOI8R: 'koi8-r',
  KOI8U: 'koi8-u',
  EUC_JP: 'euc-jp',
  EUC_KR: 'euc-kr',
};

const decoders = new Map<string, InstanceType<typeof TextDecoder>>();

function isAscii(bytes: Buffer): boolean {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] >= 0x80) return false;
  return true;
}

/**
 * Decodes SQL text as the server will see it. `clientEncoding` and `serverEncoding` are the values the
 * server reported (ParameterStatus), e.g. "UTF8". `asciiOnly` when the encoding may be changing.
 */
export function decodeSql(
  bytes: Buffer,
  { clientEncoding, serverEncoding, asciiOnly }: { clientEncoding: string; serverEncoding: string; asciiOnly: boolean },
): DecodedSql {
  if (asciiOnly) {
    if (isAscii(bytes)) return { ok: true, text: bytes.toString('latin1') };
    return {
      ok: false,
      sqlstate: '0A000',
      message: 'stepgate cannot read non-ASCII SQL sent while a change of client_encoding is in flight; send it after the server answered',
      unreadable: true,
    };
  }
  // The server reports canonical names (UTF8, LATIN1, EUC_JP ...). SQL_ASCII on the client side means no
  // conversion: the server checks the bytes in its own encoding.
  let encoding = clientEncoding.toUpperCase();
  if (encoding === 'SQL_ASCII') encoding = serverEncoding.toUpperCase();
  if (encoding === 'UTF8') {
    if (isUtf8(bytes)) return { ok: true, text: bytes.toString('utf8') };
    return { ok: false, sqlstate: '22021', message: 'invalid byte sequence for encoding "UTF8"', unreadable: false };
  }
  if (isAscii(bytes)) return { ok: true, text: bytes.toString('latin1') };
  const label = DECODERS[encoding];
  if (!label) {
    // SJIS, BIG5, GBK, UHC, GB18030, JOHAB: their second bytes can look like ASCII quotes or backslashes,
    // and SQL_ASCII everywhere gives no encoding at all. Reading them wrongly could hide a statement.
    return {
      ok: false,
      sqlstate: '0A000',
      message: `stepgate cannot read non-ASCII SQL in client encoding ${clientEncoding}; use client_encoding UTF8`,
      unreadable: true,
    };
  }
  let decoder = decoders.get(label);
  if (!decoder) {
    decoder = new TextDecoder(label, { fatal: true });
    decoders.set(label, decoder);
  }
  try {
    return { ok: true, text: decoder.decode(bytes) };
  } catch {
    return { ok: false, sqlstate: '22021', message: `invalid byte sequence for encoding "${encoding}"`, unreadable: false };
  }
}
