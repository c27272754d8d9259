import type { Logger } from "../../common/index.js";
import type { ProviderConfig } from "../config.js";
import type { ExecutionProvider } from "../provider.js";
import { LocalProvider } from "./local-provider.js";
import { PbsProvider } from "./pbs-provider.js";
import { SlurmProvider } from "./slurm-provider.js";

/** The provider a config asks for. */
export function createProvider(config: ProviderConfig, log: Logger): ExecutionProvider {
  switch (config.type) {
    case "local":
      return new LocalProvider(log);
    case "slurm":
      return new SlurmProvider({ config, log });
    case "pbs":
      return new PbsProvider({ config, log });
  }
}
