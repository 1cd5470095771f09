/**
 * HTTP at the edges, for every peer (KFP, ntfy, Gitea): an answer that never ends or is too big
 * must end the request with a clear message while the process stays small, and https:// to a
 * plain-HTTP port is named as such.
 */
import { describe, expect, test } from "bun:test";
import * as net from "node:net";
import * as path from "node:path";
import { BIN, EXAMPLES, cleanEnv, scratch, withServer } from "./helpers";
import { usePeers } from "./with-server.ts";

const MiB = 2 ** 20;

/** Answers every request with a body that never ends (or declares a length it never sends), counting what the socket took. */
interface EndlessServer {
  url: string;
  requests: string[];
  /** Bytes the sockets accepted: what the client read plus what the kernel buffered. */
  sent: number;
  stop(): void;
}

async function startEndlessServer(opts: { declare?: number } = {}): Promise<EndlessServer> {
  // One write per chunk frame: Bun's HTTP client rejects frames split across writes under load.
  const data = Buffer.alloc(64 * 1024, "a");
  const frame = Buffer.concat([Buffer.from(`${data.length.toString(16)}\r\n`), data, Buffer.from("\r\n")]);
  const state = { requests: [] as string[], sent: 0 };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
    socket.on("close", () => sockets.delete(socket));
    socket.once("data", (head) => {
      state.requests.push(head.toString("latin1").split("\r\n")[0]!);
      const length = opts.declare ? `Content-Length: ${opts.declare}` : "Transfer-Encoding: chunked";
      socket.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n${length}\r\n\r\n${opts.declare ? "" : "6\r\n"}{"x":"${opts.declare ? "" : "\r\n"}`);
      const pump = () => {
        while (!socket.destroyed) {
          const more = socket.write(opts.declare ? data : frame);
          state.sent += data.length;
          if (!more) return void socket.once("drain", pump);
        }
      };
      pump();
    });
  });
  server.listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    get requests() {
      return state.requests;
    },
    get sent() {
      return state.sent;
    },
    stop() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/** Run the binary and report its peak resident memory (from the kernel, at exit). */
async function runMeasured(args: string[], env: Record<string, string> = {}) {
  const proc = Bun.spawn([BIN, ...args], { cwd: scratch(), env: cleanEnv(env), stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  const code = await proc.exited;
  const peakMiB = (proc.resourceUsage()?.maxRSS ?? Number.POSITIVE_INFINITY) / MiB;
  return { code, stdout, stderr, peakMiB, json: () => JSON.parse(stdout) };
}

const EVALUATION = path.join(EXAMPLES, "evaluation_pipeline.py");
// Far below what an unbounded read reaches (gigabytes), far above kfp-sync plus a 64 MiB answer.
const PEAK_LIMIT_MiB = 512;

describe("answer size caps", () => {
  const peers = usePeers({ reset: false });

  test("KFP: an endless answer ends at 64 MiB, said so, not retried, memory bounded", async () => {
    await withServer(startEndlessServer(), async (endless) => {
      // A long timeout: without the cap the run reads for all of it.
      const r = await runMeasured(["--host", endless.url, "--http-timeout", "5", "--retries", "2", "--out-dir", scratch(), EVALUATION]);
      expect(r.code).toBe(1);
      const message = r.json().pipelines[0].error.message;
      expect(message).toContain("the answer was larger than 64 MiB");
      expect(r.stderr).not.toContain("no answer within");
      expect(endless.requests.length).toBe(1); // the same answer again would be as large
      expect(endless.sent).toBeLessThan(64 * MiB + 32 * MiB);
      expect(r.peakMiB).toBeLessThan(PEAK_LIMIT_MiB);
    });
  });

  test("KFP: an answer that declares a length over the cap is refused before it is read", async () => {
    await withServer(startEndlessServer({ declare: 10 * 1024 * MiB }), async (endless) => {
      const r = await runMeasured(["--host", endless.url, "--http-timeout", "5", "--retries", "0", "--out-dir", scratch(), EVALUATION]);
      expect(r.code).toBe(1);
      expect(r.json().pipelines[0].error.message).toContain("the answer was larger than 64 MiB");
      expect(r.peakMiB).toBeLessThan(PEAK_LIMIT_MiB);
    });
  });

  test("ntfy and Gitea: endless answers end at 1 MiB; the sync itself goes on", async () => {
    await withServer(startEndlessServer(), async (endless) => {
      const r = await runMeasured(["--host", peers.kfp.url, "--http-timeout", "5", "--out-dir", scratch(), EVALUATION], {
        NTFY_URL: `${endless.url}/ci`,
        GITEA_ACTIONS: "true",
        GITHUB_SERVER_URL: endless.url,
        GITHUB_REPOSITORY: "ml/pipelines",
        GITHUB_RUN_NUMBER: "7",
        GITHUB_RUN_ID: "9001",
      });
      expect(r.code).toBe(0); // ntfy is best effort
      const s = r.json();
      expect(s.pipelines[0].state).toBe("created");
      expect(s.problems.map((p: { message: string }) => p.message)).toEqual(["notification not sent: the answer was larger than 1 MiB"]);
      expect(endless.requests.map((q) => q.split(" ")[1])).toEqual(["/api/v1/version", "/"]);
      expect(endless.sent).toBeLessThan(2 * (1 * MiB + 32 * MiB));
      expect(r.peakMiB).toBeLessThan(PEAK_LIMIT_MiB);
    });
  });
});

describe("https:// to a plain-HTTP port", () => {
  const peers = usePeers({ reset: false });

  test("KFP and ntfy: the message says the port speaks plain HTTP and suggests http://; no retries", async () => {
    const kfpPlain = new URL(peers.kfp.url);
    const ntfyPlain = new URL(`${peers.ntfy.url}/ci`);
    const https = (u: URL) => `https://${u.host}${u.pathname === "/" ? "" : u.pathname}`;
    const r = await runMeasured(["--host", https(kfpPlain), "--out-dir", scratch(), EVALUATION], { NTFY_URL: https(ntfyPlain) });
    expect(r.code).toBe(1);
    const s = r.json();
    expect(s.pipelines[0].error.message).toBe(
      `reach the KFP API (healthz): the server does not speak HTTPS on that port; did you mean http://${kfpPlain.host}?`,
    );
    expect(r.stderr).not.toContain("retrying");
    const notify = s.problems.find((p: { stage: string }) => p.stage === "notify");
    expect(notify.message).toBe(`notification not sent: the server does not speak HTTPS on that port; did you mean http://${ntfyPlain.host}/ci?`);
  });
});
