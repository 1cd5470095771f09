/**
 * A KFP-faithful fake of the Kubeflow Pipelines API server: the v2beta1 pipeline routes only, in memory.
 * Tests, benchmarks and the README demo run kfp-sync against it because no real KFP server runs here.
 *
 * Behaviour follows kubeflow/pipelines on the 2.17 line (facts carried over, no code). Each rule names the
 * upstream file it comes from, relative to backend/src/apiserver/. Known differences from a real server:
 * - created_at has millisecond precision and is strictly increasing; upstream stores whole seconds
 *   (CreatedAtInSec) and breaks ties by UUID, so same-second uploads sort arbitrarily there.
 * - pipeline_spec is returned as uploaded; upstream re-marshals it through protojson (drops default values).
 * - Only .yaml/.yml uploads; upstream also unpacks .zip and .tar.gz. Argo (v1) workflows are rejected.
 * - String filters compare case-sensitively; upstream's MySQL collation may not.
 * - `token` models an auth proxy / token authenticator in front of the server (401 on every route).
 */
import { STATUS_CODES } from "node:http";
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
  /** Multi-user mode: namespaces are kept and scope pipelines; healthz reports multi_user. */
  multiUser?: boolean;
  /** REQUIRE_NAMESPACE_FOR_PIPELINES: in multi-user mode an empty namespace is a 400. Default true. */
  requireNamespace?: boolean;
  /** healthz tag_name. */
  version?: string;
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
  createdMs: number;
  tags?: Record<string, string>;
}

interface VersionRow {
  id: string;
  pipelineId: string;
  name: string;
  displayName: string;
  description: string;
  createdMs: number;
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
    readonly bare = false, // raised by grpc-gateway itself: no api.Error detail
  ) {
    super(internal);
  }
  wrap(context: string): UserError {
    return new UserError(this.code, `${context}: ${this.internal}`, this.external, this.bare);
  }
}

const invalidInput = (msg: string) => new UserError(3, `Invalid input error: ${msg}`, msg);
const invalidSpec = (msg: string, cause = "pipeline spec is invalid") =>
  new UserError(3, `InvalidInputError: ${msg}: ${cause}`, msg);
const notFound = (type: string, name: string) =>
  new UserError(5, `ResourceNotFoundError: ${type} ${name} not found.`, `${type} ${name} not found.`);
const alreadyExists = (msg: string) => new UserError(6, `Already exist error: ${msg}`, msg);
const internalError = (msg: string) => new UserError(13, `InternalServerError: ${msg}`, "Internal Server Error");
const unauthenticated = () =>
  new UserError(
    16,
    "Unauthenticated: Failed to check authorization. User identity is empty in the request header",
    "Failed to check authorization. User identity is empty in the request header",
  );

// grpc-gateway v2 HTTPStatusFromCode
const HTTP_STATUS: Record<number, number> = { 3: 400, 5: 404, 6: 409, 7: 403, 9: 400, 10: 409, 12: 501, 13: 500, 14: 503, 16: 401 };

function json(status: number, body: unknown, contentType = "application/json"): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": contentType } });
}

/** grpc-gateway v2 error body: google.rpc.Status with a KFP api.Error detail (util.ToGRPCError). */
function gatewayError(err: UserError): Response {
  const details = [{ "@type": "type.googleapis.com/api.Error", error_message: err.external, error_details: err.internal }];
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
  if (value.length > max) throw invalidInput(`${column} length cannot exceed ${max}`);
}

// ---------------------------------------------------------------------------------------------------------
// Listing: list/list.go (paging, sorting, page tokens) and filter/filter.go (predicates)

