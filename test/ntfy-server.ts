/**
 * An ntfy-faithful publish endpoint on loopback, for testing kfp-sync's notify stage.
 *
 * It answers publishes the way ntfy v2 does — same routes, same order of checks, same error
 * bodies — and records what it received. Behaviour follows binwiederhier/ntfy:
 *   server/server.go   handle/handleError, handleInternal (routes), transformBodyJSON,
 *                      maybeAuthenticate/authorizeTopicWrite, parsePublishParams, handlePublishBody
 *   server/errors.go   the error catalogue ({"code","http","error","link"})
 *   server/actions.go  action validation (max 3; view|broadcast|http; label; url)
 *   server/types.go    message JSON (field names and omitempty), publishMessage (JSON publish)
 *   server/config.go   4096-byte message limit, 12h cache, 15 MB attachments, disallowed topics
 *   util.ParsePriority 1-5 or min|low|default|high|max|urgent
 * What it does not do: subscriptions, delayed delivery (`delay` is accepted and ignored), e-mail
 * and calls (answered as on a server without SMTP/Twilio), a real token bucket (use failNext).
 *
 * CLI: bun test/ntfy-server.ts [--port 8090] [--token tk_x] [--user u --password p] [--attachments]
 * prints the base URL on stdout and each publish on stderr.
 */
import { STATUS_CODES } from "node:http";
import { parseArgs } from "node:util";

