/**
 * An ntfy-faithful server on loopback, for testing kfp-sync's notify stage.
 *
 * It answers the way ntfy v2.13.0 does — same routes, same order of checks, same error bodies,
 * same limits — and records what it received. `test/ntfy-contract.test.ts` replays the recorded
 * answers of a real ntfy 2.13.0 (`test/contracts/ntfy-2.13.0/`) against it; where this file and
 * the recording disagree, the recording wins. Behaviour follows binwiederhier/ntfy:
 *   server/server.go   handle (authentication first), handleInternal (routes), transformBodyJSON,
 *                      parsePublishParams, handlePublishBody, handleSubscribeHTTP (poll), handleFile
 *   server/errors.go   the error catalogue ({"code","http","error","link"})
 *   server/actions.go  action validation (max 3; view|broadcast|http; label; url)
 *   server/types.go    message JSON (field names and omitempty), publishMessage (JSON publish)
 *   server/visitor.go  per-IP request bucket and auth-failure bucket (users without a tier)
 *   user/manager.go    users, tokens, per-topic access, default access
 * What it does not do: streaming subscriptions (a subscribe is answered like a poll), delayed
 * delivery (`delay` is accepted and ignored), e-mail and calls (answered as on a server without
 * SMTP/Twilio), tiers, message/e-mail/bandwidth quotas, the web app.
 *
 * CLI: bun test/ntfy-server.ts [--port 8090] [--token tk_x] [--user u --password p] [--attachments]
 * prints the base URL on stdout and each request on stderr.
 */
import { STATUS_CODES } from "node:http";
import { parseArgs } from "node:util";

/** ntfy's permission names (`auth-default-access`, `ntfy access USER TOPIC PERMISSION`). */
export type NtfyPermission = "read-write" | "read-only" | "write-only" | "deny-all";

export interface NtfyUser {
  name: string;
  password: string;
  /** Access tokens of this user (`tk_...`), accepted as `Bearer` or as Basic with an empty user. */
  tokens?: string[];
  /** Per-topic grants; a key may end in `*` (ntfy's wildcard). Other topics get the default access. */
  access?: Record<string, NtfyPermission>;
}

export interface NtfyServerOptions {
  port?: number;
  /** Shorthand for a user with this access token and read-write access to every topic. */
  token?: string;
  /** Shorthand for a user with this password and read-write access to every topic. */
  basic?: { user: string; password: string };
  /** Users of the auth file. With none (and no token/basic) the server has no auth at all. */
  users?: NtfyUser[];
  /**
   * `auth-default-access`: what anonymous clients, and users on topics without a grant, may do.
   * Default `deny-all`, as on the recorded server (ntfy's own default is read-write).
   */
  defaultAccess?: NtfyPermission;
  /** Print each request to stderr. */
  log?: boolean;
  /**
   * Attachment cache and base-url configured (like ntfy.sh and the recorded server "main"): a body
   * of 4096 bytes or more becomes an attachment. Default: without them, which answers 400/40014.
   */
  attachments?: boolean;
  /** `visitor-request-limit-burst` / `-replenish` (ntfy's defaults: 60 and 5 s). */
  requestLimit?: { burst: number; replenishMs: number };
  /** `visitor-auth-failure-limit-burst` / `-replenish` (ntfy's defaults: 30 and 1 min). */
  authFailureLimit?: { burst: number; replenishMs: number };
  /** The clock, in ms: message times and the limiters' refill. Tests pass one they can advance. */
  now?: () => number;
}

export interface NtfyPublish {
  topic: string;
  title?: string;
  message?: string;
  priority?: number;
  tags?: string[];
  click?: string;
  actions?: unknown[];
  /** The request body as sent. */
  raw: string;
  /** Request headers, lower-cased names. */
  headers: Record<string, string>;
}

export interface NtfyServer {
  url: string;
  /** Messages ntfy accepted, in order. */
  published: NtfyPublish[];
  /** Every request, whatever its answer. */
  requests: { method: string; path: string; status: number; headers: Record<string, string>; body: string }[];
  /** Answer the next `times` publish requests (default 1) with `status`, before any other check. */
  failNext(status: 401 | 429 | 500 | number, times?: number): void;
  stop(): Promise<void>;
}

// ─── ntfy's contract ─────────────────────────────────────────────────────────────────────────────

interface NtfyErrorSpec {
  code: number;
  http: number;
  error: string;
  link?: string;
}

