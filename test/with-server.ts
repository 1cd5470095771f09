// Shared by the peer tests and the stage tests: it needs no binary, unlike helpers.ts.
/** Start a server, hand it to `use`, and stop it however `use` ends. */
export async function withServer<S extends { stop(): unknown }, T>(start: Promise<S>, use: (server: S) => Promise<T> | T): Promise<T> {
  const server = await start;
  try {
    return await use(server);
  } finally {
    await server.stop();
  }
}