export interface NtfyServerOptions {
  port?: number;
  /** Require this access token (`Authorization: Bearer tk_...`, or Basic with an empty user). */
  token?: string;
  /** Require this user (`Authorization: Basic ...`). */
  basic?: { user: string; password: string };
  /** Print each request to stderr. */
  log?: boolean;
  /**
   * Behave like ntfy.sh (attachment cache and base-url configured): a body over 4096 bytes becomes
   * an attachment. Default: like a self-hosted server without them, which answers 400/40014.
   */
  attachments?: boolean;
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
/** The entries of server/errors.go a publisher can meet. */
export const NTFY_ERRORS = {
  badRequest: { code: 40000, http: 400, error: "invalid request" },
  emailDisabled: { code: 40001, http: 400, error: "e-mail notifications are not enabled", link: `${DOCS}/config/#e-mail-notifications` },
  priorityInvalid: { code: 40007, http: 400, error: "invalid priority parameter", link: `${DOCS}/publish/#message-priority` },
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

const TOPIC_RULE = /^[-_A-Za-z0-9]{1,64}$/;
const TOPIC_PATH = /^\/([-_A-Za-z0-9]{1,64})$/;
const GET_PUBLISH_PATH = /^\/([-_A-Za-z0-9]{1,64})\/(publish|send|trigger)$/;
const DISALLOWED_TOPICS = ["docs", "static", "file", "app", "metrics", "account", "settings", "signup", "login", "v1"];
const MESSAGE_LIMIT = 4096;
/** transformBodyJSON reads at most twice the message limit, "to account for JSON format overhead". */
const JSON_BODY_LIMIT = MESSAGE_LIMIT * 2;
const CACHE_SECONDS = 12 * 3600;
const ATTACHMENT_FILE_LIMIT = 15 * 1024 * 1024;
const ATTACHMENT_EXPIRY_SECONDS = 3 * 3600;
const EMPTY_MESSAGE = "triggered";
const ACTIONS_MAX = 3;
const ACTION_TYPES = ["view", "broadcast", "http"];
const URL_RULE = /^https?:\/\//;
/** visitor-auth-failure-limit-burst / -replenish defaults: 30 failed logins per IP, one back a minute. */
const AUTH_FAILURE_BURST = 30;
const AUTH_FAILURE_REPLENISH_MS = 60_000;

class NtfyError extends Error {
  constructor(
    readonly spec: NtfyErrorSpec,
    detail?: string,
  ) {
    super(detail ? `${spec.error}; ${detail}` : spec.error);
  }
}

/** Error bodies are the errHTTP struct marshalled by Go, plus a newline; `link` is omitempty. */
function errorResponse(err: NtfyError): Response {
  const body: Record<string, unknown> = { code: err.spec.code, http: err.spec.http, error: err.message };
  if (err.spec.link) body.link = err.spec.link;
  return jsonResponse(err.spec.http, body);
}

function jsonResponse(status: number, body: unknown): Response {
  return new Response(`${JSON.stringify(body)}\n`, {
    status,
    headers: { "Content-Type": "application/json", "Access-Control-Allow-Origin": "*" },
  });
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

// ─── Parameters: headers first, then query, as readParam does ───────────────────────────────────

function readParam(headers: Headers, query: URLSearchParams, ...names: string[]): string {
  for (const name of names) {
    const value = headers.get(name)?.trim();
    if (value) return value;
  }
  for (const name of names) {
    const value = query.get(name)?.trim();
    if (value) return value;
  }
  return "";
}

function readBoolParam(headers: Headers, query: URLSearchParams, fallback: boolean, ...names: string[]): boolean {
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

// ─── Actions (server/actions.go) ─────────────────────────────────────────────────────────────────

type RawAction = Partial<Omit<Action, "id">>;

function parseActions(value: string): Action[] {
  let raw: RawAction[];
  if (value.trim().startsWith("[")) {
    try {
      raw = decodeActions(JSON.parse(value));
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
function decodeActions(value: unknown): RawAction[] {
  if (!Array.isArray(value)) throw new Error("cannot unmarshal into []action");
  return value.map((item) => decodeStruct(item ?? {}, ACTION_FIELDS) as RawAction);
}

const ACTION_FIELDS = {
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
} as const;

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

const PUBLISH_FIELDS = {
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
} as const;

type FieldType = "string" | "int" | "bool" | "strings" | "stringMap" | "actions";

/**
 * Decodes like Go's encoding/json into a struct: keys match case-insensitively, unknown keys and
 * nulls are skipped, and a value of the wrong type fails the whole body.
 */
function decodeStruct(value: unknown, fields: Record<string, FieldType>): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new Error("cannot unmarshal into struct");
  const out: Record<string, unknown> = {};
  const names = Object.keys(fields);
  for (const [key, v] of Object.entries(value)) {
    const name = names.find((n) => n === key) ?? names.find((n) => n.toLowerCase() === key.toLowerCase());
    if (!name || v === null) continue;
    const ok = {
      string: () => typeof v === "string",
      int: () => Number.isInteger(v),
      bool: () => typeof v === "boolean",
      strings: () => Array.isArray(v) && v.every((s) => typeof s === "string" || s === null),
      stringMap: () => typeof v === "object" && !Array.isArray(v) && Object.values(v).every((s) => typeof s === "string"),
      actions: () => (out[name] = decodeActions(v)) !== undefined,
    }[fields[name]!]();
    if (!ok) throw new Error(`cannot unmarshal ${typeof v} into field ${name}`);
    out[name] ??= v;
  }
  return out;
}

/** Turns a JSON body into the headers and body of a classic publish, exactly as ntfy does. */
function transformBodyJSON(raw: Uint8Array, headers: Headers): { topic: string; headers: Headers; body: Uint8Array } {
  if (raw.length > JSON_BODY_LIMIT) throw new NtfyError(NTFY_ERRORS.jsonBodyTooLarge);
  let m: Record<string, any>;
  try {
    const parsed: unknown = JSON.parse(new TextDecoder().decode(raw));
    m = parsed === null ? {} : decodeStruct(parsed, PUBLISH_FIELDS);
  } catch {
    throw new NtfyError(NTFY_ERRORS.jsonInvalid);
  }
  const topic: string = m.topic ?? "";
  if (!TOPIC_RULE.test(topic)) throw new NtfyError(NTFY_ERRORS.topicInvalid);
  const out = new Headers(headers);
  const set = (name: string, value: unknown) => {
    if (value) out.set(name, String(value));
  };
  set("X-Title", m.title);
  set("X-Priority", m.priority);
  set("X-Tags", (m.tags as (string | null)[] | undefined)?.map((t) => t ?? "").join(","));
  set("X-Attach", m.attach);
  set("X-Filename", m.filename);
  set("X-Click", m.click);
  set("X-Icon", m.icon);
  if (m.actions?.length) out.set("X-Actions", JSON.stringify(m.actions));
  set("X-Markdown", m.markdown && "true");
  set("X-Email", m.email);
  set("X-Call", m.call);
  set("X-Cache", m.cache);
  set("X-Firebase", m.firebase);
  set("X-Delay", m.delay);
  return { topic, headers: out, body: new TextEncoder().encode(m.message || EMPTY_MESSAGE) };
}

// ─── Server ──────────────────────────────────────────────────────────────────────────────────────

type Identity = "anonymous" | "user";

export async function startNtfyServer(opts: NtfyServerOptions = {}): Promise<NtfyServer> {
  const published: NtfyPublish[] = [];
  const requests: NtfyServer["requests"] = [];
  const files = new Map<string, Uint8Array>();
  const failures: number[] = [];
  const authConfigured = opts.token !== undefined || opts.basic !== undefined;
  const log = (line: string) => opts.log && process.stderr.write(`[ntfy] ${line}\n`);
  // Everything here comes from 127.0.0.1, so one visitor: its bucket of failed logins.
  const authFailures = { tokens: AUTH_FAILURE_BURST, at: Date.now() };

  /** maybeAuthenticate: only a Basic/Bearer header is checked, and a bad one is 401 at once. */
  function authenticate(headers: Headers, query: URLSearchParams): Identity {
    if (!authConfigured) return "anonymous";
    let header = headers.get("authorization")?.trim() ?? "";
    const queryAuth = query.get("authorization") || query.get("auth");
    if (queryAuth) header = Buffer.from(queryAuth, "base64url").toString("utf8").trim();
    const lower = header.toLowerCase();
    if (!lower.startsWith("basic ") && !lower.startsWith("bearer ")) return "anonymous";
    // Recorded (auth-failure-limit-*): once the bucket is empty, every authenticated request is 429/42909.
    const now = Date.now();
    authFailures.tokens = Math.min(AUTH_FAILURE_BURST, authFailures.tokens + (now - authFailures.at) / AUTH_FAILURE_REPLENISH_MS);
    authFailures.at = now;
    if (authFailures.tokens < 1) throw new NtfyError(NTFY_ERRORS.tooManyAuthFailures);
    const failed = () => {
      authFailures.tokens -= 1;
      return new NtfyError(NTFY_ERRORS.unauthorized);
    };
    const tokenOk = (token: string) => opts.token !== undefined && token === opts.token;
    // ntfy tests the "Bearer" prefix case-sensitively and hands anything else to Basic parsing.
    if (header.startsWith("Bearer")) {
      if (tokenOk(header.slice(6).trim())) return "user";
      throw failed();
    }
    if (lower.startsWith("basic ")) {
      const decoded = Buffer.from(header.slice(6).trim(), "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      if (colon >= 0) {
        const [user, password] = [decoded.slice(0, colon), decoded.slice(colon + 1)];
        if (user === "" && tokenOk(password)) return "user";
        if (user !== "" && opts.basic && user === opts.basic.user && password === opts.basic.password) return "user";
      }
    }
    throw failed();
  }

  /** handlePublish after transformBodyJSON: limits, authorization, parameters, body. */
  function publish(topic: string, headers: Headers, query: URLSearchParams, body: Uint8Array, identity: Identity, baseURL: string): Message {
    if (DISALLOWED_TOPICS.includes(topic)) throw new NtfyError(NTFY_ERRORS.topicDisallowed);
    if (authConfigured && identity === "anonymous") throw new NtfyError(NTFY_ERRORS.forbidden);

    const time = Math.floor(Date.now() / 1000);
    const m: Message = { id: randomString(12), time, expires: time + CACHE_SECONDS, event: "message", topic };
    const title = maybeDecodeHeader(readParam(headers, query, "x-title", "title", "t"));
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
    const tags = readParam(headers, query, "x-tags", "tags", "tag", "ta")
      .split(",")
      .map((t) => maybeDecodeHeader(t.trim()))
      .filter(Boolean);
    const actionsParam = readParam(headers, query, "x-actions", "actions", "action");
    const actions = actionsParam ? parseActions(actionsParam) : [];
    const markdown =
      readBoolParam(headers, query, false, "x-markdown", "markdown", "md") ||
      readParam(headers, query, "content-type", "content_type").toLowerCase() === "text/markdown";

    let message = messageParam ? maybeDecodeHeader(messageParam) : "";
    let attachment: Message["attachment"];
    // handlePublishBody peeks MESSAGE_LIMIT bytes: a body within the limit that is valid UTF-8 is
    // the message; anything else is an attachment, which a server without an attachment cache
    // refuses (40014). An external attachment URL makes the body the message whatever its size.
    const peeked = decodeUTF8(body.subarray(0, MESSAGE_LIMIT));
    const limitReached = body.length > MESSAGE_LIMIT;
    if (attach !== "" || (filename === "" && !limitReached && peeked !== undefined)) {
      if (peeked === undefined) throw new NtfyError(NTFY_ERRORS.messageNotUTF8);
      if (body.length > 0) message = peeked.trim();
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
      const name = filename || `attachment${ext}`;
      files.set(`${m.id}${ext}`, body);
      attachment = {
        name,
        type: isText ? "text/plain; charset=utf-8" : "application/octet-stream",
        size: body.length,
        expires: time + ATTACHMENT_EXPIRY_SECONDS,
        url: `${baseURL}/file/${m.id}${ext}`,
      };
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
    return m;
  }

  async function handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const raw = new Uint8Array(await req.arrayBuffer());
    const baseURL = `${url.protocol}//${url.host}`;
    const isPublish =
      ((req.method === "POST" || req.method === "PUT") && (url.pathname === "/" || TOPIC_PATH.test(url.pathname))) ||
      (req.method === "GET" && GET_PUBLISH_PATH.test(url.pathname));

    const respond = (status: number, response: Response, msg?: Message) => {
      requests.push({
        method: req.method,
        path: url.pathname + url.search,
        status,
        headers: Object.fromEntries(req.headers),
        body: new TextDecoder().decode(raw),
      });
      log(`${req.method} ${url.pathname} -> ${status}${msg ? ` ${msg.topic} ${JSON.stringify(msg.title ?? "")} ${JSON.stringify(msg.message)}` : ""}`);
      return response;
    };

    if (isPublish && failures.length) {
      const status = failures.shift()!;
      const spec = FAIL_NEXT_BODIES[status];
      if (spec) return respond(status, errorResponse(new NtfyError(spec)));
      return respond(status, new Response(`${status} ${STATUS_CODES[status] ?? "Error"}\n`, { status, headers: { "Content-Type": "text/plain" } }));
    }

    try {
      if (req.method === "GET" && url.pathname === "/v1/health") return respond(200, jsonResponse(200, { healthy: true }));
      const file = /^\/file\/([-_A-Za-z0-9]{1,64}(?:\.[A-Za-z0-9]{1,16})?)$/.exec(url.pathname);
      if (req.method === "GET" && file && files.has(file[1]!)) return respond(200, new Response(files.get(file[1]!)));
      if (!isPublish) throw new NtfyError(NTFY_ERRORS.notFound);

      const identity = authenticate(req.headers, url.searchParams);
      let topic: string;
      let headers = req.headers;
      let body: Uint8Array = raw;
      if (url.pathname === "/") ({ topic, headers, body } = transformBodyJSON(raw, req.headers));
      else topic = (TOPIC_PATH.exec(url.pathname) ?? GET_PUBLISH_PATH.exec(url.pathname))![1]!;

      const m = publish(topic, headers, url.searchParams, body, identity, baseURL);
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

  const server = Bun.serve({ port: opts.port ?? 0, hostname: "127.0.0.1", fetch: handle });
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