const DOCS = "https://ntfy.sh/docs";
/** The entries of server/errors.go a publisher or a polling subscriber can meet. */
export const NTFY_ERRORS = {
  badRequest: { code: 40000, http: 400, error: "invalid request" },
  emailDisabled: { code: 40001, http: 400, error: "e-mail notifications are not enabled", link: `${DOCS}/config/#e-mail-notifications` },
  priorityInvalid: { code: 40007, http: 400, error: "invalid priority parameter", link: `${DOCS}/publish/#message-priority` },
  sinceInvalid: { code: 40008, http: 400, error: "invalid since parameter", link: `${DOCS}/subscribe/api/#fetch-cached-messages` },
  topicInvalid: { code: 40009, http: 400, error: "invalid request: topic invalid" },
  topicDisallowed: { code: 40010, http: 400, error: "invalid request: topic name is not allowed" },
  messageNotUTF8: { code: 40011, http: 400, error: "invalid message: message must be UTF-8 encoded" },
  attachmentURLInvalid: { code: 40013, http: 400, error: "invalid request: attachment URL is invalid", link: `${DOCS}/publish/#attachments` },
  attachmentsDisallowed: { code: 40014, http: 400, error: "invalid request: attachments not allowed", link: `${DOCS}/config/#attachments` },
  actionsInvalid: { code: 40018, http: 400, error: "invalid request: actions invalid", link: `${DOCS}/publish/#action-buttons` },
  iconURLInvalid: { code: 40021, http: 400, error: "invalid request: icon URL is invalid", link: `${DOCS}/publish/#icons` },
  jsonInvalid: { code: 40024, http: 400, error: "invalid request: request body must be valid JSON" },
  phoneCallsDisabled: { code: 40032, http: 400, error: "invalid request: calling is disabled", link: `${DOCS}/config/#phone-calls` },
  unauthorized: { code: 40101, http: 401, error: "unauthorized", link: `${DOCS}/publish/#authentication` },
  forbidden: { code: 40301, http: 403, error: "forbidden", link: `${DOCS}/publish/#authentication` },
  notFound: { code: 40401, http: 404, error: "page not found" },
  attachmentTooLarge: { code: 41301, http: 413, error: "attachment too large, or bandwidth limit reached", link: `${DOCS}/publish/#limitations` },
  jsonBodyTooLarge: { code: 41303, http: 413, error: "JSON body too large" },
  tooManyRequests: { code: 42901, http: 429, error: "limit reached: too many requests", link: `${DOCS}/publish/#limitations` },
  tooManyAuthFailures: { code: 42909, http: 429, error: "limit reached: too many auth failures", link: `${DOCS}/publish/#limitations` },
  internalError: { code: 50001, http: 500, error: "internal server error" },
} as const satisfies Record<string, NtfyErrorSpec>;

/** What failNext sends for statuses ntfy itself produces; others look like a reverse proxy's page. */
const FAIL_NEXT_BODIES: Record<number, NtfyErrorSpec> = {
  400: NTFY_ERRORS.badRequest,
  401: NTFY_ERRORS.unauthorized,
  403: NTFY_ERRORS.forbidden,
  404: NTFY_ERRORS.notFound,
  413: NTFY_ERRORS.jsonBodyTooLarge,
  429: NTFY_ERRORS.tooManyRequests,
  500: NTFY_ERRORS.internalError,
};

const TOPIC = "[-_A-Za-z0-9]{1,64}";
const TOPIC_RULE = new RegExp(`^${TOPIC}$`);
const TOPIC_PATH = new RegExp(`^/(${TOPIC})$`);
const GET_PUBLISH_PATH = new RegExp(`^/(${TOPIC})/(publish|send|trigger)$`);
const JSON_SUBSCRIBE_PATH = new RegExp(`^/(${TOPIC}(?:,${TOPIC})*)/json$`);
const FILE_PATH = /^\/file\/([-_A-Za-z0-9]{1,64})(?:\.[A-Za-z0-9]{1,16})?$/;
const DISALLOWED_TOPICS = ["docs", "static", "file", "app", "metrics", "account", "settings", "signup", "login", "v1"];
const MESSAGE_LIMIT = 4096;
/**
 * transformBodyJSON peeks twice the message limit, "to account for JSON format overhead", and a
 * full peek counts as too large: 8191 bytes is the largest JSON body ntfy takes.
 */
const JSON_PEEK_LIMIT = MESSAGE_LIMIT * 2;
const CACHE_SECONDS = 12 * 3600;
const ATTACHMENT_FILE_LIMIT = 15 * 1024 * 1024;
const ATTACHMENT_EXPIRY_SECONDS = 3 * 3600;
const EMPTY_MESSAGE = "triggered";
const ACTIONS_MAX = 3;
const ACTION_TYPES = ["view", "broadcast", "http"];
const URL_RULE = /^https?:\/\//;
/** Go's net/http buffers this much of a response; a longer one goes out chunked. */
const GO_BUFFER_BEFORE_CHUNKING = 2048;

class NtfyError extends Error {
  constructor(
    readonly spec: NtfyErrorSpec,
    detail?: string,
  ) {
    super(detail ? `${spec.error}; ${detail}` : spec.error);
  }
}

/**
 * Go's json.Encoder output: HTML-sensitive characters and the JS line separators escaped, plus
 * the newline Encode appends. JSON.stringify already writes lone surrogates and controls escaped.
 */
function goJSON(value: unknown): string {
  const text = JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  return `${text}\n`;
}

/** Go writes a response under 2 KiB with Content-Length and a longer one chunked; so do we. */
function respondBytes(status: number, contentType: string, bytes: Uint8Array, extra: Record<string, string> = {}): Response {
  const headers = { "Content-Type": contentType, "Access-Control-Allow-Origin": "*", ...extra };
  if (bytes.length <= GO_BUFFER_BEFORE_CHUNKING) return new Response(bytes, { status, headers });
  const stream = new ReadableStream({
    start(controller) {
      controller.enqueue(bytes);
      controller.close();
    },
  });
  return new Response(stream, { status, headers });
}

function jsonResponse(status: number, body: unknown): Response {
  return respondBytes(status, "application/json", new TextEncoder().encode(goJSON(body)));
}

/** Error bodies are the errHTTP struct marshalled by Go, plus a newline; `link` is omitempty. */
function errorResponse(err: NtfyError): Response {
  const body: Record<string, unknown> = { code: err.spec.code, http: err.spec.http, error: err.message };
  if (err.spec.link) body.link = err.spec.link;
  return jsonResponse(err.spec.http, body);
}

// ─── Message model ───────────────────────────────────────────────────────────────────────────────

interface Action {
  id: string;
  action: string;
  label: string;
  clear: boolean;
  url?: string;
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  intent?: string;
  extras?: Record<string, string>;
}

