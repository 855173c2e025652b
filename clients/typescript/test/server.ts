/** Starts a real contextd on a free loopback port for the tests. */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** The repository root (this file runs from clients/typescript/dist/test). */
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");

// Flags every test server gets; the store flag goes here once `serve` has one.
const SERVE_ARGS = ["serve", "--listen", "127.0.0.1:0", "--store", "memory"];

/** CONTEXTD_BIN, else the repository's debug build. */
export function contextdBinary(): string {
  const path = process.env["CONTEXTD_BIN"] || resolve(REPO, "target/debug/contextd");
  if (!existsSync(path)) {
    throw new Error(`no contextd binary at ${path}: build it (cargo build) or set CONTEXTD_BIN`);
  }
  return path;
}

/** A contextd child process listening on `address`. */
export class Server {
  private constructor(
    private readonly child: ChildProcess,
    readonly address: string,
  ) {}

  /** Starts `contextd serve` with `extraArgs` after the common flags (such as `--auth keys`). */
  static async start(...extraArgs: string[]): Promise<Server> {
    const child = spawn(contextdBinary(), [...SERVE_ARGS, ...extraArgs], { stdio: ["ignore", "pipe", "ignore"] });
    const lines = createInterface({ input: child.stdout! });
    const address = await new Promise<string>((resolveAddress, reject) => {
      child.once("error", reject);
      child.once("exit", (code) => reject(new Error(`contextd exited with ${code} before listening`)));
      lines.on("line", (line) => {
        const prefix = "contextd listening on ";
        if (line.startsWith(prefix)) resolveAddress(line.slice(prefix.length).trim());
      });
    });
    child.removeAllListeners("exit");
    return new Server(child, address);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((done) => this.child.once("exit", done));
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 15000);
    await exited;
    clearTimeout(timer);
  }
}

/** Makes a key offline with `contextd keys add` in the config's `auth.keys_file`; returns it. */
export function addKey(config: string, tenant: string, role: "user" | "admin"): string {
  const args = ["keys", "add", "--tenant", tenant, "--role", role, "--store", "memory", "--config", config];
  return execFileSync(contextdBinary(), args, { encoding: "utf8" }).trim();
}
