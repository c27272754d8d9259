// The `fabric` command line: parsing, one action per command, and the exit-code contract
// (0 ok, 1 a failed call or task, 2 a usage error), kept apart from the process entry (cli.ts) so
// it can be run in-process by tests.
import { readFileSync } from "node:fs";
import path from "node:path";

import { Command, CommanderError, Option } from "commander";

import { FABRIC_VERSION, FabricError, channelFor } from "../common/client.js";
import { Client } from "./client.js";
import {
  detailSections,
  drawBoxes,
  errorToJson,
  formatEndpoint,
  formatEndpoints,
  formatEndpointTasks,
  formatFunction,
  formatFunctions,
  formatOutcomeLine,
  formatTaskList,
  formatTaskStatus,
  formatTaskStates,
  formatValue,
  outcomeToJson,
  toJson,
} from "./cli-format.js";
import { writeClientFile } from "./config.js";
import { TaskFailedError } from "./errors.js";
import { taskStateOf } from "./codec.js";
import type { TaskStateName, TaskSummaryInfo } from "./types.js";

/** Where the CLI reads and writes; the real process by default, buffers in tests. */
export interface CliIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  readonly env: NodeJS.ProcessEnv;
  /** How a command gets its client. Default: {@link Client.fromConfig} with `env`. */
  readonly connect?: (env: NodeJS.ProcessEnv) => Client;
  /** Whether stdout is a terminal: tables get box lines (else plain columns). @default false */
  readonly isTTY?: boolean;
}

/** A mistake in how the command was called: exit code 2. */
export class UsageError extends FabricError {
  override readonly name: string = "UsageError";
  constructor(message: string) {
    super("INVALID_ARGUMENT", message);
  }
}