/** Field order and omission follow the Go struct, so responses compare byte for byte. */
interface Message {
  id: string;
  time: number;
  expires: number;
  event: "message";
  topic: string;
  title?: string;
  message?: string;
  priority?: number;
  tags?: string[];
  click?: string;
  icon?: string;
  actions?: Action[];
  attachment?: { name: string; type?: string; size?: number; expires?: number; url: string };
  content_type?: string;
}

const ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
function randomString(length: number): string {
  const bytes = crypto.getRandomValues(new Uint8Array(length));
  return Array.from(bytes, (b) => ID_CHARS[b % ID_CHARS.length]).join("");
}

/** Go's strings.TrimSpace (unicode.IsSpace), which unlike String.trim keeps U+FEFF and trims U+0085. */
const GO_SPACE = "[\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
const GO_TRIM = new RegExp(`^${GO_SPACE}+|${GO_SPACE}+$`, "g");
const goTrim = (s: string) => s.replace(GO_TRIM, "");

// ─── Parameters: headers first, then query, as readParam does ───────────────────────────────────

/**
 * Request headers as Go sees them: Bun hands header bytes over as Latin-1 characters, Go keeps
 * the bytes, and ntfy reads them as UTF-8 (a raw UTF-8 Title works).
 */
type Params = Map<string, string>;
function headerParams(headers: Headers): Params {
  const params: Params = new Map();
  for (const [name, value] of headers) params.set(name.toLowerCase(), Buffer.from(value, "latin1").toString("utf8"));
  return params;
}

function readParam(headers: Params, query: URLSearchParams, ...names: string[]): string {
  for (const name of names) {
    const value = goTrim(maybeDecodeHeader(headers.get(name) ?? ""));
    if (value) return value;
  }
  for (const name of names) {
    const value = goTrim(query.get(name) ?? "");
    if (value) return value;
  }
  return "";
}

function readBoolParam(headers: Params, query: URLSearchParams, fallback: boolean, ...names: string[]): boolean {
  const value = readParam(headers, query, ...names).toLowerCase();
  if (["1", "yes", "true"].includes(value)) return true;
  if (["0", "no", "false"].includes(value)) return false;
  return fallback;
}

/** Header values may be RFC 2047 encoded words (`=?UTF-8?B?...?=`), which ntfy decodes. */
function maybeDecodeHeader(value: string): string {
  return value.replace(/=\?utf-8\?([bq])\?([^?]*)\?=/gi, (_, enc: string, text: string) => {
    const bytes =
      enc.toLowerCase() === "b"
        ? Buffer.from(text, "base64")
        : Buffer.from(text.replace(/_/g, " ").replace(/=([0-9a-f]{2})/gi, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16))), "latin1");
    return bytes.toString("utf8");
  });
}

function decodeUTF8(bytes: Uint8Array): string | undefined {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return undefined;
  }
}

function parsePriority(value: string): number {
  const p = value.trim().toLowerCase();
  const table: Record<string, number> = { "": 0, "1": 1, min: 1, "2": 2, low: 2, "3": 3, default: 3, "4": 4, high: 4, "5": 5, max: 5, urgent: 5 };
  if (p in table) return table[p]!;
  if (p.startsWith("u=")) return 3; // the HTTP Priority header Cloudflare adds is ignored
  throw new NtfyError(NTFY_ERRORS.priorityInvalid);
}

/** util.SplitNoEmpty: empty pieces go before trimming, so a whitespace-only tag stays as "". */
function splitNoEmpty(value: string, sep: string): string[] {
  return value.split(sep).filter((s) => s !== "");
}

// ─── Go's encoding/json, as far as ntfy's structs need it ────────────────────────────────────────

/** A JSON number as written: Go decodes `4.0` into an int field as an error, JSON.parse cannot tell. */
class JSONNumber {
  constructor(readonly raw: string) {}
}
type JSONValue = null | boolean | string | JSONNumber | JSONValue[] | Map<string, JSONValue>;

/**
 * Parses the first JSON value of `text` (json.Decoder.Decode: what follows it is never read) and
 * returns it with where it ended. Strict like Go: no raw control characters in strings; a lone
 * surrogate escape becomes U+FFFD.
 */
function parseJSONValue(text: string): { value: JSONValue; end: number } {
  let pos = 0;
  const fail = (): never => {
    throw new SyntaxError(`invalid JSON at ${pos}`);
  };
  const ws = () => {
    while (pos < text.length && " \t\n\r".includes(text[pos]!)) pos++;
  };
  const value = (): JSONValue => {
    ws();
    const c = text[pos];
    if (c === "{") {
      pos++;
      const object = new Map<string, JSONValue>();
      ws();
      if (text[pos] === "}") return pos++, object;
      for (;;) {
        ws();
        if (text[pos] !== '"') fail();
        const key = string();
        ws();
        if (text[pos++] !== ":") fail();
        object.set(key, value());
        ws();
        const next = text[pos++];
        if (next === "}") return object;
        if (next !== ",") fail();
      }
    }
    if (c === "[") {
      pos++;
      const array: JSONValue[] = [];
      ws();
      if (text[pos] === "]") return pos++, array;
      for (;;) {
        array.push(value());
        ws();
        const next = text[pos++];
        if (next === "]") return array;
        if (next !== ",") fail();
      }
    }
    if (c === '"') return string();
    for (const [word, v] of [["true", true], ["false", false], ["null", null]] as const) {
      if (text.startsWith(word, pos)) return (pos += word.length), v;
    }
    const number = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/.exec(text.slice(pos, pos + 400));
    if (!number) fail();
    pos += number![0].length;
    return new JSONNumber(number![0]);
  };
  const string = (): string => {
    pos++;
    let out = "";
    for (;;) {
      if (pos >= text.length) fail();
      const c = text[pos++]!;
      if (c === '"') return out;
      if (c.charCodeAt(0) < 0x20) fail();
      if (c !== "\\") {
        out += c;
        continue;
      }
      const e = text[pos++];
      const simple: Record<string, string> = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };
      if (e !== undefined && e in simple) out += simple[e];
      else if (e === "u") {
        const unit = (at: number) => (/^[0-9a-fA-F]{4}$/.test(text.slice(at, at + 4)) ? parseInt(text.slice(at, at + 4), 16) : fail());
        const u = unit(pos);
        pos += 4;
        if (u >= 0xd800 && u < 0xdc00 && text.startsWith("\\u", pos)) {
          const low = unit(pos + 2);
          if (low >= 0xdc00 && low < 0xe000) {
            out += String.fromCharCode(u, low);
            pos += 6;
            continue;
          }
        }
        out += u >= 0xd800 && u < 0xe000 ? "\ufffd" : String.fromCharCode(u);
      } else fail();
    }
  };
  const v = value();
  return { value: v, end: pos };
}

