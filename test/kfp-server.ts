/**
 * A KFP-faithful fake of the Kubeflow Pipelines API server, in memory: the v2beta1 pipeline, experiment and
 * recurring-run routes, the upload routes and healthz. Tests, benchmarks and the README demo run kfp-sync
 * against it because no real KFP server runs here.
 *
 * Behaviour follows the recorded contract of the real server, release 2.17.0
 * (test/contracts/kfp-apiserver-2.17.0; test/kfp-contract.test.ts replays every case against this file).
 * Rules name the upstream file they come from, relative to backend/src/apiserver/. Known differences:
 * - An upload that is not YAML at all is answered 400 `unknown template format`; the real server never
 *   answers it (its YAML check loops), which a test server must not copy.
 * - Only .yaml/.yml/.json uploads; upstream also unpacks .zip and .tar.gz. Argo (v1) workflows are rejected.
 * - String filters and sorting compare bytes (as the recording's sqlite did); MySQL's collation may not.
 * - Identity (multi-user): the `kubeflow-userid` header, or any bearer token as user `test` (the recording's
 *   TokenReview stand-in); `deniedUsers` stands in for RBAC refusing a user.
 * - `token` models an auth proxy in front of the server (401 on every route without that bearer token).
 * - Recurring runs are stored, never scheduled; nothing runs.
 */
import { createServer, STATUS_CODES } from "node:http";
import { parseAllDocuments } from "yaml";

// ---------------------------------------------------------------------------------------------------------
// Types: API objects exactly as the server's JSON carries them (proto field names, empty fields left out)

export interface Pipeline {
  pipeline_id: string;
  display_name: string;
  name: string;
  description?: string;
  created_at: string;
  namespace?: string;
  tags?: Record<string, string>;
}

export interface PipelineVersion {
  pipeline_id: string;
  pipeline_version_id: string;
  display_name: string;
  name: string;
  description?: string;
  created_at: string;
  package_url?: { pipeline_url: string };
  code_source_url?: string;
  /** The IR document, or `{pipeline_spec, platform_spec}` when the upload carried a platform spec too. */
  pipeline_spec?: Record<string, unknown>;
  tags?: Record<string, string>;
}

export interface KfpServerOptions {
  /** 0 (default) picks a free port. */
  port?: number;
  /** Require `Authorization: Bearer <token>` on every route, else 401. */
  token?: string;
  /** Multi-user mode: namespaces are kept and scope pipelines, namespaced ones need an identity; healthz reports multi_user. */
  multiUser?: boolean;
  /**
   * REQUIRE_NAMESPACE_FOR_PIPELINES: in multi-user mode an empty namespace is a 400. Default false, as in the
   * stock manifests: a pipeline without a namespace is then a shared one.
   */
  requireNamespace?: boolean;
  /** Multi-user: users the authorizer refuses (403), standing in for RBAC. */
  deniedUsers?: string[];
  /** healthz tag_name (default 2.17.0, the release the contract was recorded from). */
  version?: string;
  /** healthz commit_sha (default: the 2.17.0 release commit). */
  commitSha?: string;
  /** One stderr line per request: method, path, status. */
  log?: boolean;
}

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: Record<string, string>;
  /** Uploads: the uploaded file's text. JSON routes: the request body. */
  body?: string;
  filename?: string;
  status: number;
}

export interface KfpServer {
  url: string;
  requests: RecordedRequest[];
  stop(): Promise<void>;
  /** The next `times` (default 1) requests whose `METHOD /path` matches `route` get `status` (and `body`). */
  failNext(route: RegExp, status: number, times?: number, body?: string): void;
  state(): { pipelines: Pipeline[]; versions: PipelineVersion[] };
  reset(): void;
}

interface PipelineRow {
  id: string;
  name: string;
  displayName: string;
  description: string;
  namespace: string;
  /** CreatedAtInSec: whole seconds; rows of the same second are ordered by id. */
  createdSec: number;
  tags?: Record<string, string>;
}

interface VersionRow {
  id: string;
  pipelineId: string;
  name: string;
  displayName: string;
  description: string;
  createdSec: number;
  specYaml: string;
  spec: Record<string, unknown>;
  codeSourceUrl: string;
  packageUrl: string;
  tags?: Record<string, string>;
}

type Json = Record<string, unknown>;

const MAX_FILE_BYTES = 32 << 20; // server/util.go MaxFileLength; one byte more is rejected
const DEFAULT_PAGE_SIZE = 20; // list/list.go
const MAX_PAGE_SIZE = 200; // list/list.go: larger sizes are capped, not rejected
const MAX_LENGTH = { "Pipeline.Name": 128, "PipelineVersion.Name": 127, "Pipeline.Namespace": 63 }; // validation/length.go
const UPLOAD_ROUTE = /^\/apis\/v2beta1\/pipelines\/(upload|upload_version)$/;

// ---------------------------------------------------------------------------------------------------------
// Errors: common/util/error.go UserError — a gRPC code, the wrapped internal chain, a clean external message

class UserError extends Error {
  constructor(
    readonly code: number,
    readonly internal: string,
    readonly external: string,
    readonly bare = false, // raised by grpc-gateway itself: no google.rpc.Status detail
  ) {
    super(internal);
  }
  wrap(context: string): UserError {
    return new UserError(this.code, `${context}: ${this.internal}`, this.external, this.bare);
  }
}

/** A filter that is not JSON: the list handlers meet it first, in their tag-filter step. */
class FilterSyntaxError extends UserError {
  constructor(msg: string) {
    super(3, `Invalid input error: ${msg}`, msg);
  }
}

const invalidInput = (msg: string) => new UserError(3, `Invalid input error: ${msg}`, msg);
const invalidSpec = (msg: string, cause = "pipeline spec is invalid") =>
  new UserError(3, `InvalidInputError: ${msg}: ${cause}`, msg);
const notFound = (type: string, name: string) =>
  new UserError(5, `ResourceNotFoundError: ${type} ${name} not found`, `${type} ${name} not found`);
const alreadyExists = (msg: string) => new UserError(6, `Already exist error: ${msg}`, msg);
const internalError = (msg: string) => new UserError(13, `InternalServerError: ${msg}`, "Internal Server Error");
const NO_IDENTITY = "Request header error: there is no user identity header.";
const unauthenticated = () =>
  new UserError(
    16,
    `Unauthenticated: Failed to check authorization. User identity is empty in the request header: Unauthenticated: ${NO_IDENTITY}: ${NO_IDENTITY}`,
    "Failed to check authorization. User identity is empty in the request header",
  );
/** resource_manager.go IsAuthorized: a SubjectAccessReview refused. */
const permissionDenied = (user: string, attributes: string) => {
  const external = `User '${user}' is not authorized with reason:  (request: &ResourceAttributes{${attributes}})`;
  return new UserError(7, `PermissionDenied: ${external}: Unauthorized access`, external);
};

// grpc-gateway v2 HTTPStatusFromCode
const HTTP_STATUS: Record<number, number> = { 3: 400, 5: 404, 6: 409, 7: 403, 9: 400, 10: 409, 12: 501, 13: 500, 14: 503, 16: 401 };

function json(status: number, body: unknown, contentType = "application/json"): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": contentType } });
}

/** grpc-gateway v2 error body: the wrapped chain as message, the clean message in a google.rpc.Status detail. */
function gatewayError(err: UserError): Response {
  const details = [{ "@type": "type.googleapis.com/google.rpc.Status", code: err.code, message: err.external }];
  return json(HTTP_STATUS[err.code] ?? 500, err.bare ? { code: err.code, message: err.internal } : { code: err.code, message: err.internal, details });
}

/**
 * server/pipeline_upload_server.go writeErrorToResponse: {error_message, error_details}, the details being
 * "%+v" of a pkg/errors error, i.e. the message plus a Go stack. Errors written before the handler sets
 * Content-Type get Go's sniffed text/plain although the body is JSON.
 */
function uploadError(status: number, message: string, sniffed = true): Response {
  const stack = "github.com/kubeflow/pipelines/backend/src/apiserver/server.(*PipelineUploadServer).ServeHTTP\n\t/go/src/github.com/kubeflow/pipelines/backend/src/apiserver/server/pipeline_upload_server.go";
  const body = { error_message: message, error_details: `${message}\n${stack}` };
  return json(status, body, sniffed ? "text/plain; charset=utf-8" : "application/json");
}

/** http.Error in the upload handlers: plain text with a trailing newline. */
function plainError(err: UserError): Response {
  return new Response(`${err.internal}\n`, {
    status: 400,
    headers: { "content-type": "text/plain; charset=utf-8", "x-content-type-options": "nosniff" },
  });
}

// ---------------------------------------------------------------------------------------------------------
// Pipeline templates: template/template.go and template/v2_template.go

const SPEC_FIELDS = new Set(["pipelineInfo", "pipeline_info", "deploymentSpec", "deployment_spec", "sdkVersion", "sdk_version", "schemaVersion", "schema_version", "components", "root", "defaultPipelineRoot", "default_pipeline_root"]);
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
/** protojson accepts a field under its JSON name and its proto name. */
const field = (o: Json, camel: string, snake: string) => o[camel] ?? o[snake];
const tryJson = (text: string): unknown => {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
};

