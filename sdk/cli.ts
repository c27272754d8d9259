#!/usr/bin/env node
/**
 * The `fabric` command: see `fabric --help`. Settings come from `fabric configure`
 * (`$FABRIC_HOME/client.json`), overridden by `FABRIC_BROKER` and `FABRIC_TOKEN`.
 *
 * @example
 * ```sh
 * fabric configure --broker broker.example.org:50051 --token "$TOKEN"
 * fabric function register reduce.js --entry reduce
 * fabric run FUNCTION_ID --endpoint ENDPOINT_ID --args '["/data/scan-1.h5"]' --wait --timeout 300
 * ```
 */
import { runCli } from "./cli-program.js";

const code = await runCli(process.argv.slice(2), {
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
  env: process.env,
  isTTY: process.stdout.isTTY === true,
});
process.exitCode = code;
