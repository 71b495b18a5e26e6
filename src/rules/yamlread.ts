/**
 * Reading YAML with positions: a thin layer over the `yaml` package's Document API that turns nodes into
 * typed values and every problem into a RuleError with file:line:column. Shared by rule files and
 * rule-test files so both report mistakes the same way.
 */
import { Document, isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, visit, type Node, type Pair, type YAMLMap } from 'yaml';
import { didYouMean, type RuleError, type SourcePosition } from './errors.js';

export type YamlNode = Node;

export interface MapEntry {
  key: string;
  keyNode: YamlNode;
  /** Null when the key has no value at all (`match:` followed by nothing). */
  value: YamlNode | null;
}

/** Where to send someone who put a key at the wrong level: key -> fix. */
export type KeyHints = Record<string, string>;

export class YamlReader {
  readonly errors: RuleError[] = [];
  readonly document: Document.Parsed;
  private readonly lines = new LineCounter();
  /** `*name` with no `&name` anchor: reported once here, and not again as "must be text, not nothing". */
  private readonly unresolvedAliases = new Set<YamlNode>();

  constructor(
    /** Path shown in errors. */
    readonly file: string,
    source: string,
  ) {
    this.document = parseDocument(source, {
      lineCounter: this.lines,
      prettyErrors: false,
      uniqueKeys: true,
      merge: false,
      strict: true,
    });
    for (const problem of [...this.document.errors, ...this.document.warnings]) {
      this.errors.push({ ...this.position(problem.pos[0]), ...describeYamlProblem(problem.code, problem.message) });
    }
    if (this.document.errors.length === 0) {
      visit(this.document, {
        Alias: (_key, alias) => {
          if (alias.resolve(this.document) !== undefined) return;
          this.unresolvedAliases.add(alias as YamlNode);
          this.errors.push({
            ...this.at(alias as YamlNode),
            message: `\`*${alias.source}\` is read as a YAML alias (a reference to an \`&${alias.source}\` anchor), and there is no such anchor`,
            fix: `quote values that start with \`*\`: write \`"*${alias.source}"\``,
          });
        },
      });
    }
  }

  /** The document's top node, or null when the document is empty or did not parse. */
  get root(): YamlNode | null {
    if (this.document.errors.length > 0) return null;
    const contents = this.document.contents;
    if (contents === null || (isScalar(contents) && contents.value === null)) return null;
    return contents as YamlNode;
  }

  position(offset: number): SourcePosition {
    const { line, col } = this.lines.linePos(offset);
    return { file: this.file, line, column: col };
  }

  at(node: YamlNode | null | undefined, fallback?: YamlNode | null): SourcePosition {
    const range = node?.range ?? fallback?.range;
    return this.position(range ? range[0] : 0);
  }

  error(node: YamlNode | null | undefined, message: string, fix: string, fallback?: YamlNode | null): void {
    if (node && this.unresolvedAliases.has(node)) return; // Already reported as an alias.
    this.errors.push({ ...this.at(node, fallback), message, fix });
  }

  /** Follows `*alias` to the anchored node. */
  deref(node: YamlNode | null): YamlNode | null {
    if (node !== null && isAlias(node)) return (node.resolve(this.document) as YamlNode | undefined) ?? node;
    return node;
  }

  /** The entries of a mapping, or null (with an error) when `node` is not one. */
  mapEntries(node: YamlNode | null, what: string, example: string, fallback?: YamlNode | null): MapEntry[] | null {
    const target = this.deref(node);
    if (target === null || !isMap(target)) {
      this.error(target, `${what} must be a mapping (key: value lines), not ${describe(target)}`, `write it like ${example}`, fallback);
      return null;
    }
    const entries: MapEntry[] = [];
    for (const pair of (target as YAMLMap<unknown, unknown>).items as Array<Pair<unknown, unknown>>) {
      const keyNode = pair.key as YamlNode | null;
      if (!isScalar(keyNode) || typeof keyNode.value !== 'string') {
        this.error(keyNode, `keys in ${what} must be plain words, not ${describe(keyNode)}`, 'use one of the keys listed in docs/rules.md', target);
        continue;
      }
      entries.push({ key: keyNode.value, keyNode, value: (pair.value as YamlNode | null) ?? null });
    }
    return entries;
  }

  /** Reports keys not in `allowed`, with a hint or the nearest valid key. Returns the entries that are allowed. */
  checkKeys(entries: MapEntry[], allowed: readonly string[], where: string, hints: KeyHints = {}): MapEntry[] {
    const known: MapEntry[] = [];
    for (const entry of entries) {
      if (allowed.includes(entry.key)) {
        known.push(entry);
        continue;
      }
      const hint = hints[entry.key];
      const suggestion = didYouMean(entry.key, allowed);
      this.error(
        entry.keyNode,
        `unknown key \`${entry.key}\` in ${where}`,
        hint ?? (suggestion || `valid keys are: ${allowed.join(', ')}`),
      );
    }
    return known;
  }

