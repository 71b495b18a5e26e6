/**
 * The command tag PostgreSQL reports for a statement (CreateCommandTag in src/backend/tcop/utility.c), from
 * the raw parse tree. One deliberate difference: SELECT ... INTO is reported as `SELECT INTO` (the tag
 * PostgreSQL uses once it has turned it into CREATE TABLE AS), so that rules on `SELECT` do not match it.
 */
import type { AnyNode } from './walker.js';

const OBJECT_TAG: Record<string, string> = {
  OBJECT_AGGREGATE: 'AGGREGATE',
  OBJECT_ATTRIBUTE: 'TYPE',
  OBJECT_CAST: 'CAST',
  OBJECT_COLLATION: 'COLLATION',
  OBJECT_COLUMN: 'TABLE',
  OBJECT_CONVERSION: 'CONVERSION',
  OBJECT_DATABASE: 'DATABASE',
  OBJECT_DOMAIN: 'DOMAIN',
  OBJECT_DOMCONSTRAINT: 'DOMAIN',
  OBJECT_EXTENSION: 'EXTENSION',
  OBJECT_FDW: 'FOREIGN DATA WRAPPER',
  OBJECT_FOREIGN_SERVER: 'SERVER',
  OBJECT_FOREIGN_TABLE: 'FOREIGN TABLE',
  OBJECT_FUNCTION: 'FUNCTION',
  OBJECT_INDEX: 'INDEX',
  OBJECT_LANGUAGE: 'LANGUAGE',
  OBJECT_LARGEOBJECT: 'LARGE OBJECT',
  OBJECT_OPCLASS: 'OPERATOR CLASS',
  OBJECT_OPERATOR: 'OPERATOR',
  OBJECT_OPFAMILY: 'OPERATOR FAMILY',
  OBJECT_POLICY: 'POLICY',
  OBJECT_PROCEDURE: 'PROCEDURE',
  OBJECT_ROLE: 'ROLE',
  OBJECT_ROUTINE: 'ROUTINE',
  OBJECT_RULE: 'RULE',
  OBJECT_SCHEMA: 'SCHEMA',
  OBJECT_SEQUENCE: 'SEQUENCE',
  OBJECT_TABLE: 'TABLE',
  OBJECT_TABCONSTRAINT: 'TABLE',
  OBJECT_TABLESPACE: 'TABLESPACE',
  OBJECT_TRIGGER: 'TRIGGER',
  OBJECT_EVENT_TRIGGER: 'EVENT TRIGGER',
  OBJECT_TSCONFIGURATION: 'TEXT SEARCH CONFIGURATION',
  OBJECT_TSDICTIONARY: 'TEXT SEARCH DICTIONARY',
  OBJECT_TSPARSER: 'TEXT SEARCH PARSER',
  OBJECT_TSTEMPLATE: 'TEXT SEARCH TEMPLATE',
  OBJECT_TYPE: 'TYPE',
  OBJECT_VIEW: 'VIEW',
  OBJECT_MATVIEW: 'MATERIALIZED VIEW',
  OBJECT_PUBLICATION: 'PUBLICATION',
  OBJECT_SUBSCRIPTION: 'SUBSCRIPTION',
  OBJECT_STATISTIC_EXT: 'STATISTICS',
  OBJECT_ACCESS_METHOD: 'ACCESS METHOD',
  OBJECT_TRANSFORM: 'TRANSFORM',
};

function objectTag(verb: 'ALTER' | 'DROP' | 'CREATE', objtype: unknown): string {
  const noun = OBJECT_TAG[objtype as string];
  return noun === undefined ? 'UNKNOWN' : `${verb} ${noun}`;
}

const TRANSACTION_TAG: Record<string, string> = {
  TRANS_STMT_BEGIN: 'BEGIN',
  TRANS_STMT_START: 'START TRANSACTION',
  TRANS_STMT_COMMIT: 'COMMIT',
  TRANS_STMT_ROLLBACK: 'ROLLBACK',
  TRANS_STMT_SAVEPOINT: 'SAVEPOINT',
  TRANS_STMT_RELEASE: 'RELEASE',
  TRANS_STMT_ROLLBACK_TO: 'ROLLBACK',
  TRANS_STMT_PREPARE: 'PREPARE TRANSACTION',
  TRANS_STMT_COMMIT_PREPARED: 'COMMIT PREPARED',
  TRANS_STMT_ROLLBACK_PREPARED: 'ROLLBACK PREPARED',
};

const DISCARD_TAG: Record<string, string> = {
  DISCARD_ALL: 'DISCARD ALL',
  DISCARD_PLANS: 'DISCARD PLANS',
  DISCARD_TEMP: 'DISCARD TEMP',
  DISCARD_SEQUENCES: 'DISCARD SEQUENCES',
};

