/**
 * Built-in relations (pg_catalog, OID below 16384) whose reading is more than a read. Every other built-in
 * relation is a plain read: initdb created it, and its query (for views) calls only built-ins.
 *
 * - The config-file views return what their admin-class functions return: the server's configuration files.
 * - Credentials and raw values only superusers see: password hashes (pg_authid.rolpassword, pg_shadow),
 *   user-mapping options with remote passwords (pg_user_mapping.umoptions, pg_user_mappings), connection
 *   strings of subscriptions (pg_subscription.subconninfo), raw column statistics (pg_statistic,
 *   pg_statistic_ext_data: most common values, histograms, i.e. data of every table), and large-object data
 *   (pg_largeobject). They are `admin` (like server files: what the server keeps from everyone but its
 *   superusers) and flagged `secrets`, which the shipped rules step up on its own.
 * - Views over them that anyone may read but that show more to a superuser (stepgate's upstream may be
 *   one): pg_stats and friends (most common values of every column: data read past any rule on tables or
 *   columns), information_schema.user_mapping_options (remote passwords).
 */
import { Effects } from './effects.js';

type Disclosure = 'server_files' | 'secrets';

const BUILTIN_RELATIONS: ReadonlyMap<string, Disclosure> = new Map<string, Disclosure>([
  ['pg_file_settings', 'server_files'],
  ['pg_hba_file_rules', 'server_files'],
  ['pg_ident_file_mappings', 'server_files'],
  ['pg_authid', 'secrets'],
  ['pg_shadow', 'secrets'],
  ['pg_user_mapping', 'secrets'],
  ['pg_user_mappings', 'secrets'],
  ['pg_subscription', 'secrets'],
  ['pg_statistic', 'secrets'],
  ['pg_statistic_ext_data', 'secrets'],
  ['pg_largeobject', 'secrets'],
  ['pg_stats', 'secrets'],
  ['pg_stats_ext', 'secrets'],
  ['pg_stats_ext_exprs', 'secrets'],
  ['information_schema.user_mapping_options', 'secrets'],
  ['information_schema._pg_user_mappings', 'secrets'],
]);

/**
 * What reading the built-in relation `schema.name` (pg_catalog or information_schema) does beyond reading;
 * null for a plain read.
 */
export function builtinRelationEffects(name: string, schema = 'pg_catalog'): Effects | null {
  const qualified = schema === 'pg_catalog' ? name : `${schema}.${name}`;
  const kind = BUILTIN_RELATIONS.get(qualified);
  if (kind === undefined) return null;
  const e = new Effects();
  if (kind === 'server_files') {
    e.addClass('admin', `${schema}.${name} shows the server's configuration files`);
    e.addFlag('server_files');
  } else {
    e.addClass('admin', `${schema}.${name} holds credentials or raw data only superusers may see`);
    e.addFlag('secrets');
  }
  return e;
}
