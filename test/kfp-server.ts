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
const field = (o: Json, camel: string, snake: string) => o[camel] ?? o[snake];

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

function checkLength(column: keyof typeof MAX_LENGTH, value: string): UserError | undefined {
  const max = MAX_LENGTH[column];
  return value.length > max ? invalidInput(`${column} length cannot exceed ${max}`) : undefined;
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
const VALUE_FIELDS: Record<string, string> = {
  int_value: "int_value", intValue: "int_value", long_value: "long_value", longValue: "long_value",
  string_value: "string_value", stringValue: "string_value", timestamp_value: "timestamp_value", timestampValue: "timestamp_value",
  int_values: "int_values", intValues: "int_values", long_values: "long_values", longValues: "long_values",
  string_values: "string_values", stringValues: "string_values",
};

interface Predicate { key: string; operation: string; value: string | number | (string | number)[] }

/** The filter query value is URL-decoded once more by the server and parsed strictly as a v2beta1 Filter. */
function parseFilter(raw: string, keys: string[]): Predicate[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(decodeURIComponent(raw.replace(/\+/g, " ")));
  } catch (e) {
    throw invalidInput(`failed to parse filter spec: proto: syntax error: ${(e as Error).message}`);
  }
  if (!isObject(parsed)) throw invalidInput("failed to parse filter spec: proto: unexpected token");
  const unknownTop = Object.keys(parsed).find((k) => k !== "predicates");
  if (unknownTop) throw invalidInput(`failed to parse filter spec: proto: unknown field "${unknownTop}"`);
  return ((parsed.predicates ?? []) as Json[]).map((p) => {
    const unknown = Object.keys(p).find((k) => k !== "key" && k !== "operation" && !(k in VALUE_FIELDS));
    if (unknown) throw invalidInput(`failed to parse filter spec: proto: unknown field "${unknown}"`);
    const key = String(p.key ?? "");
    const operation = String(p.operation ?? "OPERATION_UNSPECIFIED");
    const valueField = Object.keys(p).find((k) => k in VALUE_FIELDS);
    if (!valueField) throw invalidInput(`no value set for predicate on key "${key}"`);
    const kind = VALUE_FIELDS[valueField]!;
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

interface Fault { route: RegExp; status: number; remaining: number; body?: string }

export async function startKfpServer(opts: KfpServerOptions = {}): Promise<KfpServer> {
  const multiUser = opts.multiUser ?? false;
  const requireNamespace = multiUser && (opts.requireNamespace ?? true);
  const pipelines = new Map<string, PipelineRow>();
  const versions = new Map<string, VersionRow>();
  const requests: RecordedRequest[] = [];
  let faults: Fault[] = [];
  let lastMs = 0;
  const nextCreatedMs = () => (lastMs = Math.max(Date.now(), lastMs + 1));

  // resource_manager.go ReplaceNamespace + validation/namespace.go ValidateNamespaceRequired
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

  // storage/pipeline_store.go: (Namespace, Name) is unique for pipelines, (PipelineId, Name) for versions.
  const insertPipeline = (p: Omit<PipelineRow, "id" | "createdMs">): PipelineRow => {
    const taken = [...pipelines.values()].some((r) => r.namespace === p.namespace && r.name === p.name);
    if (taken) throw alreadyExists(`Failed to create a new pipeline. The name ${p.name} already exist. Please specify a new name`);
    const row = { ...p, id: crypto.randomUUID(), createdMs: nextCreatedMs() };
    pipelines.set(row.id, row);
    return row;
  };

  const insertVersion = (v: Omit<VersionRow, "id" | "createdMs">): VersionRow => {
    const taken = [...versions.values()].some((r) => r.pipelineId === v.pipelineId && r.name === v.name);
    if (taken) throw alreadyExists(`Failed to create a new pipeline version. The name ${v.name} already exist. Specify a new name`);
    const row = { ...v, id: crypto.randomUUID(), createdMs: nextCreatedMs() };
    versions.set(row.id, row);
    return row;
  };

  /** resource_manager.go CreatePipelineAndPipelineVersion: the template is checked before the name is. */
  const createPipelineWithVersion = (p: Omit<PipelineRow, "id" | "createdMs">, v: Omit<VersionRow, "id" | "createdMs" | "pipelineId" | "spec">): PipelineRow => {
    const spec = parseTemplate(v.specYaml);
    const pipeline = insertPipeline(p);
    insertVersion({ ...v, pipelineId: pipeline.id, spec });
    return pipeline;
  };

  const createVersion = (v: Omit<VersionRow, "id" | "createdMs" | "spec">): VersionRow => {
    const spec = parseTemplate(v.specYaml);
    return insertVersion({ ...v, spec });
  };

  // ------------------------------------------------------------------ upload routes (HTTP only, not gRPC)

  /** server/util.go ReadPipelineFile: size cap, then the file name decides the format. */
  async function readUpload(req: Request, record: RecordedRequest): Promise<{ text: string; filename: string } | "no-file" | "unreadable"> {
    let file: unknown;
    try {
      file = (await req.formData()).get("uploadfile");
    } catch {
      return "no-file";
    }
    if (!(file instanceof Blob)) return "no-file";
    const filename = (file as File).name ?? "";
    record.filename = filename;
    if (file.size > MAX_FILE_BYTES || !/\.ya?ml$/.test(filename)) return "unreadable";
    record.body = await file.text();
    return { text: record.body, filename };
  }

  const parseTags = (q: URLSearchParams): Record<string, string> | undefined | "bad" => {
    const raw = q.get("tags");
    if (!raw) return undefined;
    try {
      const tags = JSON.parse(raw);
      return isObject(tags) && Object.values(tags).every((t) => typeof t === "string") ? (tags as Record<string, string>) : "bad";
    } catch {
      return "bad";
    }
  };
  const TAGS_ERROR = "Failed to parse tags query parameter. Expected JSON object with string keys and values";

  /** server/pipeline_upload_server.go UploadPipeline: creates the pipeline and a first version of the same name. */
  async function uploadPipeline(req: Request, q: URLSearchParams, record: RecordedRequest): Promise<Response> {
    const upload = await readUpload(req, record);
    if (upload === "no-file") return uploadError(400, "Failed to read pipeline from file");
    if (upload === "unreadable") return uploadError(400, "Failed to read a pipeline spec file");
    const tooLong = checkLength("Pipeline.Namespace", q.get("namespace") ?? "");
    if (tooLong) return plainError(tooLong);
    let namespace: string;
    try {
      namespace = resolveNamespace(q.get("namespace") ?? "");
    } catch (e) {
      return plainError(e as UserError);
    }
    const name = q.get("name") || q.get("display_name") || upload.filename;
    const displayName = q.get("display_name") || name;
    const description = q.get("description") ?? "";
    const tags = parseTags(q);
    if (tags === "bad") return uploadError(400, TAGS_ERROR);
    const nameTooLong = checkLength("Pipeline.Name", name);
    if (nameTooLong) return plainError(nameTooLong);
    try {
      const pipeline = createPipelineWithVersion(
        { name, displayName, description, namespace, tags },
        { name, displayName, description, specYaml: upload.text, codeSourceUrl: q.get("code_source_url") ?? "", packageUrl: "" },
      );
      return json(200, apiPipeline(pipeline));
    } catch (e) {
      return uploadFailure(e, "Failed to create a pipeline and a pipeline version");
    }
  }

  /** server/pipeline_upload_server.go UploadPipelineVersion: the namespace comes from the parent pipeline. */
  async function uploadVersion(req: Request, q: URLSearchParams, record: RecordedRequest): Promise<Response> {
    const failed = "Failed to create a pipeline version";
    const upload = await readUpload(req, record);
    if (typeof upload === "string") return uploadError(400, failed);
    const pipelineId = q.get("pipelineid") ?? "";
    if (!pipelineId) return uploadError(400, failed);
    const name = q.get("name") || q.get("display_name") || upload.filename;
    const displayName = q.get("display_name") || name;
    const tooLong = checkLength("PipelineVersion.Name", name);
    if (tooLong) return plainError(tooLong);
    const parent = pipelines.get(pipelineId);
    if (!parent) return uploadError(400, failed);
    if (requireNamespace && parent.namespace === "") return plainError(invalidInput("Namespace is required for pipeline operations"));
    const tags = parseTags(q);
    if (tags === "bad") return uploadError(400, TAGS_ERROR);
    try {
      const version = createVersion({
        pipelineId, name, displayName, description: q.get("description") ?? "", specYaml: upload.text,
        codeSourceUrl: q.get("code_source_url") ?? "", packageUrl: "", tags,
      });
      return json(200, apiVersion(version));
    } catch (e) {
      return uploadFailure(e, failed);
    }
  }

  /** AlreadyExists → 409 and InvalidArgument → 400 with the clean external message; anything else → 500. */
  function uploadFailure(e: unknown, generic: string): Response {
    if (!(e instanceof UserError)) throw e;
    if (e.code === 6) return uploadError(409, generic, false);
    if (e.code === 3) return uploadError(400, e.external, false);
    return uploadError(500, generic, false);
  }

  // ------------------------------------------------------------------ gateway routes: server/pipeline_server.go

  async function readBody(req: Request, record: RecordedRequest): Promise<Json> {
    record.body = await req.text();
    if (record.body.trim() === "") return {}; // grpc-gateway ignores an empty body (io.EOF)
    try {
      const body = JSON.parse(record.body);
      if (isObject(body)) return body;
    } catch {}
    throw new UserError(3, "proto: syntax error (line 1:1): unexpected token", "", true);
  }

  /** server/api_converter.go toModelPipeline: name and display_name stand in for each other. */
  const toModelPipeline = (body: Json) => {
    const name = String(body.name || body.display_name || body.displayName || "");
    const model = {
      name, displayName: String(body.display_name || body.displayName || name), description: String(body.description ?? ""),
      namespace: String(body.namespace ?? ""), tags: isObject(body.tags) ? (body.tags as Record<string, string>) : undefined,
    };
    const tooLong = checkLength("Pipeline.Name", name) ?? checkLength("Pipeline.Namespace", model.namespace);
    if (tooLong) throw internalError(`Failed to convert API pipeline to model pipeline: ${tooLong.internal}`);
    return model;
  };

  /** CreatePipelineVersion and CreatePipelineAndVersion download the spec from package_url. */
  async function downloadSpec(url: string): Promise<string> {
    let res: Response;
    try {
      res = await fetch(url);
    } catch {
      throw internalError(`error downloading the pipeline spec from ${url}`);
    }
    if (res.status !== 200) throw invalidInput(`Failed to fetch pipeline spec with url: ${url}. Request returned ${res.status} ${res.statusText}`);
    const text = await res.text();
    if (text.length > MAX_FILE_BYTES) throw invalidInput(`File size too large. Maximum supported size: ${MAX_FILE_BYTES}`);
    if (!/\.ya?ml$/.test(new URL(url).pathname)) throw invalidInput("Unexpected pipeline file format. Support .zip, .tar.gz or YAML.");
    return text;
  }

  type GatewayHandler = (req: Request, q: URLSearchParams, params: string[], record: RecordedRequest) => Promise<unknown> | unknown;

  // Upstream validates list options before it looks at the namespace or the parent pipeline, so the
  // list handlers page first (pure) and check those afterwards to report errors in the same order.
  const listPipelines: GatewayHandler = (_req, q) => {
    const namespace = q.get("namespace") ?? "";
    const rows = [...pipelines.values()].filter((p) => p.namespace === (multiUser ? namespace : ""));
    const page = listOrWrap(rows, PIPELINE_FIELDS, "Pipeline", q, "pipelines");
    try {
      resolveNamespace(namespace);
    } catch (e) {
      throw (e as UserError).wrap(`Failed to list pipelines in namespace ${namespace}. Check error stack`);
    }
    return omitEmpty({ pipelines: page.items.map(apiPipeline), total_size: page.total, next_page_token: page.next });
  };

  const listOrWrap = <R extends { id: string; createdMs: number }>(rows: R[], fields: Record<string, FieldGetter<R>>, listable: string, q: URLSearchParams, what: string) => {
    try {
      return listPage(rows, fields, listable, q);
    } catch (e) {
      if (!(e instanceof UserError) || e.bare) throw e;
      throw e.wrap(`Failed to list ${what} due invalid list options: pageToken: ${q.get("page_token") ?? ""}, pageSize: ${q.get("page_size") ?? 0}, sortBy: ${q.get("sort_by") ?? ""}, filter: ${q.get("filter") ?? ""}`);
    }
  };

  const createPipeline: GatewayHandler = async (req, _q, _p, record) => {
    const wrap = "Failed to create a pipeline due to server error";
    let model;
    try {
      model = toModelPipeline(await readBody(req, record));
    } catch (e) {
      throw e instanceof UserError && !e.bare ? e.wrap("Failed to create a pipeline as pipeline conversion failed") : e;
    }
    try {
      model.namespace = resolveNamespace(model.namespace);
      if (!model.name) throw invalidInput("name is required");
      return apiPipeline(wrapStore(() => insertPipeline(model), "Failed to create a pipeline in PipelineStore"));
    } catch (e) {
      throw (e as UserError).wrap(wrap);
    }
  };

  const wrapStore = <T>(fn: () => T, context: string): T => {
    try {
      return fn();
    } catch (e) {
      throw e instanceof UserError && e.code === 6 ? e.wrap(context) : e;
    }
  };

  const createPipelineAndVersion: GatewayHandler = async (req, _q, _p, record) => {
    const body = await readBody(req, record);
    const version = isObject(body.pipeline_version) ? body.pipeline_version : isObject(body.pipelineVersion) ? body.pipelineVersion : {};
    const url = String((field(version, "packageUrl", "package_url") as Json | undefined)?.pipeline_url ?? (field(version, "packageUrl", "package_url") as Json | undefined)?.pipelineUrl ?? "");
    try {
      const model = toModelPipeline(isObject(body.pipeline) ? body.pipeline : {});
      model.name = model.name || url.split("/").pop() || "";
      model.displayName = model.displayName || model.name;
      model.namespace = resolveNamespace(model.namespace);
      const specYaml = await downloadSpec(url);
      const tags = isObject(version.tags) ? (version.tags as Record<string, string>) : undefined;
      const pipeline = wrapStore(
        () => createPipelineWithVersion(model, { name: model.name, displayName: model.displayName, description: model.description, specYaml, codeSourceUrl: "", packageUrl: url, tags }),
        "Failed to create a pipeline and a pipeline version",
      );
      return apiPipeline(pipeline);
    } catch (e) {
      throw e instanceof UserError ? e.wrap("Failed to create a pipeline") : e;
    }
  };

  const getPipelineById: GatewayHandler = (_req, _q, [id]) => {
    try {
      return apiPipeline(getPipeline(id!));
    } catch (e) {
      throw (e as UserError).wrap(`Failed to get a pipeline ${id}. Check error stack`);
    }
  };

  const getPipelineByName: GatewayHandler = (_req, q, [name]) => {
    const namespace = q.get("namespace") ?? "";
    try {
      const ns = resolveNamespace(namespace);
      // pipeline_store.go: an empty namespace does not filter; the newest match wins.
      const found = [...pipelines.values()]
        .filter((p) => p.name === name && (ns === "" || p.namespace === ns))
        .sort((a, b) => b.createdMs - a.createdMs)[0];
      if (!found) throw notFound("Namespace/Pipeline", `${ns}/${name}`).wrap(`Failed to get a pipeline named ${name} in namespace ${ns}`);
      return apiPipeline(found);
    } catch (e) {
      throw (e as UserError).wrap(`Failed to get a pipeline with name ${name} and namespace ${namespace}. Check error stack.`);
    }
  };

  /** resource_manager.go DeletePipeline: refuses while versions exist unless cascade=true. */
  const deletePipeline: GatewayHandler = (_req, q, [id]) => {
    try {
      try {
        getPipeline(id!);
      } catch (e) {
        throw (e as UserError).wrap(`Failed to delete pipeline with id ${id} as it was not found`);
      }
      const children = [...versions.values()].filter((v) => v.pipelineId === id).sort((a, b) => b.createdMs - a.createdMs);
      if (children.length && q.get("cascade") !== "true") {
        throw invalidInput(`Failed to delete pipeline with id ${id} as it has existing pipeline versions (e.g. ${children[0]!.id}). Set cascade=true to delete all versions`);
      }
      for (const v of children) versions.delete(v.id);
      pipelines.delete(id!);
      return {};
    } catch (e) {
      throw (e as UserError).wrap(`Failed to delete pipeline ${id}. Check error stack`);
    }
  };

  const listVersions: GatewayHandler = (_req, q, [pipelineId]) => {
    const rows = [...versions.values()].filter((v) => v.pipelineId === pipelineId);
    const page = listOrWrap(rows, VERSION_FIELDS, "PipelineVersion", q, "pipeline versions");
    try {
      getPipeline(pipelineId!);
    } catch (e) {
      throw (e as UserError)
        .wrap(`Failed to get namespace for pipeline id ${pipelineId}`)
        .wrap(`Failed to list pipeline versions due to error fetching the namespace for pipeline ${pipelineId}`)
        .wrap(`Failed to list pipeline versions for pipeline ${pipelineId}`);
    }
    return omitEmpty({ pipeline_versions: page.items.map(apiVersion), next_page_token: page.next, total_size: page.total });
  };

  const createVersionFromUrl: GatewayHandler = async (req, _q, [pipelineId], record) => {
    const body = await readBody(req, record);
    const url = String((field(body, "packageUrl", "package_url") as Json | undefined)?.pipeline_url ?? (field(body, "packageUrl", "package_url") as Json | undefined)?.pipelineUrl ?? "");
    const wrap = "Failed to create a pipeline version. Check error stack";
    if (!field(body, "packageUrl", "package_url")) throw invalidInput("Failed to create a pipeline version. Package URL is nil");
    if (!url) throw invalidInput("Failed to create a pipeline version. Package URL is empty");
    if (!pipelineId || !field(body, "pipelineId", "pipeline_id")) throw invalidInput("Failed to create a pipeline version. Parent pipeline id is empty");
    const name = String(body.name || body.display_name || body.displayName || "");
    try {
      if (!name) throw invalidInput("name is required");
      getPipeline(pipelineId);
      const specYaml = await downloadSpec(url);
      const version = createVersion({
        pipelineId, name, displayName: String(body.display_name || body.displayName || name), description: String(body.description ?? ""),
        specYaml, codeSourceUrl: String(field(body, "codeSourceUrl", "code_source_url") ?? ""), packageUrl: url,
        tags: isObject(body.tags) ? (body.tags as Record<string, string>) : undefined,
      });
      return apiVersion(version);
    } catch (e) {
      throw (e as UserError).wrap(wrap);
    }
  };

  // GetPipelineVersion and DeletePipelineVersion look the version up by its own id; the pipeline id is not checked.
  const getVersionById: GatewayHandler = (_req, _q, [, versionId]) => {
    try {
      return apiVersion(getVersion(versionId!));
    } catch (e) {
      throw (e as UserError).wrap(`Failed to get a pipeline version ${versionId}`);
    }
  };

  const deleteVersion: GatewayHandler = (_req, _q, [pipelineId, versionId]) => {
    try {
      try {
        getVersion(versionId!);
      } catch (e) {
        throw (e as UserError).wrap(`Failed to delete pipeline version with id ${versionId} as it was not found`);
      }
      versions.delete(versionId!);
      return {};
    } catch (e) {
      throw (e as UserError).wrap(`Failed to delete a pipeline version id ${versionId} under pipeline id ${pipelineId}. Check error stack`);
    }
  };

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
    if (!route) return gatewayError(new UserError(candidates.length ? 12 : 5, candidates.length ? "Method Not Allowed" : "Not Found", "", true));
    const params = route[1].exec(url.pathname)!.slice(1).map(decodeURIComponent);
    try {
      return json(200, await route[2](req, url.searchParams, params, record));
    } catch (e) {
      if (e instanceof UserError) return gatewayError(e);
      throw e;
    }
  }

  // ------------------------------------------------------------------ dispatch

  function healthz(): Response {
    // main.go writes this body by hand, spaces included.
    const body = `{"commit_sha":"unknown", "tag_name":"${opts.version ?? "2.17.3"}", "multi_user":${multiUser}, "pipeline_store": "database"}`;
    return new Response(body, { headers: { "content-type": "application/json" } });
  }

  function faultResponse(fault: Fault, isUpload: boolean): Response {
    if (fault.body !== undefined) {
      let isJson = true;
      try {
        JSON.parse(fault.body);
      } catch {
        isJson = false;
      }
      return new Response(fault.body, { status: fault.status, headers: { "content-type": isJson ? "application/json" : "text/plain; charset=utf-8" } });
    }
    const text = STATUS_CODES[fault.status] ?? `HTTP ${fault.status}`;
    if (isUpload) return uploadError(fault.status, text, false);
    const code = Number(Object.entries(HTTP_STATUS).find(([, s]) => s === fault.status)?.[0] ?? 2);
    return json(fault.status, { code, message: text });
  }

  async function dispatch(req: Request, url: URL, record: RecordedRequest): Promise<Response> {
    const isUpload = UPLOAD_ROUTE.test(url.pathname);
    const fault = faults.find((f) => f.remaining > 0 && f.route.test(`${req.method} ${url.pathname}`));
    if (fault) {
      fault.remaining--;
      return faultResponse(fault, isUpload);
    }
    if (opts.token && req.headers.get("authorization")?.replace(/^bearer /i, "Bearer ") !== `Bearer ${opts.token}`) {
      const err = unauthenticated();
      return isUpload ? uploadError(401, err.external) : gatewayError(err);
    }
    if (url.pathname === "/apis/v2beta1/healthz") return healthz();
    if (isUpload) {
      const upload = url.pathname.endsWith("/upload") ? uploadPipeline : uploadVersion;
      return upload(req, url.searchParams, record);
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
      const record: RecordedRequest = {
        method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams),
        headers: Object.fromEntries(req.headers.entries()), status: 0,
      };
      requests.push(record);
      let res: Response;
      try {
        res = await dispatch(req, url, record);
      } catch (e) {
        res = new Response(`fake KFP server bug: ${(e as Error).stack ?? e}`, { status: 500 });
      }
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
    state: () => ({
      pipelines: [...pipelines.values()].map(apiPipeline),
      versions: [...versions.values()].map(apiVersion),
    }),
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