/** A document counts as IR only if it parses as a PipelineSpec proto with a pipelineInfo.name and a root. */
function isPipelineSpec(doc: unknown): doc is Json {
  if (!isObject(doc) || !Object.keys(doc).every((k) => SPEC_FIELDS.has(k))) return false;
  const info = field(doc, "pipelineInfo", "pipeline_info");
  const schema = field(doc, "schemaVersion", "schema_version");
  return isObject(info) && typeof info.name === "string" && info.name !== "" && isObject(doc.root) && (schema === undefined || typeof schema === "string");
}

const isPlatformSpec = (doc: unknown): doc is Json =>
  isObject(doc) && Object.keys(doc).every((k) => k === "platforms") && isObject(doc.platforms) && "kubernetes" in doc.platforms;

/** Returns the spec as GetPipelineVersion shows it (server/api_converter.go YamlStringToPipelineSpecStruct). */
function parseTemplate(text: string): Record<string, unknown> {
  // An empty file fails below the template checks, as a server error (500), not as invalid input.
  if (text.length === 0) throw internalError("Failed to parse the pipeline template: empty file");
  const docs = parseAllDocuments(text);
  const values = (Array.isArray(docs) ? docs : [docs]).map((d) => (d.errors.length ? undefined : d.toJS()));
  if (!values.some(isPipelineSpec)) throw invalidSpec("unknown template format");
  let spec: Json | undefined;
  let platform: Json | undefined;
  for (const doc of values) {
    if (isPipelineSpec(doc)) {
      if (spec) throw invalidSpec("multiple pipeline specs provided");
      const version = field(doc, "schemaVersion", "schema_version") ?? "";
      if (version !== "2.1.0") throw invalidSpec(`KFP only supports schema version 2.1.0, but the pipeline spec has version ${version}`);
      const name = String((field(doc, "pipelineInfo", "pipeline_info") as Json).name);
      // v2_template.go matches this pattern unanchored, so any lowercase letter or digit passes here.
      if (!/[a-z0-9]/.test(name)) throw invalidSpec("invalid v2 pipeline spec: name should consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character");
      validatePipelineName(name);
      spec = doc;
    } else if (isPlatformSpec(doc)) {
      if (platform) throw invalidSpec("multiple platform specs provided", "Platform spec is invalid");
      platform = doc;
    }
  }
  return platform ? { pipeline_spec: spec, platform_spec: platform } : spec!;
}

/** common/utils.go ValidatePipelineName: the IR's pipelineInfo.name must suit MLMD; the KFP name need not. */
function validatePipelineName(name: string): void {
  if (name.length > 128) throw invalidInput("pipeline's name must contain no more than 128 characters");
  if (!/^[a-z0-9][a-z0-9-]{0,127}$/.test(name)) {
    throw invalidInput("pipeline's name must contain only lowercase alphanumeric characters or '-' and must start with alphanumeric characters");
  }
}

function checkLength(column: keyof typeof MAX_LENGTH, value: string): void {
  const max = MAX_LENGTH[column];
  // Go's len(): bytes, so 43 three-byte characters are over 128.
  if (Buffer.byteLength(value) > max) throw invalidInput(`${column} length cannot exceed ${max}`);
}

// ---------------------------------------------------------------------------------------------------------
// Listing: list/list.go (paging, sorting, page tokens) and filter/filter.go (predicates)

/** How a listable model is named in page tokens and messages, and which API fields sort and filter it. */
interface Listable<R> {
  type: string; // "Pipeline", in "Invalid sorting field ... on listable type Pipeline"
  table: string; // the model's table: page tokens carry it as ModelName and column prefix
  fields: Record<string, FieldGetter<R>>;
  /** API field → model column, for page tokens (list.go SortByFieldName / SortBySQLColumn). */
  columns: Record<string, string>;
}

type FieldGetter<R> = (row: R) => string | number;
interface Row { id: string; createdSec: number; tags?: Record<string, string> }

const PIPELINES: Listable<PipelineRow> = {
  type: "Pipeline", table: "pipelines",
  fields: {
    id: (r) => r.id, pipeline_id: (r) => r.id, name: (r) => r.name, display_name: (r) => r.displayName,
    created_at: (r) => r.createdSec, description: (r) => r.description, namespace: (r) => r.namespace,
  },
  columns: { id: "UUID", pipeline_id: "UUID", name: "Name", display_name: "DisplayName", created_at: "CreatedAtInSec", description: "Description", namespace: "Namespace" },
};
const VERSIONS: Listable<VersionRow> = {
  type: "PipelineVersion", table: "pipeline_versions",
  fields: {
    id: (r) => r.id, pipeline_version_id: (r) => r.id, name: (r) => r.name, display_name: (r) => r.displayName,
    created_at: (r) => r.createdSec, status: () => "READY", description: (r) => r.description, pipeline_spec: (r) => r.specYaml,
  },
  columns: { id: "UUID", pipeline_version_id: "UUID", name: "Name", display_name: "DisplayName", created_at: "CreatedAtInSec", status: "Status", description: "Description", pipeline_spec: "PipelineSpec" },
};

const OPERATIONS = new Set(["EQUALS", "NOT_EQUALS", "GREATER_THAN", "GREATER_THAN_EQUALS", "LESS_THAN", "LESS_THAN_EQUALS", "IN", "IS_SUBSTRING"]);
const OPERATION_NUMBERS: Record<number, string> = { 0: "OPERATION_UNSPECIFIED", 1: "EQUALS", 2: "NOT_EQUALS", 3: "GREATER_THAN", 5: "GREATER_THAN_EQUALS", 6: "LESS_THAN", 7: "LESS_THAN_EQUALS", 8: "IN", 9: "IS_SUBSTRING" };
const VALUE_FIELDS = new Set(["int_value", "long_value", "string_value", "timestamp_value", "int_values", "long_values", "string_values"]);
const protoName = (key: string) => key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

interface Predicate { key: string; operation: string; value: string | number | (string | number)[] }