/** Statement types whose tag never depends on their fields. */
const FIXED_TAG: Record<string, string> = {
  InsertStmt: 'INSERT',
  DeleteStmt: 'DELETE',
  UpdateStmt: 'UPDATE',
  MergeStmt: 'MERGE',
  CreateDomainStmt: 'CREATE DOMAIN',
  CreateSchemaStmt: 'CREATE SCHEMA',
  CreateStmt: 'CREATE TABLE',
  CreateTableSpaceStmt: 'CREATE TABLESPACE',
  DropTableSpaceStmt: 'DROP TABLESPACE',
  AlterTableSpaceOptionsStmt: 'ALTER TABLESPACE',
  CreateExtensionStmt: 'CREATE EXTENSION',
  AlterExtensionStmt: 'ALTER EXTENSION',
  AlterExtensionContentsStmt: 'ALTER EXTENSION',
  CreateFdwStmt: 'CREATE FOREIGN DATA WRAPPER',
  AlterFdwStmt: 'ALTER FOREIGN DATA WRAPPER',
  CreateForeignServerStmt: 'CREATE SERVER',
  AlterForeignServerStmt: 'ALTER SERVER',
  CreateUserMappingStmt: 'CREATE USER MAPPING',
  AlterUserMappingStmt: 'ALTER USER MAPPING',
  DropUserMappingStmt: 'DROP USER MAPPING',
  CreateForeignTableStmt: 'CREATE FOREIGN TABLE',
  ImportForeignSchemaStmt: 'IMPORT FOREIGN SCHEMA',
  TruncateStmt: 'TRUNCATE TABLE',
  CommentStmt: 'COMMENT',
  SecLabelStmt: 'SECURITY LABEL',
  CopyStmt: 'COPY',
  AlterDomainStmt: 'ALTER DOMAIN',
  AlterDefaultPrivilegesStmt: 'ALTER DEFAULT PRIVILEGES',
  CompositeTypeStmt: 'CREATE TYPE',
  CreateEnumStmt: 'CREATE TYPE',
  CreateRangeStmt: 'CREATE TYPE',
  AlterEnumStmt: 'ALTER TYPE',
  ViewStmt: 'CREATE VIEW',
  IndexStmt: 'CREATE INDEX',
  RuleStmt: 'CREATE RULE',
  CreateSeqStmt: 'CREATE SEQUENCE',
  AlterSeqStmt: 'ALTER SEQUENCE',
  DoStmt: 'DO',
  CreatedbStmt: 'CREATE DATABASE',
  AlterDatabaseStmt: 'ALTER DATABASE',
  AlterDatabaseRefreshCollStmt: 'ALTER DATABASE',
  AlterDatabaseSetStmt: 'ALTER DATABASE',
  DropdbStmt: 'DROP DATABASE',
  NotifyStmt: 'NOTIFY',
  ListenStmt: 'LISTEN',
  UnlistenStmt: 'UNLISTEN',
  LoadStmt: 'LOAD',
  CallStmt: 'CALL',
  ClusterStmt: 'CLUSTER',
  ExplainStmt: 'EXPLAIN',
  RefreshMatViewStmt: 'REFRESH MATERIALIZED VIEW',
  AlterSystemStmt: 'ALTER SYSTEM',
  VariableShowStmt: 'SHOW',
  CreateTransformStmt: 'CREATE TRANSFORM',
  CreateTrigStmt: 'CREATE TRIGGER',
  CreateEventTrigStmt: 'CREATE EVENT TRIGGER',
  AlterEventTrigStmt: 'ALTER EVENT TRIGGER',
  CreatePLangStmt: 'CREATE LANGUAGE',
  CreateRoleStmt: 'CREATE ROLE',
  AlterRoleStmt: 'ALTER ROLE',
  AlterRoleSetStmt: 'ALTER ROLE',
  DropRoleStmt: 'DROP ROLE',
  DropOwnedStmt: 'DROP OWNED',
  ReassignOwnedStmt: 'REASSIGN OWNED',
  LockStmt: 'LOCK TABLE',
  ConstraintsSetStmt: 'SET CONSTRAINTS',
  CheckPointStmt: 'CHECKPOINT',
  ReindexStmt: 'REINDEX',
  CreateConversionStmt: 'CREATE CONVERSION',
  CreateCastStmt: 'CREATE CAST',
  CreateOpClassStmt: 'CREATE OPERATOR CLASS',
  CreateOpFamilyStmt: 'CREATE OPERATOR FAMILY',
  AlterOpFamilyStmt: 'ALTER OPERATOR FAMILY',
  AlterOperatorStmt: 'ALTER OPERATOR',
  AlterTypeStmt: 'ALTER TYPE',
  AlterTSDictionaryStmt: 'ALTER TEXT SEARCH DICTIONARY',
  AlterTSConfigurationStmt: 'ALTER TEXT SEARCH CONFIGURATION',
  CreatePolicyStmt: 'CREATE POLICY',
  AlterPolicyStmt: 'ALTER POLICY',
  CreateAmStmt: 'CREATE ACCESS METHOD',
  CreatePublicationStmt: 'CREATE PUBLICATION',
  AlterPublicationStmt: 'ALTER PUBLICATION',
  CreateSubscriptionStmt: 'CREATE SUBSCRIPTION',
  AlterSubscriptionStmt: 'ALTER SUBSCRIPTION',
  DropSubscriptionStmt: 'DROP SUBSCRIPTION',
  AlterCollationStmt: 'ALTER COLLATION',
  PrepareStmt: 'PREPARE',
  ExecuteStmt: 'EXECUTE',
  CreateStatsStmt: 'CREATE STATISTICS',
  AlterStatsStmt: 'ALTER STATISTICS',
};

