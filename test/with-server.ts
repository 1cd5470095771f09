// Shared by the peer tests and the stage tests: it needs no binary, unlike helpers.ts.
import { afterAll, beforeAll, beforeEach } from "bun:test";
import { startKfpServer, type KfpServer, type KfpServerOptions } from "./kfp-server";
import { startNtfyServer, type NtfyServer, type NtfyServerOptions } from "./ntfy-server";

/** Start a server, hand it to `use`, and stop it however `use` ends. */
export async function withServer<S extends { stop(): unknown }, T>(start: Promise<S>, use: (server: S) => Promise<T> | T): Promise<T> {
  const server = await start;
  try {
    return await use(server);
  } finally {
    await server.stop();
  }
}

export interface Peers {
  readonly kfp: KfpServer;
  readonly ntfy: NtfyServer;
}

/**
 * The imitations of KFP and ntfy for every test of the enclosing file or describe: started once before
 * them, stopped after them and, unless `reset` is false, emptied before each test, so no test sees
 * another's pipelines or notifications. The servers exist only once the hooks have run, hence a handle.
 */
export function usePeers(opts: { kfp?: KfpServerOptions; ntfy?: NtfyServerOptions; reset?: boolean } = {}): Peers {
  let kfp: KfpServer | undefined;
  let ntfy: NtfyServer | undefined;
  beforeAll(async () => {
    kfp = await startKfpServer(opts.kfp);
    ntfy = await startNtfyServer(opts.ntfy);
  });
  afterAll(async () => {
    await kfp?.stop();
    await ntfy?.stop();
  });
  if (opts.reset !== false) {
    beforeEach(() => {
      kfp!.reset();
      ntfy!.published.length = 0;
      ntfy!.requests.length = 0;
    });
  }
  // Read at describe time, a server would be undefined and fail far from the cause.
  const started = <S>(server: S | undefined, name: string): S => {
    if (!server) throw new Error(`usePeers: the ${name} server starts in beforeAll; use it inside a test or hook`);
    return server;
  };
  return {
    get kfp() {
      return started(kfp, "KFP");
    },
    get ntfy() {
      return started(ntfy, "ntfy");
    },
  };
}