/** Where JSON text first goes wrong, as (line, column) and the offending token. */
function jsonSyntaxError(text: string): { line: number; col: number; token: string; eof: boolean; inKey: boolean } {
  let i = 0;
  const ws = () => { while (/\s/.test(text[i] ?? "")) i++; };
  const fail = (inKey = false): never => {
    const before = text.slice(0, i).split("\n");
    const token = /^[^\s,:{}[\]"]+/.exec(text.slice(i))?.[0] ?? text[i] ?? "";
    throw { line: before.length, col: before.at(-1)!.length + 1, token, eof: i >= text.length, inKey };
  };
  const str = () => {
    if (text[i] !== '"') fail();
    i++;
    while (i < text.length && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
    if (i >= text.length) fail();
    i++;
  };
  const value = (): void => {
    ws();
    const c = text[i];
    if (c === "{") {
      i++; ws();
      if (text[i] === "}") { i++; return; }
      for (;;) {
        ws();
        if (text[i] !== '"') fail(true);
        str(); ws();
        if (text[i] !== ":") fail();
        i++; value(); ws();
        if (text[i] === ",") { i++; continue; }
        if (text[i] === "}") { i++; return; }
        fail();
      }
    } else if (c === "[") {
      i++; ws();
      if (text[i] === "]") { i++; return; }
      for (;;) {
        value(); ws();
        if (text[i] === ",") { i++; continue; }
        if (text[i] === "]") { i++; return; }
        fail();
      }
    } else if (c === '"') str();
    else {
      const m = /^(true|false|null|-?\d+(\.\d+)?([eE][-+]?\d+)?)/.exec(text.slice(i));
      if (!m) fail();
      i += m![0].length;
    }
  };
  try {
    value();
    ws();
    if (i < text.length) fail();
  } catch (e) {
    return e as ReturnType<typeof jsonSyntaxError>;
  }
  return { line: 1, col: 1, token: "", eof: true, inKey: false };
}

/** protojson's wording for text that is not JSON. */
function protoSyntaxError(text: string): string {
  const e = jsonSyntaxError(text);
  return e.eof ? "proto: syntax error (line 1:1): unexpected token" : `proto: syntax error (line ${e.line}:${e.col}): invalid value ${e.token}`;
}

/** The filter query value is parsed strictly as a v2beta1 Filter (protojson: unknown fields refused). */
function parseFilter(raw: string, keys: string[]): Predicate[] {
  const parsed = tryJson(raw);
  if (!isObject(parsed)) throw new FilterSyntaxError(`failed to parse filter spec: ${protoSyntaxError(raw)}`);
  const unknownTop = Object.keys(parsed).find((k) => k !== "predicates");
  if (unknownTop) throw invalidInput(`failed to parse filter spec: proto: unknown field "${unknownTop}"`);
  return ((parsed.predicates ?? []) as Json[]).map((p) => {
    const unknown = Object.keys(p).find((k) => k !== "key" && k !== "operation" && !VALUE_FIELDS.has(protoName(k)));
    if (unknown) throw invalidInput(`failed to parse filter spec: proto: unknown field "${unknown}"`);
    const key = String(p.key ?? "");
    // protojson takes an enum by name or by number; kfp.Client sends numbers (EQUALS = 1).
    const operation = typeof p.operation === "number" ? (OPERATION_NUMBERS[p.operation] ?? String(p.operation)) : String(p.operation ?? "OPERATION_UNSPECIFIED");
    const valueField = Object.keys(p).find((k) => VALUE_FIELDS.has(protoName(k)));
    if (!valueField) throw invalidInput(`no value set for predicate on key "${key}"`);
    const kind = protoName(valueField);
    const rawValue = p[valueField];
    const array = kind.endsWith("_values");
    const toValue = (v: unknown) => (kind.startsWith("timestamp") ? Math.floor(Date.parse(String(v)) / 1000) : kind.startsWith("string") ? String(v) : Number(v));
    const value = array ? (((rawValue as Json)?.values ?? []) as unknown[]).map(toValue) : toValue(rawValue);
    if (key.startsWith("tags.")) {
      if (operation !== "EQUALS") throw invalidInput(`only EQUALS operation is supported for tag filtering, got ${operation} for key "${key}"`);
      return { key, operation, value };
    }
    if (!keys.includes(key)) throw invalidInput(`no support for filtering on unrecognized field "${key}"`);
    if (!OPERATIONS.has(operation)) throw invalidInput(`invalid predicate operation: ${operation}`);
    if (operation === "IN" && !array) throw invalidInput(`cannot use IN operator with scalar type ${kind}`);
    if (operation !== "IN" && array) throw invalidInput(`cannot use scalar operator ${operation} on array type ${kind}`);
    if (operation === "IS_SUBSTRING" && kind !== "string_value") throw invalidInput(`cannot use non string value type ${kind} with operator IS_SUBSTRING`);
    return { key, operation, value };
  });
}

/** Byte order, as sqlite compares (upper case before lower case). */
const compare = (a: string | number, b: string | number) => (typeof a === "number" && typeof b === "number" ? a - b : Buffer.compare(Buffer.from(String(a)), Buffer.from(String(b))));

function matches<R extends Row>(row: R, fields: Record<string, FieldGetter<R>>, p: Predicate): boolean {
  const v = p.key.startsWith("tags.") ? row.tags?.[p.key.slice(5)] ?? "" : fields[p.key]!(row);
  if (Array.isArray(p.value)) return p.value.includes(v); // IN
  const order = compare(v, p.value);
  switch (p.operation) {
    case "EQUALS": return order === 0;
    case "NOT_EQUALS": return order !== 0;
    case "GREATER_THAN": return order > 0;
    case "GREATER_THAN_EQUALS": return order >= 0;
    case "LESS_THAN": return order < 0;
    case "LESS_THAN_EQUALS": return order <= 0;
    default: return String(v).includes(String(p.value)); // IS_SUBSTRING: SQL LIKE '%v%'
  }
}

/** list.go token: JSON, base64 (StdEncoding); the next page starts at the row it names. */
interface PageToken {
  SortByFieldName: string; SortBySQLColumn: string; SortByFieldValue: string | number; SortByFieldPrefix: string;
  KeyFieldName: string; KeyFieldValue: string; KeyFieldPrefix: string; IsDesc: boolean; ModelName: string; Filter: Predicate[] | null;
}

/** Go's base64.StdEncoding.DecodeString error text. */
function decodeBase64(text: string): string {
  const bad = text.search(/[^A-Za-z0-9+/=]/);
  if (bad >= 0) throw new Error(`illegal base64 data at input byte ${bad}`);
  if (text.length % 4 !== 0) throw new Error(`illegal base64 data at input byte ${text.length - (text.length % 4)}`);
  return Buffer.from(text, "base64").toString("utf8");
}

/** One page of rows, the total count of matches, and the token for the next page ("" on the last). */
function listPage<R extends Row>(rows: R[], model: Listable<R>, q: URLSearchParams): { items: R[]; total: number; next: string } {
  const fields = model.fields;
  const rawSize = q.get("page_size") ?? "0";
  if (!/^-?\d+$/.test(rawSize)) {
    throw new UserError(3, `parsing field "page_size": strconv.ParseInt: parsing "${rawSize}": invalid syntax`, "", true);
  }
  let pageSize = Number(rawSize);
  if (pageSize < 0) throw invalidInput(`The page size should be greater than 0. Got ${pageSize}`);
  pageSize = pageSize === 0 ? DEFAULT_PAGE_SIZE : Math.min(pageSize, MAX_PAGE_SIZE);

  type Criteria = { field: string; IsDesc: boolean; Filter: Predicate[] | null };
  const fromRequest = (): Criteria => {
    const sortBy = q.get("sort_by") ?? "";
    const words = sortBy.split(" ").filter(Boolean);
    if (words.length > 2 || (words.length === 2 && words[1] !== "asc" && words[1] !== "desc")) {
      throw invalidInput(`Received invalid sort by format "${sortBy}". Supported format: "field_name", "field_name desc", or "field_name asc"`);
    }
    if (words[0] && !(words[0] in fields)) throw invalidInput(`Invalid sorting field: "${words[0]}" on listable type ${model.type}`);
    const filter = q.get("filter") ? parseFilter(q.get("filter")!, Object.keys(fields)) : null;
    return { field: words[0] ?? "created_at", IsDesc: words[1] === "desc", Filter: filter };
  };

  let criteria: Criteria;
  let cursor: PageToken | undefined;
  const rawToken = q.get("page_token");
  if (rawToken) {
    try {
      cursor = JSON.parse(decodeBase64(rawToken)) as PageToken;
    } catch (e) {
      throw new UserError(3, `InvalidInputError: Invalid page token: ${(e as Error).message}`, "Invalid page token");
    }
    const field = Object.keys(model.columns).find((f) => model.columns[f] === cursor!.SortByFieldName) ?? "created_at";
    criteria = { field, IsDesc: cursor.IsDesc, Filter: cursor.Filter };
    // A page token carries its own sort and filter; repeating them is allowed only if they match.
    if (q.get("sort_by") || q.get("filter")) {
      const fresh = fromRequest();
      if (model.columns[fresh.field] !== cursor.SortByFieldName || fresh.IsDesc !== cursor.IsDesc || JSON.stringify(fresh.Filter) !== JSON.stringify(cursor.Filter)) {
        throw invalidInput("page token does not match the supplied sort by and/or filtering criteria. Either specify the same criteria or leave the latter empty if page token is specified");
      }
    }
  } else {
    criteria = fromRequest();
  }

  const sortValue = fields[criteria.field]!;
  const sign = criteria.IsDesc ? -1 : 1;
  // ORDER BY sort field, then UUID, both in the requested direction.
  const sorted = rows
    .filter((r) => (criteria.Filter ?? []).every((p) => matches(r, fields, p)))
    .sort((a, b) => sign * (compare(sortValue(a), sortValue(b)) || compare(a.id, b.id)));
  const start = cursor
    ? sorted.filter((r) => sign * (compare(sortValue(r), cursor!.SortByFieldValue) || compare(r.id, cursor!.KeyFieldValue)) >= 0)
    : sorted;
  const items = start.slice(0, pageSize);
  const following = start[pageSize];
  const column = model.columns[criteria.field]!;
  const token: PageToken | undefined = following && {
    SortByFieldName: column, SortBySQLColumn: column, SortByFieldValue: sortValue(following), SortByFieldPrefix: `${model.table}.`,
    KeyFieldName: "UUID", KeyFieldValue: following.id, KeyFieldPrefix: `${model.table}.`, IsDesc: criteria.IsDesc, ModelName: model.table, Filter: criteria.Filter,
  };
  return { items, total: sorted.length, next: token ? Buffer.from(JSON.stringify(token)).toString("base64") : "" };
}

// ---------------------------------------------------------------------------------------------------------
// JSON output: protojson with UseProtoNames and without EmitUnpopulated (common.CustomMarshaler)

/** Empty strings, zero numbers, empty lists and maps are left out, as protojson does. */
function omitEmpty<T extends Json>(o: T): T {
  const present = ([, v]: [string, unknown]) => v !== undefined && v !== "" && v !== 0 && !(isObject(v) && Object.keys(v).length === 0) && !(Array.isArray(v) && v.length === 0);
  return Object.fromEntries(Object.entries(o).filter(present)) as T;
}

/** google.protobuf.Timestamp in JSON: RFC 3339 in UTC; the server stores whole seconds. */
const timestamp = (sec: number) => new Date(sec * 1000).toISOString().replace(".000Z", "Z");
const nowSec = () => Math.floor(Date.now() / 1000);

const apiPipeline = (p: PipelineRow): Pipeline => omitEmpty({
  pipeline_id: p.id, display_name: p.displayName, name: p.name, description: p.description,
  created_at: timestamp(p.createdSec), namespace: p.namespace, tags: p.tags,
});

const apiVersion = (v: VersionRow): PipelineVersion => omitEmpty({
  pipeline_id: v.pipelineId, pipeline_version_id: v.id, display_name: v.displayName, name: v.name,
  description: v.description, created_at: timestamp(v.createdSec),
  package_url: v.packageUrl ? { pipeline_url: v.packageUrl } : undefined,
  code_source_url: v.codeSourceUrl, pipeline_spec: v.spec, tags: v.tags,
});

interface ExperimentRow { id: string; name: string; description: string; namespace: string; createdSec: number; archived: boolean }

const apiExperiment = (e: ExperimentRow) => ({
  ...omitEmpty({ experiment_id: e.id, display_name: e.name, description: e.description, created_at: timestamp(e.createdSec), namespace: e.namespace }),
  storage_state: e.archived ? "ARCHIVED" : "AVAILABLE",
  last_run_created_at: timestamp(0), // a Timestamp message that is set, so written even at zero
});

interface RecurringRunRow {
  id: string; displayName: string; description: string; pipelineId: string; versionId: string;
  runtimeConfig?: Json; serviceAccount: string; maxConcurrency: number; trigger: Json; enabled: boolean;
  createdSec: number; updatedSec: number; noCatchup: boolean; namespace: string; experimentId: string;
}

const apiRecurringRun = (r: RecurringRunRow) => ({
  ...omitEmpty({ recurring_run_id: r.id, display_name: r.displayName, description: r.description,
  pipeline_version_reference: omitEmpty({ pipeline_id: r.pipelineId, pipeline_version_id: r.versionId }),
  runtime_config: r.runtimeConfig, service_account: r.serviceAccount, max_concurrency: String(r.maxConcurrency),
  }),
  trigger: r.trigger as Json, // a message that is set, so written even when empty
  ...omitEmpty({
    mode: r.enabled ? "ENABLE" : "DISABLE", created_at: timestamp(r.createdSec), updated_at: timestamp(r.updatedSec),
    status: r.enabled ? "ENABLED" : "DISABLED", no_catchup: r.noCatchup || undefined, namespace: r.namespace, experiment_id: r.experimentId,
  }),
});

const EXPERIMENTS: Listable<ExperimentRow> = {
  type: "Experiment", table: "experiments",
  fields: { id: (r) => r.id, experiment_id: (r) => r.id, name: (r) => r.name, display_name: (r) => r.name, created_at: (r) => r.createdSec, description: (r) => r.description, namespace: (r) => r.namespace },
  columns: { id: "UUID", experiment_id: "UUID", name: "Name", display_name: "Name", created_at: "CreatedAtInSec", description: "Description", namespace: "Namespace" },
};
const RECURRING_RUNS: Listable<RecurringRunRow> = {
  type: "Job", table: "jobs",
  fields: { id: (r) => r.id, recurring_run_id: (r) => r.id, name: (r) => r.displayName, display_name: (r) => r.displayName, created_at: (r) => r.createdSec, updated_at: (r) => r.updatedSec, description: (r) => r.description },
  columns: { id: "UUID", recurring_run_id: "UUID", name: "DisplayName", display_name: "DisplayName", created_at: "CreatedAtInSec", updated_at: "UpdatedAtInSec", description: "Description" },
};

// ---------------------------------------------------------------------------------------------------------
// Requests: Go's query parsing (net/url) and request size limit (net/http), grpc-gateway's body decoding

/** url.ParseQuery: a raw `;` or a bad %-escape fails the whole query; `+` is a space. */
function parseGoQuery(raw: string): { params: URLSearchParams; error?: string } {
  const params = new URLSearchParams();
  let error: string | undefined;
  const unescape = (s: string): string => {
    const bytes: number[] = [];
    for (let i = 0; i < s.length; i++) {
      if (s[i] === "%") {
        const hex = s.slice(i + 1, i + 3);
        if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw new Error(`invalid URL escape ${JSON.stringify(s.slice(i, i + 3))}`);
        bytes.push(parseInt(hex, 16));
        i += 2;
      } else if (s[i] === "+") bytes.push(0x20);
      else bytes.push(...Buffer.from(s[i]!));
    }
    return Buffer.from(bytes).toString("utf8");
  };
  for (const pair of raw.split("&")) {
    if (pair === "") continue;
    if (pair.includes(";")) {
      error ??= "invalid semicolon separator in query";
      continue;
    }
    const eq = pair.indexOf("=");
    try {
      params.append(unescape(eq < 0 ? pair : pair.slice(0, eq)), eq < 0 ? "" : unescape(pair.slice(eq + 1)));
    } catch (e) {
      error ??= (e as Error).message;
    }
  }
  return { params, error };
}

/** net/http reads at most DefaultMaxHeaderBytes (1 MiB) plus 4096 bytes of request line and headers. */
const MAX_HEADER_BYTES = (1 << 20) + 4096;

/** What encoding/json says about a body that is not JSON (grpc-gateway decodes with it first). */
function goJsonError(text: string): string {
  const e = jsonSyntaxError(text);
  if (e.eof) return "unexpected EOF";
  const c = text.split("\n")[e.line - 1]![e.col - 1] ?? "";
  return `invalid character '${c}' looking for beginning of ${e.inKey ? "object key string" : "value"}`;
}

/** protojson refuses a field its message does not have, naming where it is. */
function unknownField(text: string, body: Json, known: string[]): string | undefined {
  const key = Object.keys(body).find((k) => !known.includes(protoName(k)));
  if (key === undefined) return undefined;
  const at = text.search(new RegExp(`"${key.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}"\\s*:`));
  const before = text.slice(0, Math.max(at, 0)).split("\n");
  return `proto: (line ${before.length}:${before.at(-1)!.length + 1}): unknown field "${key}"`;
}

const PIPELINE_FIELDS = ["pipeline_id", "display_name", "name", "description", "created_at", "namespace", "error", "tags"];
const EXPERIMENT_FIELDS = ["experiment_id", "display_name", "description", "created_at", "namespace", "storage_state", "last_run_created_at"];
const RECURRING_RUN_FIELDS = ["recurring_run_id", "display_name", "description", "pipeline_version_id", "pipeline_spec", "pipeline_version_reference", "runtime_config", "service_account", "max_concurrency", "trigger", "mode", "created_at", "updated_at", "status", "error", "no_catchup", "namespace", "experiment_id"];

/** common/util: tags on pipelines and versions (validation in the resource manager). */
function validateTags(tags: Record<string, string> | undefined): void {
  if (!tags) return;
  const entries = Object.entries(tags);
  const refuse = (msg: string) => new UserError(3, `Invalid input error: ${msg}`, msg);
  if (entries.length > 20) throw refuse(`number of tags (${entries.length}) exceeds maximum of 20 per entity`);
  for (const [k, v] of entries) {
    if ([...k].length > 63) throw refuse(`tag key "${k}" exceeds maximum length of 63 characters`);
    if ([...v].length > 63) throw refuse(`tag value "${v}" for key "${k}" exceeds maximum length of 63 characters`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// The server

type NewPipeline = Omit<PipelineRow, "id" | "createdSec">;
type NewVersion = Omit<VersionRow, "id" | "createdSec" | "pipelineId" | "spec">;
type GatewayHandler = (req: Request, q: URLSearchParams, params: string[], record: RecordedRequest) => unknown;
interface Fault { route: RegExp; status: number; remaining: number; body?: string }

/** Thrown to answer a request with a finished response (the upload routes' several error shapes). */
class Reply {
  constructor(readonly response: Response) {}
}

/** Runs `fn`, prefixing any KFP error it raises with `context` the way util.Wrapf builds the message chain. */
function within<T>(context: string, fn: () => T): T {
  try {
    const result = fn();
    if (result instanceof Promise) return result.catch((e) => Promise.reject(wrapped(e, context))) as T;
    return result;
  } catch (e) {
    throw wrapped(e, context);
  }
}
const wrapped = (e: unknown, context: string) => (e instanceof UserError && !e.bare ? e.wrap(context) : e);

/** package_url.pipeline_url of a JSON request body, in either JSON naming. */
const packageUrl = (o: Json): string => {
  const url = field(o, "packageUrl", "package_url");
  return isObject(url) ? String(field(url, "pipelineUrl", "pipeline_url") ?? "") : "";
};

const RELEASE_COMMIT = "4a3592cb2dd0a91a4652ab93893ec8beda1f3158"; // tag 2.17.0
const POD_NAMESPACE = "kubeflow";

export async function startKfpServer(opts: KfpServerOptions = {}): Promise<KfpServer> {
  const multiUser = opts.multiUser ?? false;
  const requireNamespace = multiUser && (opts.requireNamespace ?? false);
  const denied = new Set(opts.deniedUsers ?? []);
  const pipelines = new Map<string, PipelineRow>();
  const versions = new Map<string, VersionRow>();
  const experiments = new Map<string, ExperimentRow>();
  const recurringRuns = new Map<string, RecurringRunRow>();
  const requests: RecordedRequest[] = [];
  let faults: Fault[] = [];

  // Single-user servers create the Default experiment at start-up (resource_manager.go).
  const addDefaultExperiment = () => {
    if (multiUser) return;
    const id = crypto.randomUUID();
    experiments.set(id, { id, name: "Default", description: "All runs created without specifying an experiment will be grouped here.", namespace: "", createdSec: nowSec(), archived: false });
  };
  addDefaultExperiment();

  // resource_manager.go ReplaceNamespace, validation/namespace.go ValidateNamespaceRequired
  const resolveNamespace = (namespace: string): string => {
    const ns = multiUser ? namespace : "";
    if (requireNamespace && ns === "") throw invalidInput("Namespace is required for pipeline operations");
    return ns;
  };

  /** Multi-user identity: KUBEFLOW_USERID_HEADER (no prefix), else a bearer token through TokenReview. */
  const identity = (req: Request): string | undefined =>
    req.headers.get("kubeflow-userid") || (/^bearer \S/i.test(req.headers.get("authorization") ?? "") ? "test" : undefined);

  /** resource_manager.go IsAuthorized: nothing to check in single-user mode or for shared (namespace-less) items. */
  const authorize = (req: Request, namespace: string, verb: string, resource: string, name = ""): void => {
    if (!multiUser || !namespace) return;
    const user = identity(req);
    if (!user) throw unauthenticated();
    if (denied.has(user)) {
      throw permissionDenied(user, `Namespace:${namespace},Verb:${verb},Group:pipelines.kubeflow.org,Version:v1beta1,Resource:${resource},Subresource:,Name:${name},FieldSelector:nil,LabelSelector:nil,`);
    }
  };
  const accessPipeline = (req: Request, namespace: string, verb: string, id = "", name = "") =>
    within(`Failed to access pipeline ${id}. Check if you have access to namespace ${namespace}`, () => authorize(req, namespace, verb, "pipelines", name));

  const getPipeline = (id: string): PipelineRow => {
    const row = pipelines.get(id);
    if (!row) throw notFound("Pipeline", id).wrap(`Failed to get a pipeline with id ${id}`);
    return row;
  };

  const getVersion = (id: string): VersionRow => {
    const row = versions.get(id);
    if (!row) throw notFound("PipelineVersion", id).wrap(`Failed to get a pipeline version with id ${id}`);
    return row;
  };

  /** The newest row; within one second the one stored last (rows come in insertion order). */
  const newest = <R extends Row>(rows: R[]) => rows.reduce<R | undefined>((best, r) => (!best || r.createdSec >= best.createdSec ? r : best), undefined);

  // storage/pipeline_store.go: (Namespace, Name) is unique among pipelines, (PipelineId, Name) among versions.
  const addPipeline = (p: NewPipeline): PipelineRow => {
    validateTags(p.tags);
    if ([...pipelines.values()].some((r) => r.namespace === p.namespace && r.name === p.name)) {
      throw alreadyExists(`Failed to create a new pipeline. The name ${p.name} already exist. Please specify a new name`);
    }
    const row = { ...p, id: crypto.randomUUID(), createdSec: nowSec() };
    pipelines.set(row.id, row);
    return row;
  };

  const addVersion = (pipelineId: string, v: NewVersion, spec?: Record<string, unknown>): VersionRow => {
    validateTags(v.tags);
    spec ??= parseTemplate(v.specYaml);
    if ([...versions.values()].some((r) => r.pipelineId === pipelineId && r.name === v.name)) {
      throw alreadyExists(`Failed to create a new pipeline version. The name ${v.name} already exist. Specify a new name`);
    }
    const row = { ...v, pipelineId, spec, id: crypto.randomUUID(), createdSec: nowSec() };
    versions.set(row.id, row);
    return row;
  };

  /** resource_manager.go CreatePipelineAndPipelineVersion: the template is checked before anything is stored. */
  const addPipelineWithVersion = (p: NewPipeline, v: NewVersion): PipelineRow => {
    validateTags(p.tags);
    const spec = parseTemplate(v.specYaml);
    const pipeline = addPipeline(p);
    addVersion(pipeline.id, v, spec);
    return pipeline;
  };

  // ------------------------------------------------------------------ upload routes: server/pipeline_upload_server.go
  // Plain HTTP handlers beside the gateway. Checks run in upstream's order, each with upstream's response.

  /** server/util.go ReadPipelineFile: size cap first, then the file name decides the format. */
  async function readUpload(req: Request, record: RecordedRequest, queryError: string | undefined, noFile: string, unreadable: string) {
    // ParseMultipartForm parses the query too; a query Go refuses fails FormFile like a missing file.
    const file = queryError ? null : await req.formData().then((form) => form.get("uploadfile"), () => null);
    if (!(file instanceof File)) throw new Reply(uploadError(400, noFile));
    record.filename = file.name;
    if (file.size > MAX_FILE_BYTES || !/\.(ya?ml|json)$/.test(file.name)) throw new Reply(uploadError(400, unreadable));
    record.body = await file.text();
    return { text: record.body, filename: file.name };
  }

  /** Validation failures answered with http.Error's plain text. */
  const orPlainText = <T>(fn: () => T): T => {
    try {
      return fn();
    } catch (e) {
      throw e instanceof UserError ? new Reply(plainError(e)) : e;
    }
  };

  const parseTags = (q: URLSearchParams): Record<string, string> | undefined => {
    const raw = q.get("tags");
    if (!raw) return undefined;
    const tags = tryJson(raw);
    if (isObject(tags) && Object.values(tags).every((t) => typeof t === "string")) return tags as Record<string, string>;
    throw new Reply(uploadError(400, "Failed to parse tags query parameter. Expected JSON object with string keys and values"));
  };

  /** AlreadyExists → 409, InvalidArgument → 400 with its clean external message, anything else → 500. */
  const orUploadError = <T>(generic: string, fn: () => T): T => {
    try {
      return fn();
    } catch (e) {
      if (!(e instanceof UserError)) throw e;
      const [status, message] = e.code === 6 ? [409, generic] : e.code === 3 ? [400, e.external] : [500, generic];
      throw new Reply(uploadError(status, message, false));
    }
  };

  /** Authorization failures on the upload routes: folded into the route's generic 400, sniffed as text. */
  const orRefused = (generic: string, fn: () => void) => {
    try {
      fn();
    } catch (e) {
      throw e instanceof UserError ? new Reply(uploadError(400, generic)) : e;
    }
  };

  /** UploadPipeline: creates the pipeline and a first version with the same name. */
  async function uploadPipeline(req: Request, q: URLSearchParams, queryError: string | undefined, record: RecordedRequest): Promise<unknown> {
    const file = await readUpload(req, record, queryError, "Failed to read pipeline from file", "Failed to read a pipeline spec file");
    const namespace = orPlainText(() => {
      checkLength("Pipeline.Namespace", q.get("namespace") ?? "");
      return resolveNamespace(q.get("namespace") ?? "");
    });
    // A namespace-less pipeline is shared: created without asking who the caller is.
    orRefused("Failed to create a pipeline", () => authorize(req, namespace, "create", "pipelines"));
    const name = q.get("name") || q.get("display_name") || file.filename;
    const displayName = q.get("display_name") || name;
    const description = q.get("description") ?? "";
    const tags = parseTags(q);
    orPlainText(() => checkLength("Pipeline.Name", name));
    const version = { name, displayName, description, specYaml: file.text, codeSourceUrl: q.get("code_source_url") ?? "", packageUrl: "" };
    const pipeline = orUploadError("Failed to create a pipeline and a pipeline version", () =>
      addPipelineWithVersion({ name, displayName, description, namespace, tags }, version));
    return apiPipeline(pipeline);
  }

  /** UploadPipelineVersion: the namespace is the parent pipeline's. */
  async function uploadVersion(req: Request, q: URLSearchParams, queryError: string | undefined, record: RecordedRequest): Promise<unknown> {
    const failed = "Failed to create a pipeline version";
    const file = await readUpload(req, record, queryError, failed, failed);
    const pipelineId = q.get("pipelineid") ?? "";
    if (!pipelineId) throw new Reply(uploadError(400, failed));
    const name = q.get("name") || q.get("display_name") || file.filename;
    orPlainText(() => checkLength("PipelineVersion.Name", name));
    const parent = pipelines.get(pipelineId);
    if (!parent) throw new Reply(uploadError(400, failed));
    orPlainText(() => parent.namespace || resolveNamespace(""));
    orRefused(failed, () => authorize(req, parent.namespace, "update", "pipelines"));
    const version = {
      name, displayName: q.get("display_name") || name, description: q.get("description") ?? "", specYaml: file.text,
      codeSourceUrl: q.get("code_source_url") ?? "", packageUrl: "", tags: parseTags(q),
    };
    return apiVersion(orUploadError(failed, () => addVersion(pipelineId, version)));
  }

  // ------------------------------------------------------------------ gateway routes: server/pipeline_server.go

  /** grpc-gateway decodes with encoding/json, then protojson (which refuses unknown fields). */
  async function readBody(req: Request, record: RecordedRequest, known: string[]): Promise<Json> {
    record.body = await req.text();
    if (record.body.trim() === "") return {}; // grpc-gateway treats an empty body as an empty message
    const body = tryJson(record.body);
    if (!isObject(body)) throw new UserError(3, goJsonError(record.body), "", true);
    const unknown = unknownField(record.body, body, known);
    if (unknown) throw new UserError(3, unknown, "", true);
    return body;
  }

  /** server/api_converter.go toModelPipeline: name and display_name stand in for each other. */
  const toModelPipeline = (body: Json): NewPipeline => {
    const name = String(body.name || field(body, "displayName", "display_name") || "");
    const namespace = String(body.namespace ?? "");
    try {
      checkLength("Pipeline.Name", name);
      checkLength("Pipeline.Namespace", namespace);
    } catch (e) {
      throw internalError(`Failed to convert API pipeline to model pipeline: ${(e as UserError).internal}`);
    }
    const tags = isObject(body.tags) ? (body.tags as Record<string, string>) : undefined;
    const displayName = String(field(body, "displayName", "display_name") || name);
    return { name, displayName, description: String(body.description ?? ""), namespace, tags };
  };

  /** CreatePipelineVersion and CreatePipelineAndVersion download the spec from package_url. */
  async function downloadSpec(url: string): Promise<string> {
    const res = await fetch(url).catch(() => {
      throw internalError(`error downloading the pipeline spec from ${url}`);
    });
    if (res.status !== 200) throw invalidInput(`Failed to fetch pipeline spec with url: ${url}. Request returned ${res.status} ${res.statusText}`);
    const text = await res.text();
    if (text.length > MAX_FILE_BYTES) throw invalidInput(`File size too large. Maximum supported size: ${MAX_FILE_BYTES}`);
    if (!/\.(ya?ml|json)$/.test(new URL(url).pathname)) throw invalidInput("Unexpected pipeline file format. Support .zip, .tar.gz or YAML.");
    return text;
  }

  /** List options are checked first; a filter that is not JSON fails earlier still, in the tag-filter step. */
  function page<R extends Row>(what: string, rows: R[], model: Listable<R>, q: URLSearchParams) {
    try {
      return listPage(rows, model, q);
    } catch (e) {
      if (e instanceof FilterSyntaxError) throw e.wrap(`Failed to list ${what} due to invalid tag filter in filter spec`);
      throw wrapped(e, `Failed to list ${what} due invalid list options: pageToken: ${q.get("page_token") ?? ""}, pageSize: ${q.get("page_size") ?? 0}, sortBy: ${q.get("sort_by") ?? ""}, filter: ${q.get("filter") ?? ""}`);
    }
  }

  const listPipelines: GatewayHandler = (req, q) => {
    const namespace = q.get("namespace") ?? "";
    const rows = [...pipelines.values()].filter((p) => p.namespace === (multiUser ? namespace : ""));
    const listed = page("pipelines", rows, PIPELINES, q);
    within(`Failed to list pipelines in namespace ${namespace}. Check error stack`, () => {
      const ns = resolveNamespace(namespace);
      within(`Failed to list pipelines due to authorization error. Check if you have read permission to namespace ${ns}`, () => accessPipeline(req, ns, "list"));
    });
    return omitEmpty({ pipelines: listed.items.map(apiPipeline), total_size: listed.total, next_page_token: listed.next });
  };

  const createPipeline: GatewayHandler = async (req, _q, _p, record) => {
    const body = await readBody(req, record, PIPELINE_FIELDS);
    const model = within("Failed to create a pipeline as pipeline conversion failed", () => toModelPipeline(body));
    return within("Failed to create a pipeline due to server error", () => {
      model.namespace = resolveNamespace(model.namespace);
      if (!model.name) throw invalidInput("name is required");
      within("Failed to authorize the request", () => accessPipeline(req, model.namespace, "create"));
      return apiPipeline(within("Failed to create a pipeline in PipelineStore", () => addPipeline(model)));
    });
  };

  const createPipelineAndVersion: GatewayHandler = async (req, _q, _p, record) => {
    const body = await readBody(req, record, ["pipeline", "pipeline_version"]);
    const version = (field(body, "pipelineVersion", "pipeline_version") ?? {}) as Json;
    const url = packageUrl(version);
    return within("Failed to create a pipeline", async () => {
      const model = toModelPipeline(isObject(body.pipeline) ? body.pipeline : {});
      model.name ||= url.split("/").pop() ?? "";
      model.displayName ||= model.name;
      model.namespace = resolveNamespace(model.namespace);
      accessPipeline(req, model.namespace, "create");
      const specYaml = await downloadSpec(url);
      const tags = isObject(version.tags) ? (version.tags as Record<string, string>) : undefined;
      const { name, displayName, description } = model;
      const pipeline = within("Failed to create a pipeline and a pipeline version", () =>
        addPipelineWithVersion(model, { name, displayName, description, specYaml, codeSourceUrl: "", packageUrl: url, tags }));
      return apiPipeline(pipeline);
    });
  };

  const getPipelineById: GatewayHandler = (req, _q, [id]) =>
    within(`Failed to get a pipeline ${id}. Check error stack`, () => {
      const row = getPipeline(id!);
      within(`Failed to get a pipeline due authorization error for pipeline id ${id}`, () => accessPipeline(req, row.namespace, "get", id));
      return apiPipeline(row);
    });

  const getPipelineByName: GatewayHandler = (req, q, [name]) => {
    const namespace = q.get("namespace") ?? "";
    return within(`Failed to get a pipeline with name ${name} and namespace ${namespace}. Check error stack.`, () => {
      const ns = resolveNamespace(namespace);
      within(`Failed to fetch a pipeline due to authorization error. Check if you have read permission to namespace ${ns}`, () => accessPipeline(req, ns, "get", "", name));
      // pipeline_store.go: an empty namespace does not filter, and the newest match wins.
      const found = newest([...pipelines.values()].filter((p) => p.name === name && (ns === "" || p.namespace === ns)));
      if (!found) throw notFound("Namespace/Pipeline", `${ns}/${name}`).wrap(`Failed to get a pipeline named ${name} in namespace ${ns}`);
      return apiPipeline(found);
    });
  };

  /** resource_manager.go DeletePipeline: refused while versions exist unless cascade=true. */
  const deletePipeline: GatewayHandler = (req, q, [id]) =>
    within(`Failed to delete pipeline ${id}. Check error stack`, () => {
      const row = within(`Failed to delete pipeline with id ${id} as it was not found`, () => {
        const found = pipelines.get(id!);
        if (!found) throw notFound("Pipeline", id!);
        return found;
      });
      accessPipeline(req, row.namespace, "delete", id);
      const children = [...versions.values()].filter((v) => v.pipelineId === id);
      const example = newest([...children]);
      if (example && q.get("cascade") !== "true") {
        throw invalidInput(`Failed to delete pipeline with id ${id} as it has existing pipeline versions (e.g. ${example.id}). Set cascade=true to delete all versions`);
      }
      for (const v of children) versions.delete(v.id);
      pipelines.delete(id!);
      return {};
    });

  const listVersions: GatewayHandler = (req, q, [pipelineId]) => {
    const rows = [...versions.values()].filter((v) => v.pipelineId === pipelineId);
    const listed = page("pipeline versions", rows, VERSIONS, q);
    within(`Failed to list pipeline versions for pipeline ${pipelineId}`, () => {
      const parent = within(`Failed to list pipeline versions due to error fetching the namespace for pipeline ${pipelineId}`, () =>
        within(`Failed to get namespace for pipeline id ${pipelineId}`, () => getPipeline(pipelineId!)));
      within(`Failed to list pipeline versions due to authorization error. Check if you have read permission to namespace ${parent.namespace}`, () =>
        accessPipeline(req, parent.namespace, "list"));
    });
    return omitEmpty({ pipeline_versions: listed.items.map(apiVersion), next_page_token: listed.next, total_size: listed.total });
  };

  /** CreatePipelineVersion: both the path and the body must name the parent pipeline. */
  const createVersionFromUrl: GatewayHandler = async (req, _q, [pipelineId], record) => {
    const body = await readBody(req, record, ["pipeline_id", "pipeline_version_id", "display_name", "name", "description", "created_at", "package_url", "code_source_url", "pipeline_spec", "status", "tags"]);
    if (!field(body, "packageUrl", "package_url")) throw invalidInput("Failed to create a pipeline version. Package URL is nil");
    const url = packageUrl(body);
    if (!url) throw invalidInput("Failed to create a pipeline version. Package URL is empty");
    if (!field(body, "pipelineId", "pipeline_id")) throw invalidInput("Failed to create a pipeline version. Parent pipeline id is empty");
    const name = String(body.name || field(body, "displayName", "display_name") || "");
    return within("Failed to create a pipeline version. Check error stack", async () => {
      if (!name) throw invalidInput("name is required");
      accessPipeline(req, getPipeline(pipelineId!).namespace, "update", pipelineId);
      const version = {
        name, displayName: String(field(body, "displayName", "display_name") || name), description: String(body.description ?? ""),
        specYaml: await downloadSpec(url), codeSourceUrl: String(field(body, "codeSourceUrl", "code_source_url") ?? ""),
        packageUrl: url, tags: isObject(body.tags) ? (body.tags as Record<string, string>) : undefined,
      };
      return apiVersion(addVersion(pipelineId!, version));
    });
  };

  // GetPipelineVersion and DeletePipelineVersion look the version up by its own id; the pipeline id goes unchecked.
  const getVersionById: GatewayHandler = (req, _q, [, versionId]) =>
    within(`Failed to get a pipeline version ${versionId}`, () => {
      const row = getVersion(versionId!);
      accessPipeline(req, pipelines.get(row.pipelineId)?.namespace ?? "", "get", row.pipelineId);
      return apiVersion(row);
    });

  const deleteVersion: GatewayHandler = (req, _q, [pipelineId, versionId]) =>
    within(`Failed to delete a pipeline version id ${versionId} under pipeline id ${pipelineId}. Check error stack`, () => {
      const row = within(`Failed to delete pipeline version with id ${versionId} as it was not found`, () => {
        const found = versions.get(versionId!);
        if (!found) throw notFound("PipelineVersion", versionId!);
        return found;
      });
      accessPipeline(req, pipelines.get(row.pipelineId)?.namespace ?? "", "delete", row.pipelineId);
      versions.delete(versionId!);
      return {};
    });

  // ------------------------------------------------------------------ experiments: server/experiment_server.go

  const getExperiment = (id: string): ExperimentRow => {
    const row = experiments.get(id);
    if (!row) throw notFound("Experiment", id);
    return row;
  };
  const experimentNamespace = (namespace: string) => {
    if (multiUser && !namespace) throw invalidInput("An experiment cannot have an empty namespace in multi-user mode");
    return multiUser ? namespace : "";
  };

  const createExperiment: GatewayHandler = async (req, _q, _p, record) => {
    const body = await readBody(req, record, EXPERIMENT_FIELDS);
    const name = String(field(body, "displayName", "display_name") ?? "");
    if (!name) {
      throw new UserError(13, "[ExperimentServer]: Failed to create a experiment due to conversion error: InternalServerError: Failed to convert API experiment to model experiment: Invalid input error: Experiment must have a non-empty name", "Internal Server Error");
    }
    return within("Failed to create a experiment", () => {
      const namespace = within("Failed to authorize the request", () => {
        const ns = experimentNamespace(String(body.namespace ?? ""));
        within("Failed to authorize with API", () => authorize(req, ns, "create", "experiments", name));
        return ns;
      });
      if ([...experiments.values()].some((e) => e.namespace === namespace && e.name === name)) {
        throw alreadyExists(`Failed to create a new experiment. The name ${name} already exists. Please specify a new name`);
      }
      const row = { id: crypto.randomUUID(), name, description: String(body.description ?? ""), namespace, createdSec: nowSec(), archived: false };
      experiments.set(row.id, row);
      return apiExperiment(row);
    });
  };

  const listExperiments: GatewayHandler = (req, q) => {
    const namespace = within("List experiments failed", () => {
      const ns = within("Failed to authorize with API", () => experimentNamespace(q.get("namespace") ?? ""));
      within("Failed to authorize with API", () => authorize(req, ns, "list", "experiments"));
      return ns;
    });
    const rows = [...experiments.values()].filter((e) => !multiUser || e.namespace === namespace);
    const listed = page("experiments", rows, EXPERIMENTS, q);
    return omitEmpty({ experiments: listed.items.map(apiExperiment), total_size: listed.total, next_page_token: listed.next });
  };

  const getExperimentById: GatewayHandler = (req, _q, [id]) =>
    within("Failed to fetch experiment", () => {
      const row = getExperiment(id!);
      within("Failed to authorize the request", () => authorize(req, row.namespace, "get", "experiments", row.name));
      return apiExperiment(row);
    });

  const archiveExperiment = (archived: boolean): GatewayHandler => (req, _q, [id]) =>
    within(`Failed to ${archived ? "archive" : "unarchive"} experiment ${id}`, () => {
      const row = getExperiment(id!);
      within("Failed to authorize the request", () => authorize(req, row.namespace, archived ? "archive" : "unarchive", "experiments", row.name));
      row.archived = archived;
      return {};
    });

  // ------------------------------------------------------------------ recurring runs: server/job_server.go (v2beta1 recurring_run)

  const getRecurringRun = (id: string): RecurringRunRow => {
    const row = recurringRuns.get(id);
    if (!row) throw notFound("Job", id);
    return row;
  };

  /** The trigger as the API writes it back: int64 as JSON strings. */
  const toTrigger = (trigger: Json): Json => {
    const cron = field(trigger, "cronSchedule", "cron_schedule");
    const periodic = field(trigger, "periodicSchedule", "periodic_schedule");
    if (isObject(cron)) {
      const text = String(cron.cron ?? "");
      const count = text.trim().split(/\s+/).filter(Boolean).length;
      if (count < 5 || count > 6) {
        throw invalidInput(`Schedule cron is not a supported format(https://godoc.org/github.com/robfig/cron). Error: Expected 5 to 6 fields, found ${count}: ${text}`);
      }
      return { cron_schedule: omitEmpty({ start_time: field(cron, "startTime", "start_time"), end_time: field(cron, "endTime", "end_time"), cron: text }) };
    }
    if (isObject(periodic)) {
      const interval = Number(field(periodic, "intervalSecond", "interval_second") ?? 0);
      return { periodic_schedule: omitEmpty({ start_time: field(periodic, "startTime", "start_time"), end_time: field(periodic, "endTime", "end_time"), interval_second: interval ? String(interval) : undefined }) };
    }
    return {};
  };

  const createRecurringRun: GatewayHandler = async (req, _q, _p, record) => {
    const body = await readBody(req, record, RECURRING_RUN_FIELDS);
    let experimentId = String(field(body, "experimentId", "experiment_id") ?? "");
    if (multiUser && !experimentId) {
      throw invalidInput("Experiment id can not be empty in multi-user mode")
        .wrap("Failed to create a recurring run due to invalid experimentId and namespace combination").wrap("Failed to create a recurring run");
    }
    const reference = (field(body, "pipelineVersionReference", "pipeline_version_reference") ?? {}) as Json;
    const pipelineId = String(field(reference, "pipelineId", "pipeline_id") ?? "");
    const versionId = String(field(reference, "pipelineVersionId", "pipeline_version_id") ?? "");
    const converted = within("Failed to create a recurring run due to conversion error", () => {
      const maxConcurrency = Number(field(body, "maxConcurrency", "max_concurrency") ?? 0);
      if (!(maxConcurrency >= 1 && maxConcurrency <= 10)) throw invalidInput(`Max concurrency of a recurring run must be at least 1 and at most 10. Received ${maxConcurrency}`);
      return { maxConcurrency, trigger: toTrigger(isObject(body.trigger) ? body.trigger : {}) };
    });
    return within("Failed to create a recurring run", () => {
      if (!multiUser && !experimentId) experimentId = [...experiments.values()].find((e) => e.name === "Default")?.id ?? "";
      const experiment = getExperiment(experimentId);
      within("Failed to authorize the request", () => authorize(req, experiment.namespace, "create", "jobs"));
      if (versionId) {
        try {
          getVersion(versionId);
        } catch (e) {
          const inner = (e as UserError).internal;
          throw internalError(`Failed to create a recurring run with an invalid pipeline spec manifest: Failed to fetch a template due to error retrieving pipeline version: Failed to fetch a pipeline version and its manifest from pipeline version ${versionId}: ${inner}`);
        }
      } else getPipeline(pipelineId);
      const mode = String(body.mode ?? "");
      const runtimeConfig = field(body, "runtimeConfig", "runtime_config");
      const sec = nowSec();
      const row: RecurringRunRow = {
        id: crypto.randomUUID(), displayName: String(field(body, "displayName", "display_name") ?? ""), description: String(body.description ?? ""),
        pipelineId, versionId, runtimeConfig: isObject(runtimeConfig) && Object.keys(runtimeConfig).length ? runtimeConfig : undefined,
        // Only a pinned version gets the default runner account; "latest" leaves it to the controller.
        serviceAccount: String(field(body, "serviceAccount", "service_account") || (versionId ? (multiUser ? "default-editor" : "pipeline-runner") : "")),
        maxConcurrency: converted.maxConcurrency, trigger: converted.trigger, enabled: mode === "ENABLE" || mode === "1",
        createdSec: sec, updatedSec: sec, noCatchup: field(body, "noCatchup", "no_catchup") === true,
        namespace: multiUser ? experiment.namespace : POD_NAMESPACE, experimentId,
      };
      recurringRuns.set(row.id, row);
      return apiRecurringRun(row);
    });
  };

  const listRecurringRuns: GatewayHandler = (req, q) => {
    const experimentId = q.get("experiment_id") ?? "";
    const namespace = q.get("namespace") ?? "";
    within("Failed to list jobs", () => {
      const ns = experimentId ? getExperiment(experimentId).namespace : namespace;
      within(`Failed to list recurring runs due to authorization error. Check if you have permission to access namespace ${ns}`, () => {
        if (multiUser && !ns) throw invalidInput("a recurring run cannot have an empty namespace in multi-user mode");
        authorize(req, ns, "list", "jobs");
      });
    });
    const rows = [...recurringRuns.values()].filter((r) => (experimentId ? r.experimentId === experimentId : !multiUser || r.namespace === namespace));
    const listed = page("recurring runs", rows, RECURRING_RUNS, q);
    // The list's JSON name is camelCase, unlike every other field the server writes.
    return omitEmpty({ recurringRuns: listed.items.map(apiRecurringRun), total_size: listed.total, next_page_token: listed.next });
  };

  const getRecurringRunById: GatewayHandler = (req, _q, [id]) =>
    within("Failed to fetch a recurring run", () => {
      const row = getRecurringRun(id!);
      within("Failed to authorize the request", () => authorize(req, row.namespace, "get", "jobs", row.displayName));
      return apiRecurringRun(row);
    });

  const enableRecurringRun = (enable: boolean): GatewayHandler => (req, _q, [id]) =>
    within(`Failed to ${enable ? "enable" : "disable"} a recurring run`, () => {
      const row = recurringRuns.get(id!);
      if (row) within("Failed to authorize the request", () => within("failed to authorize with API", () => authorize(req, row.namespace, enable ? "enable" : "disable", "jobs", row.displayName)));
      const found = within(`Failed to change recurring run's mode to enable:${enable}. Check if recurring run ${id} exists`, () => getRecurringRun(id!));
      found.enabled = enable;
      found.updatedSec = nowSec();
      return {};
    });

  const deleteRecurringRun: GatewayHandler = (req, _q, [id]) =>
    within("Failed to delete a recurring run", () => {
      const row = getRecurringRun(id!);
      within("Failed to authorize the request", () => authorize(req, row.namespace, "delete", "jobs", row.displayName));
      recurringRuns.delete(id!);
      return {};
    });

  // backend/api/v2beta1/*.proto google.api.http bindings
  const P = "/apis/v2beta1/pipelines";
  const E = "/apis/v2beta1/experiments";
  const R = "/apis/v2beta1/recurringruns";
  const ROUTES: [string, RegExp, GatewayHandler][] = [
    ["GET", new RegExp(`^${P}$`), listPipelines],
    ["POST", new RegExp(`^${P}$`), createPipeline],
    ["POST", new RegExp(`^${P}/create$`), createPipelineAndVersion],
    ["GET", new RegExp(`^${P}/names/([^/]+)$`), getPipelineByName],
    ["GET", new RegExp(`^${P}/([^/]+)$`), getPipelineById],
    ["DELETE", new RegExp(`^${P}/([^/]+)$`), deletePipeline],
    ["GET", new RegExp(`^${P}/([^/]+)/versions$`), listVersions],
    ["POST", new RegExp(`^${P}/([^/]+)/versions$`), createVersionFromUrl],
    ["GET", new RegExp(`^${P}/([^/]+)/versions/([^/]+)$`), getVersionById],
    ["DELETE", new RegExp(`^${P}/([^/]+)/versions/([^/]+)$`), deleteVersion],
    ["GET", new RegExp(`^${E}$`), listExperiments],
    ["POST", new RegExp(`^${E}$`), createExperiment],
    ["POST", new RegExp(`^${E}/([^/:]+):archive$`), archiveExperiment(true)],
    ["POST", new RegExp(`^${E}/([^/:]+):unarchive$`), archiveExperiment(false)],
    ["GET", new RegExp(`^${E}/([^/:]+)$`), getExperimentById],
    ["GET", new RegExp(`^${R}$`), listRecurringRuns],
    ["POST", new RegExp(`^${R}$`), createRecurringRun],
    ["POST", new RegExp(`^${R}/([^/:]+):enable$`), enableRecurringRun(true)],
    ["POST", new RegExp(`^${R}/([^/:]+):disable$`), enableRecurringRun(false)],
    ["GET", new RegExp(`^${R}/([^/:]+)$`), getRecurringRunById],
    ["DELETE", new RegExp(`^${R}/([^/:]+)$`), deleteRecurringRun],
  ];

  async function gateway(req: Request, url: URL, record: RecordedRequest, query: ReturnType<typeof parseGoQuery>): Promise<Response> {
    // The gateway matches the unescaped path: a %2F in a name is a path separator there.
    let pathname: string;
    try {
      pathname = decodeURIComponent(url.pathname);
    } catch {
      pathname = url.pathname;
    }
    const candidates = ROUTES.filter(([, pattern]) => pattern.test(pathname));
    const route = candidates.find(([method]) => method === req.method);
    // grpc-gateway v2 routing errors: unknown path → NotFound, known path with another method → Unimplemented.
    if (!route) return gatewayError(new UserError(candidates[0] ? 12 : 5, candidates[0] ? "Method Not Allowed" : "Not Found", "", true));
    if (query.error) return gatewayError(new UserError(3, query.error, "", true));
    const params = route[1].exec(pathname)!.slice(1);
    try {
      return json(200, await route[2](req, query.params, params, record));
    } catch (e) {
      if (e instanceof UserError) return gatewayError(e);
      throw e;
    }
  }

  // ------------------------------------------------------------------ dispatch

  /** main.go: json.Marshal of a struct (no spaces); v1beta1 has no pipeline_store. */
  const healthz = (v1: boolean) =>
    json(200, {
      commit_sha: opts.commitSha ?? RELEASE_COMMIT, tag_name: opts.version ?? "2.17.0", multi_user: multiUser,
      ...(v1 ? {} : { pipeline_store: "database" }),
    });

  function faultResponse(fault: Fault, isUpload: boolean): Response {
    if (fault.body !== undefined) {
      const type = tryJson(fault.body) === undefined ? "text/plain; charset=utf-8" : "application/json";
      return new Response(fault.body, { status: fault.status, headers: { "content-type": type } });
    }
    const text = STATUS_CODES[fault.status] ?? `HTTP ${fault.status}`;
    if (isUpload) return uploadError(fault.status, text, false);
    const code = Number(Object.entries(HTTP_STATUS).find(([, s]) => s === fault.status)?.[0] ?? 2);
    return json(fault.status, { code, message: text });
  }

  async function dispatch(req: Request, url: URL, record: RecordedRequest, rawQuery: string): Promise<Response> {
    const upload = url.pathname.match(UPLOAD_ROUTE)?.[1];
    const fault = faults.find((f) => f.remaining > 0 && f.route.test(`${req.method} ${url.pathname}`));
    if (fault) {
      fault.remaining--;
      return faultResponse(fault, !!upload);
    }
    if (opts.token && req.headers.get("authorization")?.replace(/^bearer /i, "Bearer ") !== `Bearer ${opts.token}`) {
      const err = unauthenticated();
      return upload ? uploadError(401, err.external) : gatewayError(err);
    }
    if (url.pathname === "/apis/v2beta1/healthz" || url.pathname === "/apis/v1beta1/healthz") return healthz(url.pathname.includes("v1beta1"));
    const query = parseGoQuery(rawQuery);
    record.query = Object.fromEntries(query.params);
    if (upload) {
      const handler = upload === "upload" ? uploadPipeline : uploadVersion;
      try {
        return json(200, await handler(req, query.params, query.error, record));
      } catch (e) {
        if (e instanceof Reply) return e.response;
        throw e;
      }
    }
    if (url.pathname.startsWith("/apis/")) return gateway(req, url, record, query);
    return new Response("404 page not found\n", { status: 404, headers: { "content-type": "text/plain; charset=utf-8", "x-content-type-options": "nosniff" } });
  }

  async function handle(req: Request, rawQuery: string): Promise<Response> {
    const url = new URL(req.url);
    const headers = Object.fromEntries(req.headers.entries());
    const record: RecordedRequest = { method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams), headers, status: 0 };
    requests.push(record);
    const res = await dispatch(req, url, record, rawQuery).catch(
      (e) => new Response(`fake KFP server bug: ${(e as Error).stack ?? e}`, { status: 500 }),
    );
    record.status = res.status;
    if (opts.log) process.stderr.write(`${req.method} ${url.pathname}${url.search} ${res.status}\n`);
    return res;
  }

  // node:http rather than Bun.serve: Bun.serve refuses request heads over 16 KiB with an empty 431, while Go
  // takes 1 MiB (a 100000-byte description is fine) and answers 431 with its own text beyond that.
  const server = createServer({ maxHeaderSize: 4 * MAX_HEADER_BYTES }, (incoming, outgoing) => {
    const rawUrl = incoming.url ?? "/";
    let headBytes = `${incoming.method} ${rawUrl} HTTP/1.1\r\n\r\n`.length;
    for (let i = 0; i < incoming.rawHeaders.length; i += 2) headBytes += Buffer.byteLength(`${incoming.rawHeaders[i]}: ${incoming.rawHeaders[i + 1]}\r\n`);
    if (headBytes > MAX_HEADER_BYTES) {
      incoming.resume();
      outgoing.writeHead(431, { "content-type": "text/plain; charset=utf-8", connection: "close" });
      outgoing.end("431 Request Header Fields Too Large");
      return;
    }
    const chunks: Buffer[] = [];
    incoming.on("data", (c: Buffer) => chunks.push(c));
    incoming.on("end", async () => {
      const method = incoming.method ?? "GET";
      const headers = new Headers();
      for (let i = 0; i < incoming.rawHeaders.length; i += 2) headers.append(incoming.rawHeaders[i]!, incoming.rawHeaders[i + 1]!);
      const hasBody = method !== "GET" && method !== "HEAD";
      const req = new Request(`http://127.0.0.1${rawUrl}`, { method, headers, body: hasBody ? Buffer.concat(chunks) : undefined });
      const q = rawUrl.indexOf("?");
      const res = await handle(req, q < 0 ? "" : rawUrl.slice(q + 1));
      outgoing.writeHead(res.status, Object.fromEntries(res.headers.entries()));
      outgoing.end(Buffer.from(await res.arrayBuffer()));
    });
  });
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, "127.0.0.1", () => resolve()));
  const port = (server.address() as { port: number }).port;

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
    failNext(route, status, times = 1, body) {
      faults.push({ route, status, remaining: times, body });
    },
    state: () => ({ pipelines: [...pipelines.values()].map(apiPipeline), versions: [...versions.values()].map(apiVersion) }),
    reset() {
      pipelines.clear();
      versions.clear();
      experiments.clear();
      recurringRuns.clear();
      addDefaultExperiment();
      requests.length = 0;
      faults = [];
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// CLI: bun test/kfp-server.ts --port 8888 [--token T] [--multi-user] [--version 2.17.0]

if (import.meta.main) {
  const args = process.argv.slice(2);
  const value = (flag: string) => {
    const i = args.indexOf(flag);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const server = await startKfpServer({
    port: Number(value("--port") ?? 0),
    token: value("--token"),
    multiUser: args.includes("--multi-user"),
    requireNamespace: args.includes("--require-namespace"),
    version: value("--version"),
    log: true,
  });
  process.stderr.write(`listening on ${server.url}\n`);
}