type FieldGetter<R> = (row: R) => string | number;
const PIPELINE_FIELDS: Record<string, FieldGetter<PipelineRow>> = {
  id: (r) => r.id, pipeline_id: (r) => r.id, name: (r) => r.name, display_name: (r) => r.displayName,
  created_at: (r) => r.createdMs, description: (r) => r.description, namespace: (r) => r.namespace,
};
const VERSION_FIELDS: Record<string, FieldGetter<VersionRow>> = {
  id: (r) => r.id, pipeline_version_id: (r) => r.id, name: (r) => r.name, display_name: (r) => r.displayName,
  created_at: (r) => r.createdMs, status: () => "READY", description: (r) => r.description, pipeline_spec: (r) => r.specYaml,
};
const OPERATIONS = new Set(["EQUALS", "NOT_EQUALS", "GREATER_THAN", "GREATER_THAN_EQUALS", "LESS_THAN", "LESS_THAN_EQUALS", "IN", "IS_SUBSTRING"]);
const OPERATION_NUMBERS: Record<number, string> = { 0: "OPERATION_UNSPECIFIED", 1: "EQUALS", 2: "NOT_EQUALS", 3: "GREATER_THAN", 5: "GREATER_THAN_EQUALS", 6: "LESS_THAN", 7: "LESS_THAN_EQUALS", 8: "IN", 9: "IS_SUBSTRING" };
const VALUE_FIELDS = new Set(["int_value", "long_value", "string_value", "timestamp_value", "int_values", "long_values", "string_values"]);
const protoName = (key: string) => key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

interface Predicate { key: string; operation: string; value: string | number | (string | number)[] }