type FieldType = "string" | "int" | "bool" | "strings" | "stringMap" | "actions";
type Decoded = Record<string, string | number | boolean | string[] | Record<string, string> | Record<string, unknown>[]>;

const INT64 = [-(2n ** 63n), 2n ** 63n - 1n];

/**
 * Decodes like Go's encoding/json into a struct: keys match exactly or else case-insensitively,
 * later keys win, unknown keys and nulls are skipped, and a value of the wrong type fails the
 * whole body.
 */
function decodeStruct(value: JSONValue, fields: Record<string, FieldType>): Decoded {
  if (!(value instanceof Map)) throw new TypeError("cannot unmarshal into struct");
  const out: Decoded = {};
  const names = Object.keys(fields);
  const asString = (v: JSONValue) => {
    if (v === null) return "";
    if (typeof v !== "string") throw new TypeError("cannot unmarshal into string");
    return v;
  };
  for (const [key, v] of value) {
    const name = names.find((n) => n === key) ?? names.find((n) => n.toLowerCase() === key.toLowerCase());
    if (!name || v === null) continue;
    switch (fields[name]) {
      case "string":
        out[name] = asString(v);
        break;
      case "int": {
        if (!(v instanceof JSONNumber) || !/^-?\d+$/.test(v.raw)) throw new TypeError(`cannot unmarshal ${String(v)} into int`);
        const n = BigInt(v.raw);
        if (n < INT64[0]! || n > INT64[1]!) throw new TypeError("int overflow");
        out[name] = Number(n);
        break;
      }
      case "bool":
        if (typeof v !== "boolean") throw new TypeError("cannot unmarshal into bool");
        out[name] = v;
        break;
      case "strings":
        if (!Array.isArray(v)) throw new TypeError("cannot unmarshal into []string");
        out[name] = v.map(asString);
        break;
      case "stringMap":
        if (!(v instanceof Map)) throw new TypeError("cannot unmarshal into map[string]string");
        out[name] = Object.fromEntries([...v].map(([k, s]) => [k, asString(s)]));
        break;
      case "actions":
        if (!Array.isArray(v)) throw new TypeError("cannot unmarshal into []action");
        out[name] = v.map((item) => (item === null ? {} : decodeStruct(item, ACTION_FIELDS)));
        break;
    }
  }
  return out;
}

// ─── Actions (server/actions.go) ─────────────────────────────────────────────────────────────────

type RawAction = Partial<Omit<Action, "id">>;

function parseActions(value: string): Action[] {
  let raw: RawAction[];
  if (value.trim().startsWith("[")) {
    try {
      // json.Unmarshal, unlike the Decoder of a JSON publish, refuses anything after the value.
      const { value: parsed, end } = parseJSONValue(value);
      if (value.slice(end).trim()) throw new SyntaxError("invalid character after top-level value");
      raw = decodeActions(parsed);
    } catch (e) {
      throw new NtfyError(NTFY_ERRORS.actionsInvalid, `JSON error: ${(e as Error).message}`);
    }
  } else {
    raw = parseSimpleActions(value);
  }
  const actions: Action[] = raw.map((a) => ({
    id: randomString(10),
    action: (a.action ?? "").toLowerCase(),
    label: a.label ?? "",
    clear: a.clear ?? false,
    ...(a.url ? { url: a.url } : {}),
    ...(a.method ? { method: a.method.toUpperCase() } : {}),
    ...(a.headers && Object.keys(a.headers).length ? { headers: a.headers } : {}),
    ...(a.body ? { body: a.body } : {}),
    ...(a.intent ? { intent: a.intent } : {}),
    ...(a.extras && Object.keys(a.extras).length ? { extras: a.extras } : {}),
  }));
  const invalid = (detail: string) => new NtfyError(NTFY_ERRORS.actionsInvalid, detail);
  if (actions.length > ACTIONS_MAX) throw invalid(`only ${ACTIONS_MAX} actions allowed`);
  for (const a of actions) {
    if (!ACTION_TYPES.includes(a.action)) {
      throw invalid(`parameter 'action' cannot be '${a.action}', valid values are 'view', 'broadcast' and 'http'`);
    } else if (!a.label) {
      throw invalid("parameter 'label' is required");
    } else if ((a.action === "view" || a.action === "http") && !a.url) {
      throw invalid(`parameter 'url' is required for action '${a.action}'`);
    } else if (a.action === "http" && (a.method === "GET" || a.method === "HEAD") && a.body) {
      throw invalid(`parameter 'body' cannot be set if method is ${a.method}`);
    }
  }
  return actions;
}

