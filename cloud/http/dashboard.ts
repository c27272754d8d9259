/**
 * The web dashboard's files, on the HTTP API's listener: `/ui/` (the page, its script and style,
 * bundled at build time from ui/ into dist/ui/ by scripts/build-ui.mjs) and `/` redirecting
 * there. No token is needed for the files; the page asks for one and calls the API with it. These
 * routes are outside the API's route table, so they are not in the OpenAPI document.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";

/** Where the dashboard is served. */
export const DASHBOARD_PATH = "/ui/";

/** The bundle beside the compiled broker: dist/cloud/http/ → dist/ui/. */
const DEFAULT_ASSETS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../ui");

const FILES: Readonly<Record<string, string>> = {
  "index.html": "text/html; charset=utf-8",
  "app.js": "text/javascript; charset=utf-8",
  "app.css": "text/css; charset=utf-8",
};

/**
 * What every file answers with: the page talks only to its own origin (the API), runs only its
 * own script, and may not be framed; no referrer leaves it.
 */
const SECURITY_HEADERS = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data: blob:; " +
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
};

interface Asset {
  readonly body: Buffer;
  readonly type: string;
  readonly etag: string;
}

/** Options of {@link dashboardRoutes}. */
export interface DashboardOptions {
  /** The folder of the built files. @default dist/ui beside the compiled broker */
  readonly assetsDir?: string;
}

/**
 * Registers the dashboard's routes on a fastify instance. The files are read once, here; a build
 * without them (tsc alone) answers 503 with how to build them instead.
 */
export function dashboardRoutes(opts: DashboardOptions = {}): (app: FastifyInstance) => void {
  const dir = opts.assetsDir ?? DEFAULT_ASSETS;
  const assets = new Map<string, Asset>();
  for (const [name, type] of Object.entries(FILES)) {
    const file = path.join(dir, name);
    if (!existsSync(file)) continue;
    const body = readFileSync(file);
    assets.set(name, {
      body,
      type,
      etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 27)}"`,
    });
  }
  const missing = Object.keys(FILES).filter((n) => !assets.has(n));

  const send = (name: string) => async (req: FastifyRequest, reply: FastifyReply) => {
    reply.headers(SECURITY_HEADERS);
    const asset = assets.get(name);
    if (!asset) {
      return reply
        .code(503)
        .type("text/plain; charset=utf-8")
        .send(
          `The dashboard is not built (${missing.join(", ")} missing in ${dir}): run \`npm run build\` or \`bash scripts/setup.sh\`.\n`,
        );
    }
    // Revalidated on every load (a new broker version brings new files), answered 304 when unchanged.
    reply.header("cache-control", "no-cache").header("etag", asset.etag);
    if (req.headers["if-none-match"] === asset.etag) return reply.code(304).send();
    return reply.type(asset.type).send(asset.body);
  };

  return (app) => {
    app.get("/", async (_req, reply) => reply.redirect(DASHBOARD_PATH, 302));
    app.get("/ui", async (_req, reply) => reply.redirect(DASHBOARD_PATH, 301));
    app.get(DASHBOARD_PATH, send("index.html"));
    for (const name of Object.keys(FILES)) app.get(`${DASHBOARD_PATH}${name}`, send(name));
  };
}