/** The filter query value is URL-decoded once more by the server and parsed strictly as a v2beta1 Filter. */
function parseFilter(raw: string, keys: string[]): Predicate[] {
  const parsed = tryJson(decodeURIComponent(raw.replace(/\+/g, " ")));
  if (!isObject(parsed)) throw invalidInput("failed to parse filter spec: proto: syntax error: unexpected token");
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

const compare = (a: string | number, b: string | number) => (a < b ? -1 : a > b ? 1 : 0);

function matches<R extends { createdMs: number; tags?: Record<string, string> }>(row: R, fields: Record<string, FieldGetter<R>>, p: Predicate): boolean {
  // Filters compare created_at in whole seconds (filter.go converts timestamps with ts.Unix()).
  const v = p.key.startsWith("tags.") ? row.tags?.[p.key.slice(5)] ?? "" : p.key === "created_at" ? Math.floor(row.createdMs / 1000) : fields[p.key]!(row);
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

interface PageToken { SortByFieldName: string; SortByFieldValue: string | number; KeyFieldValue: string; IsDesc: boolean; Filter: string }

/** One page of rows, the total count of matches, and the token for the next page ("" on the last). */
function listPage<R extends { id: string; createdMs: number; tags?: Record<string, string> }>(
  rows: R[], fields: Record<string, FieldGetter<R>>, listable: string, q: URLSearchParams,
): { items: R[]; total: number; next: string } {
  const rawSize = q.get("page_size") ?? "0";
  if (!/^-?\d+$/.test(rawSize)) {
    throw new UserError(3, `type mismatch, parameter: page_size, error: strconv.ParseInt: parsing "${rawSize}": invalid syntax`, "", true);
  }
  let pageSize = Number(rawSize);
  if (pageSize < 0) throw invalidInput(`The page size should be greater than 0. Got ${pageSize}`);
  pageSize = pageSize === 0 ? DEFAULT_PAGE_SIZE : Math.min(pageSize, MAX_PAGE_SIZE);

  const fromRequest = (): Omit<PageToken, "SortByFieldValue" | "KeyFieldValue"> => {
    const sortBy = q.get("sort_by") ?? "";
    const words = sortBy.toLowerCase().split(/\s+/).filter(Boolean);
    if (words.length > 2 || (words.length === 2 && words[1] !== "asc" && words[1] !== "desc")) {
      throw invalidInput(`Received invalid sort by format "${sortBy}". Supported format: "field_name", "field_name desc", or "field_name asc"`);
    }
    if (words[0] && !(words[0] in fields)) throw invalidInput(`Invalid sorting field: "${words[0]}" on listable type ${listable}`);
    const filter = q.get("filter") ? JSON.stringify(parseFilter(q.get("filter")!, Object.keys(fields))) : "";
    return { SortByFieldName: words[0] ?? "created_at", IsDesc: words[1] === "desc", Filter: filter };
  };

  let opts: Omit<PageToken, "SortByFieldValue" | "KeyFieldValue">;
  let cursor: PageToken | undefined;
  const rawToken = q.get("page_token");
  if (rawToken) {
    try {
      cursor = JSON.parse(Buffer.from(rawToken, "base64").toString("utf8")) as PageToken;
      if (!cursor.SortByFieldName) throw new Error("missing sort field");
    } catch (e) {
      throw new UserError(3, `InvalidInputError: Invalid package token: ${(e as Error).message}`, "Invalid package token");
    }
    opts = cursor;
    // A page token carries its own sort and filter; repeating them is allowed only if they match.
    if (q.get("sort_by") || q.get("filter")) {
      const fresh = fromRequest();
      if (fresh.SortByFieldName !== cursor.SortByFieldName || fresh.IsDesc !== cursor.IsDesc || fresh.Filter !== cursor.Filter) {
        throw invalidInput("page token does not match the supplied sort by and/or filtering criteria. Either specify the same criteria or leave the latter empty if page token is specified.");
      }
    }
  } else {
    opts = fromRequest();
  }

  const predicates: Predicate[] = opts.Filter ? JSON.parse(opts.Filter) : [];
  const sortValue = fields[opts.SortByFieldName]!;
  const sign = opts.IsDesc ? -1 : 1;
  // ORDER BY sort field, then UUID, both in the requested direction.
  const sorted = rows
    .filter((r) => predicates.every((p) => matches(r, fields, p)))
    .sort((a, b) => sign * (compare(sortValue(a), sortValue(b)) || compare(a.id, b.id)));
  // The token names the first row of the next page, so that row is included (>=).
  const start = cursor
    ? sorted.filter((r) => sign * (compare(sortValue(r), cursor!.SortByFieldValue) || compare(r.id, cursor!.KeyFieldValue)) >= 0)
    : sorted;
  const items = start.slice(0, pageSize);
  const following = start[pageSize];
  const next = following
    ? Buffer.from(JSON.stringify({ ...opts, SortByFieldValue: sortValue(following), KeyFieldValue: following.id })).toString("base64")
    : "";
  return { items, total: sorted.length, next };
}

// ---------------------------------------------------------------------------------------------------------
// JSON output: protojson with UseProtoNames and without EmitUnpopulated (common.CustomMarshaler)

/** Empty strings, zero numbers, empty lists and maps are left out, as protojson does. */
function omitEmpty<T extends Json>(o: T): T {
  const present = ([, v]: [string, unknown]) => v !== undefined && v !== "" && v !== 0 && !(isObject(v) && Object.keys(v).length === 0) && !(Array.isArray(v) && v.length === 0);
  return Object.fromEntries(Object.entries(o).filter(present)) as T;
}

/** google.protobuf.Timestamp in JSON: RFC 3339 in UTC, fractional seconds only when non-zero. */
const timestamp = (ms: number) => new Date(ms).toISOString().replace(".000Z", "Z");

const apiPipeline = (p: PipelineRow): Pipeline => omitEmpty({
  pipeline_id: p.id, display_name: p.displayName, name: p.name, description: p.description,
  created_at: timestamp(p.createdMs), namespace: p.namespace, tags: p.tags,
});

const apiVersion = (v: VersionRow): PipelineVersion => omitEmpty({
  pipeline_id: v.pipelineId, pipeline_version_id: v.id, display_name: v.displayName, name: v.name,
  description: v.description, created_at: timestamp(v.createdMs),
  package_url: v.packageUrl ? { pipeline_url: v.packageUrl } : undefined,
  code_source_url: v.codeSourceUrl, pipeline_spec: v.spec, tags: v.tags,
});

// ---------------------------------------------------------------------------------------------------------
// The server

type NewPipeline = Omit<PipelineRow, "id" | "createdMs">;
type NewVersion = Omit<VersionRow, "id" | "createdMs" | "pipelineId" | "spec">;
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

export async function startKfpServer(opts: KfpServerOptions = {}): Promise<KfpServer> {
  const multiUser = opts.multiUser ?? false;
  const requireNamespace = multiUser && (opts.requireNamespace ?? true);
  const pipelines = new Map<string, PipelineRow>();
  const versions = new Map<string, VersionRow>();
  const requests: RecordedRequest[] = [];
  let faults: Fault[] = [];
  let lastMs = 0;

  // resource_manager.go ReplaceNamespace, validation/namespace.go ValidateNamespaceRequired
  const resolveNamespace = (namespace: string): string => {
    const ns = multiUser ? namespace : "";
    if (requireNamespace && ns === "") throw invalidInput("Namespace is required for pipeline operations");
    return ns;
  };

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

  // storage/pipeline_store.go: (Namespace, Name) is unique among pipelines, (PipelineId, Name) among versions.
  const addPipeline = (p: NewPipeline): PipelineRow => {
    if ([...pipelines.values()].some((r) => r.namespace === p.namespace && r.name === p.name)) {
      throw alreadyExists(`Failed to create a new pipeline. The name ${p.name} already exist. Please specify a new name`);
    }
    const row = { ...p, id: crypto.randomUUID(), createdMs: (lastMs = Math.max(Date.now(), lastMs + 1)) };
    pipelines.set(row.id, row);
    return row;
  };

  const addVersion = (pipelineId: string, v: NewVersion, spec = parseTemplate(v.specYaml)): VersionRow => {
    if ([...versions.values()].some((r) => r.pipelineId === pipelineId && r.name === v.name)) {
      throw alreadyExists(`Failed to create a new pipeline version. The name ${v.name} already exist. Specify a new name`);
    }
    const row = { ...v, pipelineId, spec, id: crypto.randomUUID(), createdMs: (lastMs = Math.max(Date.now(), lastMs + 1)) };
    versions.set(row.id, row);
    return row;
  };

  /** resource_manager.go CreatePipelineAndPipelineVersion: the template is checked before anything is stored. */
  const addPipelineWithVersion = (p: NewPipeline, v: NewVersion): PipelineRow => {
    const spec = parseTemplate(v.specYaml);
    const pipeline = addPipeline(p);
    addVersion(pipeline.id, v, spec);
    return pipeline;
  };

  // ------------------------------------------------------------------ upload routes: server/pipeline_upload_server.go
  // Plain HTTP handlers beside the gateway. Checks run in upstream's order, each with upstream's response.

  /** server/util.go ReadPipelineFile: size cap first, then the file name decides the format. */
  async function readUpload(req: Request, record: RecordedRequest, noFile: string, unreadable: string) {
    const file = await req.formData().then((form) => form.get("uploadfile"), () => null);
    if (!(file instanceof File)) throw new Reply(uploadError(400, noFile));
    record.filename = file.name;
    if (file.size > MAX_FILE_BYTES || !/\.ya?ml$/.test(file.name)) throw new Reply(uploadError(400, unreadable));
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

  /** UploadPipeline: creates the pipeline and a first version with the same name. */
  async function uploadPipeline(req: Request, q: URLSearchParams, record: RecordedRequest): Promise<unknown> {
    const file = await readUpload(req, record, "Failed to read pipeline from file", "Failed to read a pipeline spec file");
    const namespace = orPlainText(() => {
      checkLength("Pipeline.Namespace", q.get("namespace") ?? "");
      return resolveNamespace(q.get("namespace") ?? "");
    });
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
  async function uploadVersion(req: Request, q: URLSearchParams, record: RecordedRequest): Promise<unknown> {
    const failed = "Failed to create a pipeline version";
    const file = await readUpload(req, record, failed, failed);
    const pipelineId = q.get("pipelineid") ?? "";
    if (!pipelineId) throw new Reply(uploadError(400, failed));
    const name = q.get("name") || q.get("display_name") || file.filename;
    orPlainText(() => checkLength("PipelineVersion.Name", name));
    const parent = pipelines.get(pipelineId);
    if (!parent) throw new Reply(uploadError(400, failed));
    orPlainText(() => parent.namespace || resolveNamespace(""));
    const version = {
      name, displayName: q.get("display_name") || name, description: q.get("description") ?? "", specYaml: file.text,
      codeSourceUrl: q.get("code_source_url") ?? "", packageUrl: "", tags: parseTags(q),
    };
    return apiVersion(orUploadError(failed, () => addVersion(pipelineId, version)));
  }

  // ------------------------------------------------------------------ gateway routes: server/pipeline_server.go

  async function readBody(req: Request, record: RecordedRequest): Promise<Json> {
    record.body = await req.text();
    if (record.body.trim() === "") return {}; // grpc-gateway treats an empty body as an empty message
    const body = tryJson(record.body);
    if (isObject(body)) return body;
    throw new UserError(3, "proto: syntax error (line 1:1): unexpected token", "", true);
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
    if (!/\.ya?ml$/.test(new URL(url).pathname)) throw invalidInput("Unexpected pipeline file format. Support .zip, .tar.gz or YAML.");
    return text;
  }

  const listOptionsError = (what: string, q: URLSearchParams) =>
    `Failed to list ${what} due invalid list options: pageToken: ${q.get("page_token") ?? ""}, pageSize: ${q.get("page_size") ?? 0}, sortBy: ${q.get("sort_by") ?? ""}, filter: ${q.get("filter") ?? ""}`;

  // The list handlers page first: upstream validates list options before it checks the namespace or the parent.
  const listPipelines: GatewayHandler = (_req, q) => {
    const namespace = q.get("namespace") ?? "";
    const rows = [...pipelines.values()].filter((p) => p.namespace === (multiUser ? namespace : ""));
    const page = within(listOptionsError("pipelines", q), () => listPage(rows, PIPELINE_FIELDS, "Pipeline", q));
    within(`Failed to list pipelines in namespace ${namespace}. Check error stack`, () => resolveNamespace(namespace));
    return omitEmpty({ pipelines: page.items.map(apiPipeline), total_size: page.total, next_page_token: page.next });
  };

  const createPipeline: GatewayHandler = async (req, _q, _p, record) => {
    const body = await readBody(req, record);
    const model = within("Failed to create a pipeline as pipeline conversion failed", () => toModelPipeline(body));
    return within("Failed to create a pipeline due to server error", () => {
      model.namespace = resolveNamespace(model.namespace);
      if (!model.name) throw invalidInput("name is required");
      return apiPipeline(within("Failed to create a pipeline in PipelineStore", () => addPipeline(model)));
    });
  };

  const createPipelineAndVersion: GatewayHandler = async (req, _q, _p, record) => {
    const body = await readBody(req, record);
    const version = (field(body, "pipelineVersion", "pipeline_version") ?? {}) as Json;
    const url = packageUrl(version);
    return within("Failed to create a pipeline", async () => {
      const model = toModelPipeline(isObject(body.pipeline) ? body.pipeline : {});
      model.name ||= url.split("/").pop() ?? "";
      model.displayName ||= model.name;
      model.namespace = resolveNamespace(model.namespace);
      const specYaml = await downloadSpec(url);
      const tags = isObject(version.tags) ? (version.tags as Record<string, string>) : undefined;
      const { name, displayName, description } = model;
      const pipeline = within("Failed to create a pipeline and a pipeline version", () =>
        addPipelineWithVersion(model, { name, displayName, description, specYaml, codeSourceUrl: "", packageUrl: url, tags }));
      return apiPipeline(pipeline);
    });
  };

  const getPipelineById: GatewayHandler = (_req, _q, [id]) =>
    within(`Failed to get a pipeline ${id}. Check error stack`, () => apiPipeline(getPipeline(id!)));

  const getPipelineByName: GatewayHandler = (_req, q, [name]) => {
    const namespace = q.get("namespace") ?? "";
    return within(`Failed to get a pipeline with name ${name} and namespace ${namespace}. Check error stack.`, () => {
      const ns = resolveNamespace(namespace);
      // pipeline_store.go: an empty namespace does not filter, and the newest match wins.
      const found = [...pipelines.values()]
        .filter((p) => p.name === name && (ns === "" || p.namespace === ns))
        .sort((a, b) => b.createdMs - a.createdMs)[0];
      if (!found) throw notFound("Namespace/Pipeline", `${ns}/${name}`).wrap(`Failed to get a pipeline named ${name} in namespace ${ns}`);
      return apiPipeline(found);
    });
  };

  /** resource_manager.go DeletePipeline: refused while versions exist unless cascade=true. */
  const deletePipeline: GatewayHandler = (_req, q, [id]) =>
    within(`Failed to delete pipeline ${id}. Check error stack`, () => {
      within(`Failed to delete pipeline with id ${id} as it was not found`, () => getPipeline(id!));
      const children = [...versions.values()].filter((v) => v.pipelineId === id).sort((a, b) => b.createdMs - a.createdMs);
      if (children[0] && q.get("cascade") !== "true") {
        throw invalidInput(`Failed to delete pipeline with id ${id} as it has existing pipeline versions (e.g. ${children[0].id}). Set cascade=true to delete all versions`);
      }
      for (const v of children) versions.delete(v.id);
      pipelines.delete(id!);
      return {};
    });

  const listVersions: GatewayHandler = (_req, q, [pipelineId]) => {
    const rows = [...versions.values()].filter((v) => v.pipelineId === pipelineId);
    const page = within(listOptionsError("pipeline versions", q), () => listPage(rows, VERSION_FIELDS, "PipelineVersion", q));
    within(`Failed to list pipeline versions for pipeline ${pipelineId}`, () =>
      within(`Failed to list pipeline versions due to error fetching the namespace for pipeline ${pipelineId}`, () =>
        within(`Failed to get namespace for pipeline id ${pipelineId}`, () => getPipeline(pipelineId!))));
    return omitEmpty({ pipeline_versions: page.items.map(apiVersion), next_page_token: page.next, total_size: page.total });
  };

  /** CreatePipelineVersion: both the path and the body must name the parent pipeline. */
  const createVersionFromUrl: GatewayHandler = async (req, _q, [pipelineId], record) => {
    const body = await readBody(req, record);
    if (!field(body, "packageUrl", "package_url")) throw invalidInput("Failed to create a pipeline version. Package URL is nil");
    const url = packageUrl(body);
    if (!url) throw invalidInput("Failed to create a pipeline version. Package URL is empty");
    if (!field(body, "pipelineId", "pipeline_id")) throw invalidInput("Failed to create a pipeline version. Parent pipeline id is empty");
    const name = String(body.name || field(body, "displayName", "display_name") || "");
    return within("Failed to create a pipeline version. Check error stack", async () => {
      if (!name) throw invalidInput("name is required");
      getPipeline(pipelineId!);
      const version = {
        name, displayName: String(field(body, "displayName", "display_name") || name), description: String(body.description ?? ""),
        specYaml: await downloadSpec(url), codeSourceUrl: String(field(body, "codeSourceUrl", "code_source_url") ?? ""),
        packageUrl: url, tags: isObject(body.tags) ? (body.tags as Record<string, string>) : undefined,
      };
      return apiVersion(addVersion(pipelineId!, version));
    });
  };

  // GetPipelineVersion and DeletePipelineVersion look the version up by its own id; the pipeline id goes unchecked.
  const getVersionById: GatewayHandler = (_req, _q, [, versionId]) =>
    within(`Failed to get a pipeline version ${versionId}`, () => apiVersion(getVersion(versionId!)));

  const deleteVersion: GatewayHandler = (_req, _q, [pipelineId, versionId]) =>
    within(`Failed to delete a pipeline version id ${versionId} under pipeline id ${pipelineId}. Check error stack`, () => {
      within(`Failed to delete pipeline version with id ${versionId} as it was not found`, () => getVersion(versionId!));
      versions.delete(versionId!);
      return {};
    });

  // backend/api/v2beta1/pipeline.proto google.api.http bindings
  const P = "/apis/v2beta1/pipelines";
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
  ];

  async function gateway(req: Request, url: URL, record: RecordedRequest): Promise<Response> {
    const candidates = ROUTES.filter(([, pattern]) => pattern.test(url.pathname));
    const route = candidates.find(([method]) => method === req.method);
    // grpc-gateway v2 routing errors: unknown path → NotFound, known path with another method → Unimplemented.
    if (!route) return gatewayError(new UserError(candidates[0] ? 12 : 5, candidates[0] ? "Method Not Allowed" : "Not Found", "", true));
    const params = route[1].exec(url.pathname)!.slice(1).map(decodeURIComponent);
    try {
      return json(200, await route[2](req, url.searchParams, params, record));
    } catch (e) {
      if (e instanceof UserError) return gatewayError(e);
      throw e;
    }
  }

  // ------------------------------------------------------------------ dispatch

  /** main.go writes the healthz body by hand, spaces included. */
  const healthz = () =>
    new Response(`{"commit_sha":"unknown", "tag_name":"${opts.version ?? "2.17.3"}", "multi_user":${multiUser}, "pipeline_store": "database"}`, {
      headers: { "content-type": "application/json" },
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

  async function dispatch(req: Request, url: URL, record: RecordedRequest): Promise<Response> {
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
    if (url.pathname === "/apis/v2beta1/healthz") return healthz();
    // Go's net/url refuses a whole query holding a raw `;` (or, on uploads, a bad %-escape); the upload
    // handlers then fail to read the form (contract cases upload-description-raw-semicolon, list-raw-semicolon).
    if (upload && /;|%(?![0-9a-fA-F]{2})/.test(url.search)) return uploadError(400, upload === "upload" ? "Failed to read pipeline from file" : "Failed to create a pipeline version");
    if (url.search.includes(";")) return json(400, { code: 3, message: "invalid semicolon separator in query" });
    if (upload) {
      const handler = upload === "upload" ? uploadPipeline : uploadVersion;
      try {
        return json(200, await handler(req, url.searchParams, record));
      } catch (e) {
        if (e instanceof Reply) return e.response;
        throw e;
      }
    }
    if (url.pathname.startsWith("/apis/")) return gateway(req, url, record);
    return new Response("404 page not found\n", { status: 404, headers: { "content-type": "text/plain; charset=utf-8" } });
  }

  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: opts.port ?? 0,
    maxRequestBodySize: 2 * MAX_FILE_BYTES, // let oversized uploads reach the handler's own 32 MiB check
    async fetch(req) {
      const url = new URL(req.url);
      const headers = Object.fromEntries(req.headers.entries());
      const record: RecordedRequest = { method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams), headers, status: 0 };
      requests.push(record);
      const res = await dispatch(req, url, record).catch(
        (e) => new Response(`fake KFP server bug: ${(e as Error).stack ?? e}`, { status: 500 }),
      );
      record.status = res.status;
      if (opts.log) process.stderr.write(`${req.method} ${url.pathname}${url.search} ${res.status}\n`);
      return res;
    },
  });

  return {
    url: `http://127.0.0.1:${server.port}`,
    requests,
    stop: () => server.stop(true),
    failNext(route, status, times = 1, body) {
      faults.push({ route, status, remaining: times, body });
    },
    state: () => ({ pipelines: [...pipelines.values()].map(apiPipeline), versions: [...versions.values()].map(apiVersion) }),
    reset() {
      pipelines.clear();
      versions.clear();
      requests.length = 0;
      faults = [];
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// CLI: bun test/kfp-server.ts --port 8888 [--token T] [--multi-user] [--version 2.17.3]

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
    version: value("--version"),
    log: true,
  });
  process.stderr.write(`listening on ${server.url}\n`);
}