/** Go's json.Unmarshal into []action: strings are strings, clear is a bool, maps hold strings. */
function decodeActions(value: JSONValue): RawAction[] {
  if (!Array.isArray(value)) throw new TypeError("cannot unmarshal into []action");
  return value.map((item) => (item === null ? {} : (decodeStruct(item, ACTION_FIELDS) as RawAction)));
}

const ACTION_FIELDS: Record<string, FieldType> = {
  id: "string",
  action: "string",
  label: "string",
  clear: "bool",
  url: "string",
  method: "string",
  headers: "stringMap",
  body: "string",
  intent: "string",
  extras: "stringMap",
};

/** The header format: `view, Open, https://x, clear=true; http, Retry, https://y, method=PUT`. */
function parseSimpleActions(input: string): RawAction[] {
  const actions: RawAction[] = [];
  let pos = 0;
  const fail = (msg: string) => new NtfyError(NTFY_ERRORS.actionsInvalid, msg);
  const skipSpaces = () => {
    while (pos < input.length && /\s/.test(input[pos]!)) pos++;
  };
  while (pos < input.length) {
    const action: RawAction & { headers: Record<string, string>; extras: Record<string, string> } = { headers: {}, extras: {} };
    for (let section = 0; ; section++) {
      skipSpaces();
      const keyMatch = /^([-.\w]+)\s*=\s*/.exec(input.slice(pos));
      let key = keyMatch?.[1] ?? "";
      if (keyMatch) pos += keyMatch[0].length;
      let value: string;
      const quote = input[pos];
      if (quote === '"' || quote === "'") {
        const start = ++pos;
        while (pos < input.length && !(input[pos] === quote && input[pos - 1] !== "\\")) pos++;
        if (pos >= input.length) throw fail(`unexpected end of input, quote started at position ${start}`);
        value = input.slice(start, pos).replaceAll(`\\${quote}`, quote);
        pos++;
        skipSpaces();
        if (pos < input.length && input[pos] !== "," && input[pos] !== ";") {
          throw fail(`unexpected character '${input[pos]}' at position ${pos}`);
        }
      } else {
        const start = pos;
        while (pos < input.length && input[pos] !== "," && input[pos] !== ";") pos++;
        value = input.slice(start, pos).trim();
      }
      const last = pos >= input.length || input[pos] === ";";
      pos++;
      if (!key && section === 0) key = "action";
      else if (!key && section === 1) key = "label";
      else if (!key && section === 2 && (action.action === "view" || action.action === "http")) key = "url";
      if (!key) throw fail(`term '${value}' unknown`);
      if (key.startsWith("headers.")) action.headers[key.slice(8)] = value;
      else if (key.startsWith("extras.")) action.extras[key.slice(7)] = value;
      else {
        const k = key.toLowerCase();
        if (k === "clear") {
          const v = value.toLowerCase();
          if (!["true", "yes", "1", "false", "no", "0"].includes(v)) {
            throw fail(`parameter 'clear' cannot be '${value}', only boolean values are allowed (true/yes/1/false/no/0)`);
          }
          action.clear = ["true", "yes", "1"].includes(v);
        } else if (k === "action" || k === "label" || k === "url" || k === "method" || k === "body" || k === "intent") {
          action[k] = value;
        } else throw fail(`key '${key}' unknown`);
      }
      if (last) break;
    }
    actions.push(action);
  }
  return actions;
}

// ─── JSON publish (transformBodyJSON) ────────────────────────────────────────────────────────────

const PUBLISH_FIELDS: Record<string, FieldType> = {
  topic: "string",
  title: "string",
  message: "string",
  priority: "int",
  tags: "strings",
  click: "string",
  icon: "string",
  actions: "actions",
  attach: "string",
  markdown: "bool",
  filename: "string",
  email: "string",
  call: "string",
  cache: "string",
  firebase: "string",
  delay: "string",
};

/** Turns a JSON body into the parameters and body of a classic publish, exactly as ntfy does. */
function transformBodyJSON(raw: Uint8Array, params: Params): { topic: string; params: Params; body: Uint8Array } {
  if (raw.length >= JSON_PEEK_LIMIT) throw new NtfyError(NTFY_ERRORS.jsonBodyTooLarge);
  let m: Decoded;
  try {
    // Go replaces invalid UTF-8 in strings with U+FFFD, as a non-fatal TextDecoder does.
    const { value } = parseJSONValue(new TextDecoder().decode(raw));
    m = value === null ? {} : decodeStruct(value, PUBLISH_FIELDS);
  } catch {
    throw new NtfyError(NTFY_ERRORS.jsonInvalid);
  }
  const topic = (m.topic as string | undefined) ?? "";
  if (!TOPIC_RULE.test(topic)) throw new NtfyError(NTFY_ERRORS.topicInvalid);
  const out: Params = new Map(params);
  const set = (name: string, value: unknown) => {
    if (value) out.set(name, String(value));
  };
  set("x-title", m.title);
  set("x-priority", m.priority);
  set("x-tags", (m.tags as string[] | undefined)?.join(","));
  set("x-attach", m.attach);
  set("x-filename", m.filename);
  set("x-click", m.click);
  set("x-icon", m.icon);
  if ((m.actions as unknown[] | undefined)?.length) out.set("x-actions", JSON.stringify(m.actions));
  set("x-markdown", m.markdown && "yes");
  set("x-email", m.email);
  set("x-call", m.call);
  set("x-cache", m.cache);
  set("x-firebase", m.firebase);
  set("x-delay", m.delay);
  return { topic, params: out, body: new TextEncoder().encode((m.message as string | undefined) || EMPTY_MESSAGE) };
}

// ─── Users, access and limits ────────────────────────────────────────────────────────────────────