/** Parses `--args`: a JSON array. */
export function parseArgsOption(text: string | undefined): unknown[] | undefined {
  if (text === undefined) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`--args is not valid JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(v)) throw new UsageError(`--args must be a JSON array, e.g. --args '[1, "a"]'`);
  return v as unknown[];
}

/** Parses `--kwargs`: a JSON object. */
export function parseKwargsOption(text: string | undefined): Record<string, unknown> | undefined {
  if (text === undefined) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`--kwargs is not valid JSON: ${(err as Error).message}`);
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) {
    throw new UsageError(`--kwargs must be a JSON object, e.g. --kwargs '{"file": "a.h5"}'`);
  }
  return v as Record<string, unknown>;
}

/** Parses a duration in seconds (`--timeout`, `--walltime`) into a number. */
export function parseSeconds(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0)
    throw new UsageError(`${flag} must be a positive number of seconds, got ${JSON.stringify(text)}`);
  return n;
}

/** Parses `--since`/`--until`: an ISO time, or an age back from now (`30s`, `15m`, `2h`, `7d`). */
export function parseWhen(flag: string, text: string | undefined, now = Date.now()): Date | undefined {
  if (text === undefined) return undefined;
  const age = /^(\d+(?:\.\d+)?)\s*(s|m|h|d)$/.exec(text.trim());
  if (age) {
    const unit = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[age[2] as "s" | "m" | "h" | "d"];
    return new Date(now - Number(age[1]) * unit);
  }
  const t = Date.parse(text);
  if (Number.isNaN(t))
    throw new UsageError(
      `${flag} must be a time (2026-12-01T10:00) or an age (30m, 2h, 7d), got ${JSON.stringify(text)}`,
    );
  return new Date(t);
}

/** The last lines of what a failed task printed: what is worth a terminal's screen. */
function tail(
  output: { readonly stdout: string; readonly stderr: string } | undefined,
  lines = 40,
): { stdout: string; stderr: string } | undefined {
  if (!output) return undefined;
  const last = (text: string) => {
    const all = text.replace(/\n$/, "").split("\n");
    return all.length <= lines
      ? text
      : [`[… ${all.length - lines} lines above …]`, ...all.slice(-lines)].join("\n");
  };
  return { stdout: last(output.stdout), stderr: last(output.stderr) };
}

/** The one line printed for an error. */
export function errorLine(err: unknown): string {
  if (err instanceof FabricError) return `error: ${err.code}: ${oneLine(err.message)}`;
  return `error: INTERNAL: ${oneLine(err instanceof Error ? err.message : String(err))}`;
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, " ").trim();
}

interface JsonFlag {
  json?: boolean;
}

const jsonOption = () => new Option("--json", "print machine-readable JSON");

/**
 * Runs the `fabric` CLI with `argv` (the arguments after the program name) and returns the exit
 * code: 0 success, 1 a failed call or task, 2 a usage error. Prints one `error: CODE: message`
 * line on failure, never a stack trace.
 */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const out = (text: string) => io.stdout(text.endsWith("\n") ? text : `${text}\n`);
  let exitCode = 0;
  let client: Client | undefined;
  const connect = (): Client => (client ??= (io.connect ?? ((env) => Client.fromConfig({ env })))(io.env));
  const print = (json: boolean | undefined, value: unknown, human: () => string) =>
    out(json ? toJson(value) : human());
  /**
   * Finishes `cmd` as a command whose only option is --json: it prints what `run` resolves for the
   * command's arguments, as JSON with --json, else as `human` words it.
   */
  const printing = <A extends unknown[], T>(
    cmd: Command,
    run: (...args: A) => Promise<T>,
    human: (value: T) => string,
  ): Command =>
    cmd.addOption(jsonOption()).action(async (...args: unknown[]) => {
      // Commander passes the command's arguments, then its options, then the command itself.
      const value = await run(...(args.slice(0, -2) as A));
      print((args.at(-2) as JsonFlag).json, value, () => human(value));
    });
  /** `delete <id>` of a kind of record the caller owns: deletes it with `remove`, and says so. */
  const deleting = (
    parent: Command,
    kind: "function" | "endpoint",
    description: string,
    remove: (id: string) => Promise<void>,
  ): Command =>
    printing(
      parent.command("delete <id>").description(description),
      async (id: string) => {
        await remove(id);
        return { [`${kind}Id`]: id, deleted: true };
      },
      (deleted) => `deleted ${kind} ${String(deleted[`${kind}Id`])}`,
    );

  drawBoxes(io.isTTY === true);
  const json = argv.includes("--json");
  const program = new Command("fabric")
    .description("Run functions on HPC endpoints through the fabric's broker.")
    .version(`fabric ${FABRIC_VERSION}`, "-V, --version", "print the version")
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout(s),
      writeErr: (s) => io.stderr(s),
      // Commander's own parse errors, in the same one-line shape as every other error.
      outputError: (s, write) => write(`error: INVALID_ARGUMENT: ${oneLine(s.replace(/^error:\s*/, ""))}\n`),
    });

  program
    .command("configure")
    .description("save the broker address, your token and TLS files to $FABRIC_HOME/client.json (mode 0600)")
    .requiredOption("--broker <address>", "broker address, host:port (plaintext) or grpcs://host:port (TLS)")
    .requiredOption("--token <token>", "your token (a JWT from the broker's operator)")
    .option("--ca-file <pem>", "CA bundle the broker's certificate must chain to (default: trusted roots)")
    .option("--cert-file <pem>", "client certificate, for a broker that requires one (mTLS)")
    .option("--key-file <pem>", "private key of --cert-file")
    .action(
      (opts: { broker: string; token: string; caFile?: string; certFile?: string; keyFile?: string }) => {
        const files = {
          ...(opts.caFile ? { caFile: path.resolve(opts.caFile) } : {}),
          ...(opts.certFile ? { certFile: path.resolve(opts.certFile) } : {}),
          ...(opts.keyFile ? { keyFile: path.resolve(opts.keyFile) } : {}),
        };
        // The same checks a client makes, so a wrong path or scheme shows now, not at the first call.
        channelFor(opts.broker, files);
        const file = writeClientFile({ broker: opts.broker, token: opts.token, ...files }, io.env);
        out(`saved ${file}`);
      },
    );

  // ---------- functions ----------
  const fn = program.command("function").description("register, list, show and delete functions");

  fn.command("register <file>")
    .description("register a function from a source file: Python (.py) or JavaScript (any other)")
    .requiredOption("--entry <name>", "the function in the file to call")
    .option("--name <name>", "a human name (default: the entry point)")
    .option("--description <text>", "what it does")
    .option("--image <image>", "container image it needs (default: the endpoint's)")
    .option("--min-python <version>", "lowest Python version it needs, e.g. 3.10 (Python files)")
    .addOption(jsonOption())
    .action(
      async (
        file: string,
        opts: {
          entry: string;
          name?: string;
          description?: string;
          image?: string;
          minPython?: string;
        } & JsonFlag,
      ) => {
        let source: string;
        try {
          source = readFileSync(file, "utf8");
        } catch (err) {
          throw new UsageError(`cannot read ${file}: ${(err as Error).message}`);
        }
        const python = file.endsWith(".py");
        if (opts.minPython !== undefined && !python)
          throw new UsageError("--min-python is for Python files (.py)");
        const options = {
          ...(opts.name !== undefined ? { name: opts.name } : {}),
          ...(opts.description !== undefined ? { description: opts.description } : {}),
          ...(opts.image !== undefined ? { containerImage: opts.image } : {}),
        };
        const id = await connect().registerFunction(
          python
            ? {
                python: {
                  source,
                  entryPoint: opts.entry,
                  ...(opts.minPython !== undefined ? { minVersion: opts.minPython } : {}),
                },
              }
            : { source, entryPoint: opts.entry },
          options,
        );
        print(opts.json, { functionId: id }, () => id);
      },
    );

  fn.command("register-shell <command>")
    .description("register a shell command template; {name} placeholders are filled from --kwargs")
    .option("--walltime <seconds>", "kill the command after this long (default: the endpoint's)")
    .option("--name <name>", "a human name (default: the command)")
    .option("--description <text>", "what it does")
    .option("--image <image>", "container image it needs (default: the endpoint's)")
    .addOption(jsonOption())
    .action(
      async (
        command: string,
        opts: { walltime?: string; name?: string; description?: string; image?: string } & JsonFlag,
      ) => {
        const walltime = parseSeconds("--walltime", opts.walltime);
        if (walltime !== undefined && !Number.isInteger(walltime))
          throw new UsageError("--walltime must be whole seconds");
        const id = await connect().registerShellFunction(command, {
          ...(walltime !== undefined ? { walltimeSeconds: walltime } : {}),
          ...(opts.name !== undefined ? { name: opts.name } : {}),
          ...(opts.description !== undefined ? { description: opts.description } : {}),
          ...(opts.image !== undefined ? { containerImage: opts.image } : {}),
        });
        print(opts.json, { functionId: id }, () => id);
      },
    );

  printing(
    fn.command("list").description("list your functions"),
    () => connect().listFunctions(),
    formatFunctions,
  );
  printing(
    fn.command("show <id>").description("show a function, with its source or command"),
    (id: string) => connect().getFunction(id),
    formatFunction,
  );
  deleting(fn, "function", "delete a function (tasks already submitted are not affected)", (id) =>
    connect().deleteFunction(id),
  );

  // ---------- run ----------
  program
    .command("run <functionId>")
    .description("run a function once on an endpoint; prints the task id, or the result with --wait")
    .requiredOption("--endpoint <id>", "the endpoint to run on")
    .option("--args <json>", "positional arguments, a JSON array")
    .option("--kwargs <json>", "keyword arguments, a JSON object (fills a shell command's {name}s)")
    .option("--wait", "wait for the task and print its result")
    .option("--timeout <seconds>", "with --wait: give up after this long (the task keeps running)")
    .addOption(jsonOption())
    .action(
      async (
        functionId: string,
        opts: {
          endpoint: string;
          args?: string;
          kwargs?: string;
          wait?: boolean;
          timeout?: string;
        } & JsonFlag,
      ) => {
        const args = parseArgsOption(opts.args);
        const kwargs = parseKwargsOption(opts.kwargs);
        const timeout = parseSeconds("--timeout", opts.timeout);
        if (timeout !== undefined && !opts.wait) throw new UsageError("--timeout only applies with --wait");
        const c = connect();
        const taskId = await c.run(functionId, opts.endpoint, args, kwargs);
        if (!opts.wait) {
          print(opts.json, { taskId }, () => taskId);
          return;
        }
        const value = await c.waitForResult(
          taskId,
          timeout !== undefined ? { timeoutMs: timeout * 1000 } : {},
        );
        print(opts.json, { taskId, state: "success", value: value ?? null }, () => formatValue(value));
      },
    );

  // ---------- tasks ----------
  const task = program.command("task").description("follow, inspect and cancel tasks");

  printing(
    task.command("status <id>").description("a task's state and its history"),
    (id: string) => connect().getTask(id),
    formatTaskStatus,
  );

  task
    .command("result <id>")
    .description("a finished task's result (fails with FAILED_PRECONDITION while it runs, unless --wait)")
    .option("--wait", "wait for it to finish")
    .option("--timeout <seconds>", "with --wait: give up after this long")
    .addOption(jsonOption())
    .action(async (id: string, opts: { wait?: boolean; timeout?: string } & JsonFlag) => {
      const timeout = parseSeconds("--timeout", opts.timeout);
      if (timeout !== undefined && !opts.wait) throw new UsageError("--timeout only applies with --wait");
      const c = connect();
      const value = opts.wait
        ? await c.waitForResult(id, timeout !== undefined ? { timeoutMs: timeout * 1000 } : {})
        : await c.getResult(id);
      print(opts.json, { taskId: id, state: "success", value: value ?? null }, () => formatValue(value));
    });

  task
    .command("watch <ids...>")
    .description("wait for tasks and print each as it finishes (exit 1 if any did not succeed)")
    .option("--timeout <seconds>", "give up after this long")
    .addOption(jsonOption())
    .action(async (ids: string[], opts: { timeout?: string } & JsonFlag) => {
      const timeout = parseSeconds("--timeout", opts.timeout);
      // One JSON document per line with --json, so a consumer can act on each as it arrives.
      for await (const o of connect().results(
        ids,
        timeout !== undefined ? { timeoutMs: timeout * 1000 } : {},
      )) {
        io.stdout(`${opts.json ? JSON.stringify(outcomeToJson(o)) : formatOutcomeLine(o)}\n`);
        if (!o.ok) exitCode = 1;
      }
    });

  task
    .command("list")
    .description("your tasks, newest first (--state, --function, --endpoint, --group, --since filter)")
    .option("--state <state...>", "only tasks in these states (success, failed, running, ...)")
    .option("--function <id>", "only tasks of this function")
    .option("--endpoint <id>", "only tasks on this endpoint")
    .option("--group <id>", "only tasks of this group")
    .option("--since <when>", "created since: a time (2026-12-01T10:00) or an age (30m, 2h, 7d)")
    .option("--until <when>", "created before: a time or an age")
    .option("--limit <n>", "most tasks to print (1 to 1000)", "50")
    .option("--all", "every matching task (follows the pages; ignores --limit)")
    .option("--cursor <cursor>", "go on where a previous listing stopped")
    .addOption(jsonOption())
    .action(
      async (opts: {
        state?: string[];
        function?: string;
        endpoint?: string;
        group?: string;
        since?: string;
        until?: string;
        limit: string;
        all?: boolean;
        cursor?: string;
        json?: boolean;
      }) => {
        const limit = Number(opts.limit);
        if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
          throw new UsageError(
            `--limit must be a whole number from 1 to 1000, got ${JSON.stringify(opts.limit)}`,
          );
        const states = (opts.state ?? []).flatMap((s) => s.split(",")).filter((s) => s !== "");
        for (const s of states) {
          if (taskStateOf(s) === undefined)
            throw new UsageError(
              `--state ${JSON.stringify(s)} is not a state: received, waiting-for-endpoint, waiting-for-nodes, running, success, failed, cancelled, expired`,
            );
        }
        const since = parseWhen("--since", opts.since);
        const until = parseWhen("--until", opts.until);
        const filters = {
          ...(states.length > 0 ? { states: states as TaskStateName[] } : {}),
          ...(opts.function !== undefined ? { functionId: opts.function } : {}),
          ...(opts.endpoint !== undefined ? { endpointId: opts.endpoint } : {}),
          ...(opts.group !== undefined ? { groupId: opts.group } : {}),
          ...(since ? { createdAfter: since } : {}),
          ...(until ? { createdBefore: until } : {}),
        };
        const c = connect();
        const tasks: TaskSummaryInfo[] = [];
        let cursor = opts.cursor;
        do {
          const page = await c.listTasks({
            ...filters,
            limit: opts.all ? 1000 : limit - tasks.length,
            ...(cursor ? { cursor } : {}),
          });
          tasks.push(...page.tasks);
          cursor = page.nextCursor;
        } while (cursor && (opts.all || tasks.length < limit));
        print(opts.json, { tasks, nextCursor: cursor ?? null }, () => formatTaskList(tasks, cursor));
      },
    );

  printing(
    task.command("cancel <ids...>").description("cancel tasks that have not finished"),
    (ids: string[]) => connect().cancel(ids),
    formatTaskStates,
  );

  // ---------- endpoints ----------
  const ep = program.command("endpoint").description("see your endpoints");

  printing(
    ep.command("list").description("list your endpoints and whether they are online"),
    () => connect().listEndpoints(),
    formatEndpoints,
  );
  printing(
    ep.command("status <id>").description("an endpoint's connection, workers and blocks"),
    (id: string) => connect().getEndpoint(id),
    formatEndpoint,
  );
  ep.command("tasks <id>")
    .description("the unfinished tasks on an endpoint you own, whoever submitted them")
    .option("--limit <n>", "most tasks to list, oldest queued first (1 to 1000)", "100")
    .addOption(jsonOption())
    .action(async (id: string, opts: { limit: string } & JsonFlag) => {
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
        throw new UsageError(
          `--limit must be a whole number from 1 to 1000, got ${JSON.stringify(opts.limit)}`,
        );
      const res = await connect().listEndpointTasks(id, { limit });
      print(opts.json, res, () => formatEndpointTasks(res));
    });
  deleting(ep, "endpoint", "delete an endpoint (its queued tasks fail)", (id) =>
    connect().deleteEndpoint(id),
  );

  try {
    await program.parseAsync([...argv], { from: "user" });
    return exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version asked for are a success; help shown because a subcommand is missing is not.
      if (err.code === "commander.helpDisplayed" || err.code === "commander.version") return 0;
      if (err.code === "commander.help" || err.code === "commander.executeSubCommandAsync") return 2;
      return 2; // commander already printed the message through outputError
    }
    if (json) {
      // With --json, stdout holds a JSON document whatever happened: the error is one too.
      io.stdout(
        `${toJson({ error: errorToJson(err), ...(err instanceof TaskFailedError ? { taskId: err.taskId } : {}) })}\n`,
      );
      return err instanceof UsageError ? 2 : 1;
    }
    if (err instanceof TaskFailedError) {
      // The task id first: it is what `fabric task status` and a colleague need.
      const reason = err.reason ? ` (${err.reason})` : "";
      io.stderr(`error: ${err.code}: task ${err.taskId} ${err.state}${reason}: ${oneLine(err.message)}\n`);
      const shell = err.shell;
      const output = err.output ?? (shell ? { stdout: shell.stdout, stderr: shell.stderr } : undefined);
      const more = detailSections(err.remote?.stack ?? "", tail(output));
      if (more) io.stderr(`${more}\n`);
      io.stderr(`(fabric task status ${err.taskId} shows its whole history and output)\n`);
      return 1;
    }
    io.stderr(`${errorLine(err)}\n`);
    return err instanceof UsageError ? 2 : 1;
  } finally {
    client?.close();
  }
}
