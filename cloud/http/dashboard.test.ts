import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import Fastify from "fastify";
import { afterAll, describe, expect, it } from "vitest";

import { dashboardRoutes } from "./dashboard.js";

describe("the dashboard's routes", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "dashboard-assets-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("serve the built files with their types, an ETag and a strict CSP, and / redirects to /ui/", async () => {
    const built = path.join(dir, "built");
    mkdirSync(built);
    writeFileSync(path.join(built, "index.html"), "<!doctype html><title>x</title>");
    writeFileSync(path.join(built, "app.js"), "console.log(1)");
    writeFileSync(path.join(built, "app.css"), "body{}");
    const app = Fastify();
    dashboardRoutes({ assetsDir: built })(app);
    const root = await app.inject({ url: "/" });
    expect(root.statusCode).toBe(302);
    expect(root.headers.location).toBe("/ui/");
    expect((await app.inject({ url: "/ui" })).headers.location).toBe("/ui/");
    const page = await app.inject({ url: "/ui/" });
    expect(page.statusCode).toBe(200);
    expect(page.headers["content-type"]).toMatch(/^text\/html/);
    expect(page.headers["content-security-policy"]).toContain("default-src 'none'");
    expect(page.headers["referrer-policy"]).toBe("no-referrer");
    const js = await app.inject({ url: "/ui/app.js" });
    expect(js.headers["content-type"]).toMatch(/^text\/javascript/);
    expect(js.body).toBe("console.log(1)");
    const again = await app.inject({
      url: "/ui/app.js",
      headers: { "if-none-match": js.headers.etag as string },
    });
    expect(again.statusCode).toBe(304);
    expect((await app.inject({ url: "/ui/app.css" })).headers["content-type"]).toMatch(/^text\/css/);
    expect((await app.inject({ url: "/ui/../package.json" })).statusCode).toBe(404);
    await app.close();
  });

  it("say how to build the files when they are missing", async () => {
    const app = Fastify();
    dashboardRoutes({ assetsDir: path.join(dir, "nothing") })(app);
    const page = await app.inject({ url: "/ui/" });
    expect(page.statusCode).toBe(503);
    expect(page.body).toMatch(/not built.*npm run build/);
    await app.close();
  });
});
