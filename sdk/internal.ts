/** What tests reach beyond the SDK's public surface (index.ts). */
export { runCli, type CliIo } from "./cli-program.js";
