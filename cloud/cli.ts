#!/usr/bin/env node
import * as grpc from "@grpc/grpc-js";
import { Command, CommanderError, InvalidArgumentError } from "commander";
import { decodeJwt } from "jose";

import { FABRIC_VERSION, FabricError, toFabricError, createLogger } from "../common/index.js";
import { TokenAuthority } from "./auth/tokens.js";
import { Broker } from "./broker.js";
import { loadBrokerConfigFile } from "./config.js";
import { withRevocationBucket } from "./state/revocations.js";

/** Parses "90", "90s", "15m", "12h", "30d" into seconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)\s*([smhd]?)$/.exec(text.trim());
  if (!m) throw new InvalidArgumentError(`"${text}" is not a duration like 3600, 90m, 12h or 30d`);
  const n = Number(m[1]);
  const unit = { "": 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as "" | "s" | "m" | "h" | "d"];
  return n * unit;
}

const program = new Command("fabric-broker")
  .description("The function fabric's cloud broker.")
  .version(`fabric-broker ${FABRIC_VERSION}`, "-V, --version", "print the version")
  .exitOverride()
  .configureOutput({
    // Commander's own usage errors in the one-line shape of every other error (exit 2).
    outputError: (s, write) =>
      write(
        `error: INVALID_ARGUMENT: ${s
          .replace(/^error:\s*/, "")
          .replace(/\s*\n\s*/g, " ")
          .trim()}\n`,
      ),
  });

program
  .command("start")
  .description(
    "run the broker in the foreground (SIGTERM/SIGINT stop it gracefully, SIGHUP reloads its TLS certificate)",
  )
  .requiredOption("-c, --config <file>", "broker config file (YAML)")
  .action(async (opts: { config: string }) => {
    const config = loadBrokerConfigFile(opts.config);
    const log = createLogger("fabric-broker");
    // grpc-js's own log lines (a failed bind prints "No address added ...") go to the broker's
    // log at debug: what matters reaches the operator as the broker's own error.
    const grpcLog = log.child({ component: "grpc-js" });
    grpc.setLogger({
      error: (...a: unknown[]) => grpcLog.debug(a.map(String).join(" ")),
    });
    const broker = new Broker(config, log);
    await broker.start();
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, "stopping");
      broker.stop().then(
        () => process.exit(0),
        (err: unknown) => {
          log.error({ err }, "unclean stop");
          process.exit(1);
        },
      );
    };
    process.on("SIGTERM", () => stop("SIGTERM"));
    process.on("SIGINT", () => stop("SIGINT"));
    // Certificate rotation: read the TLS files again, keep every open connection.
    process.on("SIGHUP", () => void broker.reloadTls("SIGHUP"));
  });

program
  .command("token")
  .description("issue a user token signed with the broker's key (an admin command: it reads the key file)")
  .requiredOption("-c, --config <file>", "broker config file (YAML)")
  .requiredOption("-u, --user <id>", "user id the token is for")
  .option("--ttl <duration>", "validity, e.g. 3600, 12h, 30d", parseDuration, 30 * 86400)
  .action(async (opts: { config: string; user: string; ttl: number }) => {
    const config = loadBrokerConfigFile(opts.config);
    // Only `start` creates the key: a token signed with a key made here by a mistyped path would
    // be refused by the broker.
    const auth = await TokenAuthority.fromKeyFile(
      config.auth.keyFile,
      config.auth.issuer,
      config.auth.audience,
      {
        create: false,
      },
    );
    if (!/^[\w.@+-]{1,128}$/.test(opts.user)) {
      throw new FabricError("INVALID_ARGUMENT", "a user id is 1-128 letters, digits or . _ @ + -");
    }
    process.stdout.write(`${await auth.issueUserToken(opts.user, opts.ttl)}\n`);
  });

program
  .command("revoke")
  .description(
    "revoke a token (user or endpoint) on every replica at once, by the token itself or its id (jti)",
  )
  .requiredOption("-c, --config <file>", "broker config file (YAML)")
  .option("--token <jwt>", "the token to revoke")
  .option("--token-id <jti>", "the id (jti claim) of the token to revoke")
  .action(async (opts: { config: string; token?: string; tokenId?: string }) => {
    const config = loadBrokerConfigFile(opts.config);
    let tokenId = opts.tokenId ?? "";
    let exp = Math.floor(Date.now() / 1000) + 10 * 365 * 86400;
    if (opts.token) {
      const claims = decodeJwt(opts.token);
      tokenId = claims.jti ?? "";
      exp = claims.exp ?? exp;
    }
    if (!/^[\w.@:+-]{1,256}$/.test(tokenId)) {
      throw new FabricError("INVALID_ARGUMENT", "give --token (with a jti claim) or --token-id");
    }
    await withRevocationBucket(config.nats, (bucket) => TokenAuthority.revoke(bucket, tokenId, exp));
    process.stdout.write(`revoked ${tokenId}\n`);
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof CommanderError) {
    // Help and the version are a success; a usage error was printed by outputError.
    process.exit(err.code === "commander.helpDisplayed" || err.code === "commander.version" ? 0 : 2);
  }
  const fe = toFabricError(err);
  process.stderr.write(`error: ${fe.code}: ${fe.message}\n`);
  process.exit(1);
});