/** Go's rate.Limiter as ntfy uses it: `burst` tokens, one back every `replenishMs`, fractions kept. */
class TokenBucket {
  private tokens: number;
  private last: number;
  constructor(
    private readonly burst: number,
    private readonly replenishMs: number,
    private readonly now: () => number,
  ) {
    this.tokens = burst;
    this.last = now();
  }
  available(): number {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + Math.max(0, t - this.last) / this.replenishMs);
    this.last = t;
    return this.tokens;
  }
  take(): boolean {
    if (this.available() < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/** A visitor is a client IP: users without a tier share their IP's buckets with anonymous clients. */
interface Visitor {
  requests: TokenBucket;
  authFailures: TokenBucket;
}

type Identity = { user: NtfyUser } | "anonymous";

const canRead = (p: NtfyPermission) => p === "read-write" || p === "read-only";
const canWrite = (p: NtfyPermission) => p === "read-write" || p === "write-only";

/** Go's base64.RawURLEncoding.DecodeString: no padding, no `+` or `/`; CR and LF are skipped. */
function decodeRawURLBase64(value: string): string | undefined {
  const s = value.replace(/[\r\n]/g, "");
  if (!/^[A-Za-z0-9_-]*$/.test(s) || s.length % 4 === 1) return undefined;
  return Buffer.from(s, "base64url").toString("latin1");
}

/** Go's base64.StdEncoding.DecodeString, which r.BasicAuth uses: padding required. */
function decodeStdBase64(value: string): string | undefined {
  const s = value.replace(/[\r\n]/g, "");
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) return undefined;
  return Buffer.from(s, "base64").toString("latin1");
}

// ─── Server ──────────────────────────────────────────────────────────────────────────────────────

export async function startNtfyServer(opts: NtfyServerOptions = {}): Promise<NtfyServer> {
  const now = opts.now ?? Date.now;
  const published: NtfyPublish[] = [];
  const requests: NtfyServer["requests"] = [];
  const cache: Message[] = [];
  const files = new Map<string, { bytes: Uint8Array; type: string }>();
  const failures: number[] = [];
  const visitors = new Map<string, Visitor>();
  const users: NtfyUser[] = [...(opts.users ?? [])];
  if (opts.token !== undefined) users.push({ name: "token-owner", password: randomString(32), tokens: [opts.token], access: { "*": "read-write" } });
  if (opts.basic) users.push({ name: opts.basic.user, password: opts.basic.password, access: { "*": "read-write" } });
  // Without an auth file ntfy has no user manager: every header is ignored and every topic open.
  const authEnabled = users.length > 0;
  const defaultAccess: NtfyPermission = opts.defaultAccess ?? "deny-all";
  const requestLimit = opts.requestLimit ?? { burst: 60, replenishMs: 5000 };
  const authFailureLimit = opts.authFailureLimit ?? { burst: 30, replenishMs: 60_000 };
  const log = (line: string) => opts.log && process.stderr.write(`[ntfy] ${line}\n`);

  const visitorOf = (ip: string): Visitor => {
    let v = visitors.get(ip);
    if (!v) {
      v = {
        requests: new TokenBucket(requestLimit.burst, requestLimit.replenishMs, now),
        authFailures: new TokenBucket(authFailureLimit.burst, authFailureLimit.replenishMs, now),
      };
      visitors.set(ip, v);
    }
    return v;
  };

  function permission(identity: Identity, topic: string): NtfyPermission {
    if (identity === "anonymous") return authEnabled ? defaultAccess : "read-write";
    const grants = Object.entries(identity.user.access ?? {});
    const exact = grants.find(([pattern]) => pattern === topic);
    const wildcard = grants.find(([pattern]) => pattern.endsWith("*") && topic.startsWith(pattern.slice(0, -1)));
    return (exact ?? wildcard)?.[1] ?? defaultAccess;
  }

  function userByToken(token: string): NtfyUser | undefined {
    return users.find((u) => u.tokens?.includes(token));
  }

  /**
   * maybeAuthenticate: `?auth=` (raw base64url of the whole header value) wins over the header;
   * a value ntfy cannot decode is a plain Go error, so a 500; only "basic " and "bearer " (any
   * case) are looked at; "Bearer" with that exact case is a token, everything else goes to Go's
   * r.BasicAuth, which takes "basic" in any case. A failed login costs a token of the IP's
   * auth-failure bucket; with it empty every authenticated request is 429/42909.
   */
  function authenticate(headers: Params, query: URLSearchParams, visitor: Visitor): Identity {
    if (!authEnabled) return "anonymous";
    let header = goTrim(headers.get("authorization") ?? "");
    const queryAuth = goTrim(query.get("authorization") ?? "") || goTrim(query.get("auth") ?? "");
    if (queryAuth) {
      const decoded = decodeRawURLBase64(queryAuth);
      if (decoded === undefined) throw new NtfyError(NTFY_ERRORS.internalError);
      header = goTrim(Buffer.from(decoded, "latin1").toString("utf8"));
    }
    const lower = header.toLowerCase();
    if (!lower.startsWith("basic ") && !lower.startsWith("bearer ")) return "anonymous";
    if (visitor.authFailures.available() < 1) throw new NtfyError(NTFY_ERRORS.tooManyAuthFailures);
    const user = header.startsWith("Bearer") ? userByToken(goTrim(header.slice(6))) : basicAuth(header);
    if (user) return { user };
    visitor.authFailures.take();
    throw new NtfyError(NTFY_ERRORS.unauthorized);
  }

  function basicAuth(header: string): NtfyUser | undefined {
    const decoded = decodeStdBase64(header.slice(6));
    if (decoded === undefined) return undefined;
    const text = Buffer.from(decoded, "latin1").toString("utf8");
    const colon = text.indexOf(":");
    if (colon < 0) return undefined;
    const [name, password] = [text.slice(0, colon), text.slice(colon + 1)];
    if (name === "") return userByToken(password);
    return users.find((u) => u.name === name && u.password === password);
  }

  /** handlePublishWithoutResponse after the checks: parameters, then the body. */
  function publish(topic: string, headers: Params, query: URLSearchParams, body: Uint8Array, baseURL: string): Message {
    const time = Math.floor(now() / 1000);
    const m: Message = { id: randomString(12), time, expires: time + CACHE_SECONDS, event: "message", topic };
    const cached = readBoolParam(headers, query, true, "x-cache", "cache");
    const title = readParam(headers, query, "x-title", "title", "t");
    const click = readParam(headers, query, "x-click", "click");
    const icon = readParam(headers, query, "x-icon", "icon");
    const filename = readParam(headers, query, "x-filename", "filename", "file", "f");
    const attach = readParam(headers, query, "x-attach", "attach", "a");
    if (attach && !URL_RULE.test(attach)) throw new NtfyError(NTFY_ERRORS.attachmentURLInvalid);
    if (icon && !URL_RULE.test(icon)) throw new NtfyError(NTFY_ERRORS.iconURLInvalid);
    if (readParam(headers, query, "x-email", "x-e-mail", "email", "e-mail", "mail", "e")) throw new NtfyError(NTFY_ERRORS.emailDisabled);
    if (readParam(headers, query, "x-call", "call")) throw new NtfyError(NTFY_ERRORS.phoneCallsDisabled);
    const messageParam = readParam(headers, query, "x-message", "message", "m").replaceAll("\\n", "\n");
    const priority = parsePriority(readParam(headers, query, "x-priority", "priority", "prio", "p"));
    const tags = splitNoEmpty(readParam(headers, query, "x-tags", "tags", "tag", "ta"), ",").map(goTrim);
    const actionsParam = readParam(headers, query, "x-actions", "actions", "action");
    const actions = actionsParam ? parseActions(actionsParam) : [];
    const markdown =
      readBoolParam(headers, query, false, "x-markdown", "markdown", "md") ||
      readParam(headers, query, "content-type", "content_type").toLowerCase() === "text/markdown";

    let message = messageParam;
    let attachment: Message["attachment"];
    // handlePublishBody peeks MESSAGE_LIMIT bytes, and a full peek counts as over the limit: a
    // body under 4096 bytes that is valid UTF-8 is the message (trimmed); anything else is an
    // attachment, which a server without an attachment cache refuses (40014). An external
    // attachment URL makes the body the message whatever its size.
    const limitReached = body.length >= MESSAGE_LIMIT;
    const peeked = decodeUTF8(body.subarray(0, MESSAGE_LIMIT));
    if (attach !== "" || (filename === "" && !limitReached && peeked !== undefined)) {
      if (peeked === undefined) throw new NtfyError(NTFY_ERRORS.messageNotUTF8);
      if (body.length > 0) message = goTrim(peeked);
      if (attach) {
        const base = new URL(attach).pathname.split("/").pop() ?? "";
        const name = filename || (base === "." ? "" : base) || "attachment";
        attachment = { name, url: attach };
        if (!message) message = `You received a file: ${name}`;
      }
    } else {
      if (!opts.attachments) throw new NtfyError(NTFY_ERRORS.attachmentsDisallowed);
      if (body.length > ATTACHMENT_FILE_LIMIT) throw new NtfyError(NTFY_ERRORS.attachmentTooLarge);
      const isText = decodeUTF8(body) !== undefined;
      const ext = isText ? ".txt" : ".bin";
      const type = isText ? "text/plain; charset=utf-8" : "application/octet-stream";
      const name = filename || `attachment${ext}`;
      files.set(m.id, { bytes: body, type });
      attachment = { name, type, size: body.length, expires: time + ATTACHMENT_EXPIRY_SECONDS, url: `${baseURL}/file/${m.id}${ext}` };
      if (!message) message = `You received a file: ${name}`;
    }

    if (title) m.title = title;
    m.message = message || EMPTY_MESSAGE;
    if (priority) m.priority = priority;
    if (tags.length) m.tags = tags;
    if (click) m.click = click;
    if (icon) m.icon = icon;
    if (actions.length) m.actions = actions;
    if (attachment) m.attachment = attachment;
    if (markdown) m.content_type = "text/markdown";
    if (cached) cache.push(m);
    return m;
  }

  /** parseSince: all, none, a message id (what came after it), a Unix time, or a duration. */
  function cachedSince(topics: string[], since: string, poll: boolean): Message[] {
    const inTopics = cache.filter((m) => topics.includes(m.topic));
    if (since === "" ? !poll : since === "none") return [];
    if (since === "" || since === "all") return inTopics;
    if (since === "latest") return inTopics.slice(-1);
    if (/^[A-Za-z0-9]{12}$/.test(since)) {
      // Like the SQL behind it: an id the cache does not hold selects nothing.
      const at = inTopics.findIndex((m) => m.id === since);
      return at < 0 ? [] : inTopics.slice(at + 1);
    }
    if (/^-?\d+$/.test(since)) return inTopics.filter((m) => m.time >= Number(since));
    const duration = /^(\d+)(s|m|h)$/.exec(since);
    if (duration) {
      const seconds = Number(duration[1]) * { s: 1, m: 60, h: 3600 }[duration[2] as "s" | "m" | "h"];
      return inTopics.filter((m) => m.time >= Math.floor(now() / 1000) - seconds);
    }
    throw new NtfyError(NTFY_ERRORS.sinceInvalid);
  }

  async function handle(req: Request, ip: string): Promise<Response> {
    const url = new URL(req.url);
    const raw = new Uint8Array(await req.arrayBuffer());
    const baseURL = `${url.protocol}//${url.host}`;
    const params = headerParams(req.headers);
    const { method } = req;
    const path = url.pathname;
    const topicPublish = (method === "POST" || method === "PUT") && TOPIC_PATH.exec(path);
    const getPublish = method === "GET" && GET_PUBLISH_PATH.exec(path);
    const jsonPublish = (method === "POST" || method === "PUT") && path === "/";

    const respond = (status: number, response: Response, msg?: Message) => {
      requests.push({ method, path: path + url.search, status, headers: Object.fromEntries(req.headers), body: new TextDecoder().decode(raw) });
      log(`${method} ${path} -> ${status}${msg ? ` ${msg.topic} ${JSON.stringify(msg.title ?? "")} ${JSON.stringify(msg.message)}` : ""}`);
      return response;
    };

    if ((topicPublish || getPublish || jsonPublish) && failures.length) {
      const status = failures.shift()!;
      const spec = FAIL_NEXT_BODIES[status];
      if (spec) return respond(status, errorResponse(new NtfyError(spec)));
      return respond(status, new Response(`${status} ${STATUS_CODES[status] ?? "Error"}\n`, { status, headers: { "Content-Type": "text/plain" } }));
    }

    try {
      // handle: credentials come first, on every route; the routes' own checks follow.
      const visitor = visitorOf(ip);
      const identity = authenticate(params, url.searchParams, visitor);
      const limitRequests = () => {
        if (!visitor.requests.take()) throw new NtfyError(NTFY_ERRORS.tooManyRequests);
      };

      if (method === "GET" && path === "/v1/health") return respond(200, jsonResponse(200, { healthy: true }));

      const file = (method === "GET" || method === "HEAD") && opts.attachments && FILE_PATH.exec(path);
      if (file) {
        limitRequests();
        const stored = files.get(file[1]!);
        if (!stored) throw new NtfyError(NTFY_ERRORS.notFound);
        return respond(200, new Response(method === "HEAD" ? null : stored.bytes, { headers: { "Content-Type": stored.type, "Access-Control-Allow-Origin": "*", "Content-Length": String(stored.bytes.length) } }));
      }

      const subscribe = method === "GET" && JSON_SUBSCRIBE_PATH.exec(path);
      if (subscribe) {
        const topics = subscribe[1]!.split(",");
        if (topics.some((t) => DISALLOWED_TOPICS.includes(t))) throw new NtfyError(NTFY_ERRORS.topicDisallowed);
        limitRequests();
        if (!topics.every((t) => canRead(permission(identity, t)))) throw new NtfyError(NTFY_ERRORS.forbidden);
        const poll = readBoolParam(params, url.searchParams, false, "x-poll", "poll", "po");
        const lines = cachedSince(topics, readParam(params, url.searchParams, "x-since", "since", "si"), poll).map(goJSON).join("");
        return respond(200, respondBytes(200, "application/x-ndjson; charset=utf-8", new TextEncoder().encode(lines)));
      }

      if (!topicPublish && !getPublish && !jsonPublish) throw new NtfyError(NTFY_ERRORS.notFound);
      let topic: string;
      let headers = params;
      let body: Uint8Array = raw;
      if (jsonPublish) ({ topic, params: headers, body } = transformBodyJSON(raw, params));
      else topic = ((topicPublish || getPublish) as RegExpExecArray)[1]!;
      if (DISALLOWED_TOPICS.includes(topic)) throw new NtfyError(NTFY_ERRORS.topicDisallowed);
      limitRequests();
      if (!canWrite(permission(identity, topic))) throw new NtfyError(NTFY_ERRORS.forbidden);

      const m = publish(topic, headers, url.searchParams, body, baseURL);
      published.push({
        topic: m.topic,
        ...(m.title !== undefined && { title: m.title }),
        ...(m.message !== undefined && { message: m.message }),
        ...(m.priority !== undefined && { priority: m.priority }),
        ...(m.tags !== undefined && { tags: m.tags }),
        ...(m.click !== undefined && { click: m.click }),
        ...(m.actions !== undefined && { actions: m.actions }),
        raw: new TextDecoder().decode(raw),
        headers: Object.fromEntries(req.headers),
      });
      return respond(200, jsonResponse(200, m), m);
    } catch (e) {
      const err = e instanceof NtfyError ? e : new NtfyError(NTFY_ERRORS.internalError);
      if (!(e instanceof NtfyError)) log(`internal error: ${(e as Error).stack}`);
      return respond(err.spec.http, errorResponse(err));
    }
  }

  const server = Bun.serve({ port: opts.port ?? 0, hostname: "127.0.0.1", fetch: (req, srv) => handle(req, srv.requestIP(req)?.address ?? "unknown") });
  return {
    url: `http://127.0.0.1:${server.port}`,
    published,
    requests,
    failNext(status, times = 1) {
      for (let i = 0; i < times; i++) failures.push(status);
    },
    async stop() {
      await server.stop(true);
    },
  };
}


// ─── CLI ─────────────────────────────────────────────────────────────────────────────────────────

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      port: { type: "string", default: "8090" },
      token: { type: "string" },
      user: { type: "string" },
      password: { type: "string" },
      attachments: { type: "boolean", default: false },
    },
  });
  const server = await startNtfyServer({
    port: Number(values.port),
    token: values.token,
    basic: values.user !== undefined ? { user: values.user, password: values.password ?? "" } : undefined,
    attachments: values.attachments,
    log: true,
  });
  process.stdout.write(`${server.url}\n`);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => void server.stop().then(() => process.exit(0)));
  }
}