  /** A text value. Numbers and booleans are refused: `name: 1` or `from: 9` are mistakes, not names. */
  string(entry: MapEntry, what: string, example: string): string | null {
    const node = this.deref(entry.value);
    if (isScalar(node) && typeof node.value === 'string') return node.value;
    this.error(node, `${what} must be text, not ${describe(node)}`, `write it like ${example}`, entry.keyNode);
    return null;
  }

  boolean(entry: MapEntry, what: string): boolean | null {
    const node = this.deref(entry.value);
    if (isScalar(node) && typeof node.value === 'boolean') return node.value;
    this.error(node, `${what} must be true or false, not ${describe(node)}`, `write \`${entry.key}: true\` or \`${entry.key}: false\``, entry.keyNode);
    return null;
  }

  integer(entry: MapEntry, what: string): number | null {
    const node = this.deref(entry.value);
    if (isScalar(node) && typeof node.value === 'number' && Number.isInteger(node.value)) return node.value;
    this.error(node, `${what} must be a whole number, not ${describe(node)}`, `write it like \`${entry.key}: 2\``, entry.keyNode);
    return null;
  }

  /**
   * A list of texts; a single text is accepted as a one-item list. An empty list is an error: it would
   * match nothing, so the rule would silently never apply.
   */
  stringList(entry: MapEntry, what: string, example: string): Array<{ value: string; node: YamlNode }> | null {
    const node = this.deref(entry.value);
    if (isScalar(node) && typeof node.value === 'string') return [{ value: node.value, node }];
    if (node !== null && isSeq(node)) {
      if (node.items.length === 0) {
        this.error(node, `${what} is an empty list, which matches nothing`, `add values, or remove \`${entry.key}\` to match any`);
        return null;
      }
      const values: Array<{ value: string; node: YamlNode }> = [];
      let ok = true;
      for (const raw of node.items as Array<YamlNode | null>) {
        const item = this.deref(raw);
        if (isScalar(item) && typeof item.value === 'string') values.push({ value: item.value, node: item });
        else {
          this.error(item, `items of ${what} must be text, not ${describe(item)}`, `write it like ${example}; quote values such as \`"1"\``, node);
          ok = false;
        }
      }
      return ok ? values : null;
    }
    this.error(node, `${what} must be a value or a list of values, not ${describe(node)}`, `write it like ${example}`, entry.keyNode);
    return null;
  }

  /** Items of a list; a single item is accepted as a one-item list (for `time:`). */
  nodeList(entry: MapEntry): YamlNode[] {
    const node = this.deref(entry.value);
    if (node !== null && isSeq(node)) return (node.items as Array<YamlNode | null>).map((item) => this.deref(item) ?? node);
    return node === null ? [] : [node];
  }
}

/** `a mapping`, `a list`, `the number 3`, ... for "must be X, not Y" messages. */
export function describe(node: YamlNode | null | undefined): string {
  if (node === null || node === undefined) return 'nothing';
  if (isMap(node)) return 'a mapping';
  if (isSeq(node)) return 'a list';
  if (isScalar(node)) {
    const value = node.value;
    if (value === null) return 'nothing';
    if (typeof value === 'number') return `the number ${value}`;
    if (typeof value === 'boolean') return `\`${value}\``;
    if (typeof value === 'string') return `the text \`${value}\``;
  }
  return 'something else';
}

/** The `yaml` package's messages, shortened to their first sentence, with a fix for the usual codes. */
function describeYamlProblem(code: string, message: string): { message: string; fix: string } {
  const first = message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
  const fixes: Record<string, string> = {
    DUPLICATE_KEY: 'keep one of the keys; each key may appear once in a mapping',
    BAD_INDENT: 'line up the keys of one mapping at the same indentation, using spaces',
    TAB_AS_INDENT: 'indent with spaces, not tabs',
    MULTIPLE_DOCS: 'keep one document per file: remove the `---` line or split the file',
    TAG_RESOLVE_FAILED: 'remove the `!tag`: rule files use plain values',
    BAD_ALIAS: 'a value starting with `*` is read as a YAML alias: quote it, e.g. `"*"` or `"*_audit"`',
    MISSING_CHAR: 'close the quote or bracket that was opened',
    MULTILINE_IMPLICIT_KEY: 'put a key and its `:` on one line, or quote a value that contains `: `',
    BLOCK_AS_IMPLICIT_KEY: 'check the indentation and that each `key:` is followed by a space',
    UNEXPECTED_TOKEN: 'check the syntax near this position (a stray character, or a value that needs quotes)',
    BAD_SCALAR_START: 'quote values that start with `@`, `` ` `` or other reserved characters',
  };
  const unclosed = /end with an? ([\]}])/.exec(first);
  const fix = unclosed
    ? unclosed[1] === ']'
      ? 'close the `[` with `]`, or write the list as `- item` lines'
      : 'close the `{` with `}`, or write the keys as indented `key: value` lines'
    : fixes[code];
  return { message: `YAML syntax: ${first}`, fix: fix ?? 'fix the YAML syntax near this position' };
}
