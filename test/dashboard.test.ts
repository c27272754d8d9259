/**
 * The web dashboard in a real browser (Debian's Chromium, driven by playwright-core) against a
 * real broker, NATS and endpoint: the broker serves the page at /ui/; a user signs in with a
 * token (kept in the tab's sessionStorage, never in a URL), sees the endpoint online, watches the
 * counts move as a batch submitted from the SDK runs, reads a failed task's remote traceback, and
 * cancels a running task from its page; with 100,000 tasks retained it stays quick (paged, counted
 * on the broker). Screenshots of each view go to a temporary directory (printed); with
 * UPDATE_SCREENSHOTS=1 they are also copied to docs/screenshots/.
 */
import { copyFileSync, existsSync, mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { randomUUID } from "node:crypto";

import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import pino from "pino";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { TaskIndex } from "../cloud/internal.js";
import { Bus } from "../common/index.js";
import { LocalFabric, ROOT, freePort, until } from "../devkit/index.js";
import { TaskState, type TaskIndexEntry } from "../proto/index.js";
import type { Client } from "../sdk/index.js";

/** Installed by scripts/test.sh (ensure-system.sh chromium), never downloaded by a test. */
const CHROMIUM = "/usr/bin/chromium";

interface StatsAnswer {
  total: number;
  counts: Record<string, number>;
  complete: boolean;
  series: { finished: number[] };
}
interface OpenApiDoc {
  paths: Record<string, Record<string, { operationId: string }>>;
}

describe("the dashboard in a browser", () => {
  let stack: LocalFabric;
  let base: string;
  let token: string;
  let alice: Client;
  let endpointId: string;
  let squareFn: string;
  let explodeFn: string;
  let sleepFn: string;
  let browser: Browser | undefined;
  let page: Page;
  /** Every request the page made: what it asked for, and the Authorization header it sent. */
  const requests: { method: string; url: string; auth: string | undefined }[] = [];
  const shots = mkdtempSync(path.join(tmpdir(), "fabric-dashboard-shots-"));

  beforeAll(async () => {
    if (!existsSync(CHROMIUM))
      throw new Error(
        `${CHROMIUM} is missing: \`bash scripts/ensure-system.sh chromium\` installs it (npm test does it for you)`,
      );
    const port = await freePort();
    stack = await LocalFabric.start({
      name: "dashboard",
      brokerConfig: { http: { listen: `127.0.0.1:${port}` } },
    });
    base = `http://127.0.0.1:${port}`;
    alice = await stack.client("alice");
    token = await stack.broker.token("alice");
    const [ep] = await Promise.all([
      stack.startEndpoint("alice", "dash-ep", { workers: 2 }),
      // Bob's endpoint, registered over HTTP (no agent ever connects), shared with Alice.
      (async () => {
        const bob = {
          authorization: `Bearer ${await stack.broker.token("bob")}`,
          "content-type": "application/json",
        };
        const made = await fetch(`${base}/v1/endpoints`, {
          method: "POST",
          headers: bob,
          body: JSON.stringify({ name: "bob-ep" }),
        });
        const { endpoint } = (await made.json()) as { endpoint: { id: string } };
        const shared = await fetch(`${base}/v1/endpoints/${endpoint.id}/policy`, {
          method: "POST",
          headers: bob,
          body: JSON.stringify({ sharedWith: ["alice"] }),
        });
        expect(shared.status).toBe(200);
      })(),
      (async () => {
        browser = await chromium.launch({
          executablePath: CHROMIUM,
          args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        });
      })(),
    ]);
    endpointId = ep.endpointId();
    squareFn = await alice.registerFunction({
      source: "function square(x) { const end = Date.now() + 40; while (Date.now() < end); return x * x; }",
      entryPoint: "square",
    });
    explodeFn = await alice.registerFunction({
      source: "function explode(x) { throw new RangeError('bad input ' + x); }",
      entryPoint: "explode",
    });
    sleepFn = await alice.registerShellFunction("sleep 60", { name: "sleep-a-minute" });
    const context = await browser!.newContext({ viewport: { width: 1180, height: 820 } });
    page = await context.newPage();
    page.on("request", (r) =>
      requests.push({ method: r.method(), url: r.url(), auth: r.headers()["authorization"] }),
    );
    console.log(`dashboard screenshots: ${shots}`);
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await stack?.stop();
  });

  /** Saves a screenshot of the page as NAME.png (and in docs/screenshots/ with UPDATE_SCREENSHOTS=1). */
  const shoot = async (name: string, on: Page = page) => {
    const file = path.join(shots, `${name}.png`);
    await on.screenshot({ path: file, fullPage: false });
    if (process.env["UPDATE_SCREENSHOTS"] === "1") {
      const docs = path.join(ROOT, "docs", "screenshots");
      mkdirSync(docs, { recursive: true });
      copyFileSync(file, path.join(docs, `${name}.png`));
    }
  };

  /** The number a tile shows now, on the page or in a part of it. */
  const tile = async (label: string, within: Pick<Page, "locator"> = page) =>
    Number(
      ((await within.locator(`[data-tile="${label}"] .tile-value`).textContent()) ?? "").replace(
        /[^\d]/g,
        "",
      ) || NaN,
    );

  it("is served by the broker at /ui/, its files bundled, outside the API's document", async () => {
    const root = await fetch(`${base}/`, { redirect: "manual" });
    expect(root.status).toBe(302);
    expect(root.headers.get("location")).toBe("/ui/");
    const html = await fetch(`${base}/ui/`);
    expect(html.status).toBe(200);
    expect(html.headers.get("content-type")).toMatch(/text\/html/);
    expect(html.headers.get("content-security-policy")).toMatch(/script-src 'self'/);
    const text = await html.text();
    expect(text).toContain('src="app.js"');
    expect(text).not.toMatch(/https?:\/\//); // nothing from elsewhere: works offline
    const js = await fetch(`${base}/ui/app.js`);
    expect(js.headers.get("content-type")).toMatch(/javascript/);
    const etag = js.headers.get("etag")!;
    expect((await js.text()).length).toBeGreaterThan(20_000);
    expect((await fetch(`${base}/ui/app.js`, { headers: { "if-none-match": etag } })).status).toBe(304);
    expect((await fetch(`${base}/ui/app.css`)).status).toBe(200);
    const doc = (await (await fetch(`${base}/v1/openapi.json`)).json()) as OpenApiDoc;
    expect(doc.paths["/v1/tasks/stats"]?.["get"]?.operationId).toBe("taskStats");
    expect(Object.keys(doc.paths).filter((p) => !p.startsWith("/v1/"))).toEqual([]);
    // The stats route wants a token like every API route.
    expect((await fetch(`${base}/v1/tasks/stats`)).status).toBe(401);
  });

  it("signs in with a token kept in the tab's sessionStorage only, and shows the endpoint online", async () => {
    await page.goto(`${base}/`);
    expect(page.url()).toBe(`${base}/ui/`);
    // A wrong token is refused, and the form says so.
    await page.fill('input[name="token"]', "not-a-token");
    await page.click('button[type="submit"]');
    await page.locator('[role="alert"]', { hasText: "refused" }).waitFor({ timeout: 10_000 });
    await page.fill('input[name="token"]', token);
    await page.click('button[type="submit"]');
    const card = page.locator('[data-endpoint="dash-ep"]');
    await card.locator('[data-testid="connection"]', { hasText: "online" }).waitFor({ timeout: 15_000 });
    await card.getByText(/last heartbeat/).waitFor();
    expect(await page.locator('[data-testid="user"]').textContent()).toBe("alice");
    // The one block of the local provider, with its workers.
    await card.locator("table.grid tbody tr").first().waitFor();
    await until(
      async () => (await tile("workers", card)) === 2 && (await tile("workers idle", card)) > 0,
      15_000,
      "2 workers, idle, on the page",
    );
    await card.getByText("Unfinished tasks on it").waitFor();
    // Bob's, shared: never connected, his, and its tasks are not Alice's to see.
    const bobs = page.locator('[data-endpoint="bob-ep"]');
    await bobs.locator('[data-testid="connection"]', { hasText: "never-connected" }).waitFor();
    await bobs.getByText("owned by bob").waitFor();
    expect(await bobs.getByText("Unfinished tasks on it").count()).toBe(0);
    // Where the token is: the tab's sessionStorage, nowhere else.
    // (In the page's own JavaScript: this file is type-checked without the DOM's names.)
    const kept = await page.evaluate<{ session: string | null; local: number; cookie: string; url: string }>(
      `({ session: sessionStorage.getItem("fabric.token"), local: localStorage.length, cookie: document.cookie, url: location.href })`,
    );
    expect(kept).toEqual({ session: token, local: 0, cookie: "", url: `${base}/ui/` });
    await shoot("endpoints");
  });

  it("counts a batch from the SDK as it runs, live", async () => {
    await page.click('nav[aria-label="views"] >> text=Tasks');
    await page.locator('[data-testid="stats-total"]').waitFor();
    expect(await tile("success")).toBe(0);
    expect(await tile("failed")).toBe(0);
    const batch = await alice.submitBatch([
      ...Array.from({ length: 40 }, (_, i) => ({ functionId: squareFn, endpointId, args: [i] })),
      ...Array.from({ length: 3 }, (_, i) => ({ functionId: explodeFn, endpointId, args: [i] })),
    ]);
    // The counts move on the page while the batch runs: first some, then all.
    const seen = new Set<number>();
    await until(
      async () => {
        seen.add(await tile("success"));
        return (await tile("success")) === 40 && (await tile("failed")) === 3;
      },
      30_000,
      "the page to count 40 successes and 3 failures",
      200,
    );
    expect(seen.has(0)).toBe(true);
    // The table's newest page shows the batch, each task finished.
    await until(
      async () => (await page.locator(`tbody tr[data-state="success"]`).count()) === 40,
      10_000,
      "40 finished rows",
    );
    expect(await page.locator("tbody tr[data-task]").count()).toBe(43);
    // The same numbers from the route the page reads, and the chart drawn from its series.
    const stats = (await (
      await fetch(`${base}/v1/tasks/stats?finishedAfterMs=${Date.now() - 600_000}`, {
        headers: { authorization: `Bearer ${token}` },
      })
    ).json()) as StatsAnswer;
    expect(stats).toMatchObject({
      total: 43,
      complete: true,
      counts: { success: 40, failed: 3, running: 0 },
    });
    expect(stats.series.finished.reduce((a, b) => a + b, 0)).toBe(43);
    await page.locator('[data-testid="throughput-chart"] canvas').waitFor();
    expect(batch.taskIds).toHaveLength(43);
    await shoot("tasks");
  });

  it("opens a failed task and shows its remote traceback and history", async () => {
    await page.click('[data-tile="failed"]');
    await until(
      async () =>
        (await page.locator("tbody tr[data-task]").count()) === 3 &&
        (await page.locator('tbody tr[data-state="failed"]').count()) === 3,
      10_000,
      "the 3 failed tasks alone in the table",
    );
    expect(page.url()).toContain("state=failed");
    await page.locator('tbody tr[data-state="failed"] a').first().click();
    const traceback = page.locator('pre[aria-label="traceback"]');
    await traceback.waitFor({ timeout: 10_000 });
    const text = (await traceback.textContent()) ?? "";
    expect(text).toMatch(/RangeError: bad input \d/);
    expect(text).toContain("explode");
    const error = (await page.locator('[aria-label="error"]').textContent()) ?? "";
    expect(error).toContain("function_error");
    const history = page.locator('[aria-label="history"] li');
    const steps = await history.allTextContents();
    expect(steps[0]).toMatch(/^received/);
    expect(steps.at(-1)).toMatch(/^failed/);
    expect(steps.join("\n")).toMatch(/broker\//);
    expect(steps.join("\n")).toMatch(/manager\//);
    await shoot("task-failed");
    // Submitted again, with arguments typed in (the API does not give back the task's own).
    const before = page.url();
    await page.click("text=Submit again…");
    await page.fill('textarea[name="args"]', "[7]");
    await page.click('form.again button[type="submit"]');
    await until(async () => page.url() !== before, 10_000, "the new task's page");
    await page
      .locator('pre[aria-label="traceback"]', { hasText: "bad input 7" })
      .waitFor({ timeout: 15_000 });
    const newId = /#\/tasks\/(.+)$/.exec(page.url())?.[1];
    expect((await alice.getTask(newId!)).functionId).toBe(explodeFn);
  });

  it("cancels a running task from its page", async () => {
    const id = await alice.run(sleepFn, endpointId, []);
    await until(async () => (await alice.getTask(id)).state === "running", 20_000, "the task to run");
    await page.goto(`${base}/ui/#/tasks/${id}`);
    await page.locator("h1 .badge", { hasText: "running" }).waitFor({ timeout: 10_000 });
    page.once("dialog", (d) => void d.accept());
    await page.click("text=Cancel task");
    await page.locator("h1 .badge", { hasText: "cancelled" }).waitFor({ timeout: 10_000 });
    const task = await alice.getTask(id);
    expect(task.state).toBe("cancelled");
    expect(task.history.at(-1)?.actor).toMatch(/^user\/alice/);
    await page.locator('[aria-label="history"] li.state-cancelled', { hasText: "user/alice" }).waitFor();
    expect(await page.locator("text=Cancel task").count()).toBe(0);
    await shoot("task-cancelled");
    // While it ran, the page watched it over the stream, the token in the header.
    expect(
      requests.filter((r) => r.method === "POST" && r.url === `${base}/v1/tasks/watch`).map((r) => r.auth),
    ).toContain(`Bearer ${token}`);
  });

  it("lists the functions with how often each ran and failed", async () => {
    await page.click('nav[aria-label="views"] >> text=Functions');
    const row = (name: string) => page.locator(`tr[data-function="${name}"]`);
    await until(
      async () => (await row("square").locator('[data-col="runs"]').textContent()) === "40",
      15_000,
      "40 runs of square",
    );
    expect(await row("square").locator('[data-col="failed"]').textContent()).toBe("0");
    expect(await row("explode").locator('[data-col="runs"]').textContent()).toBe("4");
    expect(await row("explode").locator('[data-col="failed"]').textContent()).toBe("4");
    expect(await row("sleep-a-minute").locator('[data-col="cancelled"]').textContent()).toBe("1");
    expect(await row("sleep-a-minute").locator("td").nth(2).textContent()).toBe("shell");
    expect(await row("square").locator("td").nth(4).textContent()).toBe("private");
    await shoot("functions");
  });

  it("never put the token in a URL, and sent it with every API call", () => {
    expect(requests.length).toBeGreaterThan(20);
    expect(requests.filter((r) => r.url.includes(token))).toEqual([]);
    const api = requests.filter((r) => new URL(r.url).pathname.startsWith("/v1/"));
    // The sign-in form's one try of a wrong token aside.
    expect(api.filter((r) => r.auth !== `Bearer ${token}`).map((r) => r.auth)).toEqual([
      "Bearer not-a-token",
    ]);
    // Nothing from elsewhere: the page works offline.
    expect(requests.filter((r) => !r.url.startsWith(base))).toEqual([]);
  });

  it("stays quick with 100,000 tasks retained: counted on the broker, listed a page at a time", async () => {
    // Carol's index filled directly in the broker's bucket and layout (running 100,000 tasks
    // would measure the fabric, not the page): the last 50 minutes, 1% failed.
    const nc = await connect({ servers: stack.nats.url });
    const start = Date.now() - 50 * 60_000;
    try {
      const kv = await new Kvm(jetstream(nc)).open(Bus.taskIndexBucket);
      const index = new TaskIndex(
        {
          read: async (key) => {
            const e = await kv.get(key);
            return e && e.operation === "PUT" ? { bytes: e.value, revision: e.revision } : null;
          },
          write: (key, bytes, revision) => kv.update(key, bytes, revision),
          create: (key, bytes) => kv.create(key, bytes),
          put: (key, bytes) => kv.put(key, bytes),
        },
        pino({ level: "silent" }),
        86_400_000,
      );
      const [fn, ep, group] = [randomUUID(), randomUUID(), randomUUID()];
      for (let from = 0; from < 100_000; from += 20_000) {
        const entries: TaskIndexEntry[] = [];
        for (let i = from; i < from + 20_000; i++) {
          const createdAtMs = Math.floor(start + i * 30);
          entries.push({
            id: randomUUID(),
            functionId: fn,
            endpointId: ep,
            groupId: group,
            createdAtMs,
            state: i % 100 === 7 ? TaskState.TASK_STATE_FAILED : TaskState.TASK_STATE_SUCCESS,
            completedAtMs: createdAtMs + 5,
          });
        }
        await index.append("carol", entries);
      }
    } finally {
      await nc.close();
    }
    const carol = await browser!.newPage({ viewport: { width: 1180, height: 820 } });
    try {
      await carol.goto(`${base}/ui/#/tasks`);
      await carol.fill('input[name="token"]', await stack.broker.token("carol"));
      const t0 = Date.now();
      await carol.click('button[type="submit"]');
      await carol
        .locator('[data-testid="stats-total"]', { hasText: "100,000 tasks" })
        .waitFor({ timeout: 15_000 });
      await carol.locator('[data-tile="failed"] .tile-value', { hasText: "1,000" }).waitFor();
      await until(
        async () => (await carol.locator("tbody tr[data-task]").count()) === 50,
        10_000,
        "a page of 50",
      );
      const firstView = Date.now() - t0;
      await carol.locator('[data-testid="throughput-chart"] canvas').waitFor();
      await shoot("tasks-100k", carol);
      // Paging goes back in time, 50 at a time, without loading the rest.
      const newest = await carol.locator("tbody tr[data-task]").first().getAttribute("data-task");
      await carol.click("text=older →");
      await until(
        async () => (await carol.locator("tbody tr[data-task]").first().getAttribute("data-task")) !== newest,
        10_000,
        "the next page",
      );
      expect(await carol.locator("tbody tr[data-task]").count()).toBe(50);
      await carol.locator("text=page 2").waitFor();
      // The count the page polls every few seconds, timed from here.
      const times: number[] = [];
      for (let i = 0; i < 5; i++) {
        const s = performance.now();
        const res = await fetch(
          `${base}/v1/tasks/stats?createdAfterMs=${Date.now() - 3_600_000}&finishedAfterMs=${Date.now() - 600_000}`,
          { headers: { authorization: `Bearer ${await stack.broker.token("carol")}` } },
        );
        const stats = (await res.json()) as StatsAnswer;
        times.push(performance.now() - s);
        expect(stats).toMatchObject({ total: 100_000, complete: true, counts: { failed: 1000 } });
      }
      times.sort((a, b) => a - b);
      console.log(
        `100,000 tasks: first view in ${firstView} ms; stats p50 ${Math.round(times[2]!)} ms, max ${Math.round(times[4]!)} ms`,
      );
      expect(firstView).toBeLessThan(10_000);
      expect(times[2]).toBeLessThan(1000);
    } finally {
      await carol.close();
    }
  });
});
