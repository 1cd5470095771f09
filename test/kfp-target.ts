/**
 * The KFP API server a test talks to: the imitation (test/kfp-server.ts), fresh per call, or, when
 * KFP_TEST_HOST is set, that server (e.g. a port-forward to a cluster's ml-pipeline service), with
 * KFP_TEST_TOKEN and KFP_TEST_NAMESPACE. Tests that need the imitation's insides (state(), failNext,
 * requests) check `remote` and skip with a printed reason.
 */
import { startKfpServer, type KfpServer, type KfpServerOptions } from "./kfp-server";

export interface KfpTarget {
  url: string;
  token?: string;
  namespace?: string;
  /** True when the tests run against KFP_TEST_HOST: not fresh, not ours to inspect or reset. */
  remote: boolean;
  /** The imitation, when not remote. */
  server?: KfpServer;
  stop(): Promise<void>;
}

export const REMOTE_HOST = process.env.KFP_TEST_HOST?.replace(/\/+$/, "") || undefined;

export async function kfpTarget(opts: KfpServerOptions = {}): Promise<KfpTarget> {
  if (REMOTE_HOST) {
    return {
      url: REMOTE_HOST,
      token: process.env.KFP_TEST_TOKEN || undefined,
      namespace: process.env.KFP_TEST_NAMESPACE || undefined,
      remote: true,
      stop: async () => {},
    };
  }
  const server = await startKfpServer(opts);
  return { url: server.url, token: opts.token, remote: false, server, stop: () => server.stop() };
}

/** Says once, on stderr, why a test does not run against KFP_TEST_HOST. */
export function skipReason(what: string, why: string): void {
  process.stderr.write(`skipped against KFP_TEST_HOST: ${what}: ${why}\n`);
}