const DEFINE_TAG: Record<string, string> = {
  OBJECT_AGGREGATE: 'CREATE AGGREGATE',
  OBJECT_OPERATOR: 'CREATE OPERATOR',
  OBJECT_TYPE: 'CREATE TYPE',
  OBJECT_TSPARSER: 'CREATE TEXT SEARCH PARSER',
  OBJECT_TSDICTIONARY: 'CREATE TEXT SEARCH DICTIONARY',
  OBJECT_TSTEMPLATE: 'CREATE TEXT SEARCH TEMPLATE',
  OBJECT_TSCONFIGURATION: 'CREATE TEXT SEARCH CONFIGURATION',
  OBJECT_COLLATION: 'CREATE COLLATION',
  OBJECT_ACCESS_METHOD: 'CREATE ACCESS METHOD',
};

/** The command tag of a statement node (type and body); `UNKNOWN` for a type PostgreSQL has no tag for. */
export function commandTag(type: string, s: AnyNode): string {
  const fixed = FIXED_TAG[type];
  if (fixed !== undefined) return fixed;
  switch (type) {
    case 'SelectStmt':
      return s.intoClause ? 'SELECT INTO' : 'SELECT';
    case 'TransactionStmt':
      return TRANSACTION_TAG[s.kind as string] ?? 'UNKNOWN';
    case 'DeclareCursorStmt':
      return 'DECLARE CURSOR';
    case 'ClosePortalStmt':
      return s.portalname ? 'CLOSE CURSOR' : 'CLOSE CURSOR ALL';
    case 'FetchStmt':
      return s.ismove ? 'MOVE' : 'FETCH';
    case 'DropStmt':
      return objectTag('DROP', s.removeType);
    case 'RenameStmt':
      // Renaming a column or attribute is tagged by the relation's type.
      return objectTag(
        'ALTER',
        s.renameType === 'OBJECT_COLUMN' || s.renameType === 'OBJECT_ATTRIBUTE' ? s.relationType : s.renameType,
      );
    case 'AlterObjectDependsStmt':
    case 'AlterObjectSchemaStmt':
    case 'AlterOwnerStmt':
      return objectTag('ALTER', s.objectType);
    case 'AlterTableMoveAllStmt':
    case 'AlterTableStmt':
      return objectTag('ALTER', s.objtype);
    case 'AlterFunctionStmt':
      return objectTag('ALTER', s.objtype);
    case 'GrantStmt':
      return s.is_grant ? 'GRANT' : 'REVOKE';
    case 'GrantRoleStmt':
      return s.is_grant ? 'GRANT ROLE' : 'REVOKE ROLE';
    case 'DefineStmt':
      return DEFINE_TAG[s.kind as string] ?? 'UNKNOWN';
    case 'CreateFunctionStmt':
      return s.is_procedure ? 'CREATE PROCEDURE' : 'CREATE FUNCTION';
    case 'VacuumStmt':
      return s.is_vacuumcmd ? 'VACUUM' : 'ANALYZE';
    case 'CreateTableAsStmt':
      if (s.objtype === 'OBJECT_MATVIEW') return 'CREATE MATERIALIZED VIEW';
      return s.is_select_into ? 'SELECT INTO' : 'CREATE TABLE AS';
    case 'VariableSetStmt':
      return s.kind === 'VAR_RESET' || s.kind === 'VAR_RESET_ALL' ? 'RESET' : 'SET';
    case 'DiscardStmt':
      return DISCARD_TAG[s.target as string] ?? 'UNKNOWN';
    case 'DeallocateStmt':
      // PostgreSQL 17 added isall; before, DEALLOCATE ALL is the one without a name.
      return s.isall || s.name === undefined ? 'DEALLOCATE ALL' : 'DEALLOCATE';
    default:
      return 'UNKNOWN';
  }
}

/** Rows affected or returned, from a command tag: "SELECT 5" → 5, "INSERT 0 3" → 3; null when the tag has none. */
export function rowsFromTag(tag: string | null): number | null {
  if (!tag) return null;
  if (tag === lastTag) return lastRows;
  const m = /^(?:SELECT|INSERT \d+|UPDATE|DELETE|MERGE|FETCH|MOVE|COPY|CREATE TABLE AS|SELECT INTO) (\d+)$/.exec(tag);
  lastTag = tag;
  lastRows = m ? Number(m[1]) : null;
  return lastRows;
}
/** The last tag read: statements of a workload repeat their tags. */
let lastTag: string | null = null;
let lastRows: number | null = null;
