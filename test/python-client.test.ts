/**
 * The Python client (clients/python) against a real broker, NATS and endpoint: the package is
 * installed with Debian's pip into a temporary directory and Debian's /usr/bin/python3 runs its
 * unittest suites (clients/python/tests), one class per test here; then the Python blocks of its
 * docs run as scripts, a function the Python client registered is read and run through the
 * TypeScript SDK (one service layer), the client speaks HTTPS with a client certificate to a TLS
 * broker, and an Executor's futures complete across a broker restart.
 */
import { execFile, spawn, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { LocalFabric, ROOT, TestCa, freePort } from "../devkit/index.js";

/** Debian's interpreter (the one the endpoint runs too); a pyenv `python3` on PATH is not used. */
const PYTHON = process.env["FABRIC_TEST_PYTHON"] ?? "/usr/bin/python3";
const PACKAGE = path.join(ROOT, "clients", "python");
/** Debian's pip (scripts/test.sh installs python3-pip); without it the tests import the source tree. */
const HAS_PIP = spawnSync(PYTHON, ["-m", "pip", "--version"], { stdio: "ignore" }).status === 0;

interface Ran {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `PYTHON args` and answers its exit code and output (never rejects on a non-zero exit). */
function python(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  cwd = PACKAGE,
  timeoutMs = 60_000,
): Promise<Ran> {
  return new Promise((resolve, reject) => {
    execFile(
      PYTHON,
      [...args],
      { cwd, env, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024, killSignal: "SIGKILL" },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== "number") {
          reject(new Error(`${PYTHON} ${args.join(" ")}: ${err.message}\n${stderr}`));
          return;
        }
        resolve({ code: err ? Number(err.code) : 0, stdout, stderr });
      },
    );
  });
}

/**
 * Installs the package as a user would (`pip install`), from a copy of its folder so the build
 * leaves nothing in the tree; no index and no build isolation, since this machine reaches no
 * Python package index (Debian's setuptools builds it). Answers the directory it went to.
 */
async function installPackage(dir: string): Promise<string> {
  if (!HAS_PIP) {
    console.warn(
      `${PYTHON} -m pip is missing (apt-get install python3-pip): the Python client's tests import clients/python/src instead of an installed package`,
    );
    return path.join(PACKAGE, "src");
  }
  const source = path.join(dir, "source");
  const site = path.join(dir, "site");
  cpSync(PACKAGE, source, {
    recursive: true,
    filter: (p) => !/(__pycache__|\.egg-info|[/\\]build)$/.test(p),
  });
  const env = { ...process.env, PIP_ROOT_USER_ACTION: "ignore", PIP_DISABLE_PIP_VERSION_CHECK: "1" };
  const args = ["-m", "pip", "install", "--quiet", "--no-index", "--no-build-isolation", "--no-deps"];
  const res = await python([...args, "--target", site, source], env, dir, 120_000);
  if (res.code !== 0) throw new Error(`pip install failed (${res.code}):\n${res.stderr}`);
  return site;
}

/** The code of each ```python block of a Markdown text, in order (fences of other languages are skipped). */
function pythonBlocksOf(markdown: string): string[] {
  return [...markdown.matchAll(/^```python\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
}

describe("the Python client", () => {
  let fabric: LocalFabric | undefined;
  let dir: string;
  let site: string;
  let env: NodeJS.ProcessEnv;
  let endpointId: string;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "fabric-pyclient-"));
    const port = await freePort();
    // Both settle before going on: a fabric that started while the install failed is still stopped.
    const [started, installed] = await Promise.allSettled([
      LocalFabric.start({
        name: "pyclient",
        // A payload limit of 1 MiB lets a test make one chunk of a batch fail on its size.
        brokerConfig: { http: { listen: `127.0.0.1:${port}` }, limits: { maxPayloadBytes: 1024 * 1024 } },
      }),
      installPackage(dir),
    ]);
    if (started.status === "rejected") throw started.reason;
    const running = (fabric = started.value);
    if (installed.status === "rejected") throw installed.reason;
    site = installed.value;
    const endpoint = await running.startEndpoint("alice", "py-client", {
      workers: 4,
      extra: { python: { executable: PYTHON } },
    });
    endpointId = endpoint.endpointId();
    env = {
      ...process.env,
      FABRIC_HTTP_ADDRESS: `http://127.0.0.1:${port}`,
      FABRIC_TOKEN: await running.broker.token("alice"),
      FABRIC_ENDPOINT_ID: endpointId,
      // The tests import the installed package, not the source tree.
      FABRIC_CLIENT_PATH: site,
      PYTHONDONTWRITEBYTECODE: "1",
      PYTHONUNBUFFERED: "1",
    };
  }, 120_000);

  afterAll(async () => {
    await fabric?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  /** Runs one unittest target; passes only when every test in it ran and passed. */
  async function unittest(target: string): Promise<void> {
    const res = await python(["-m", "unittest", "-v", target], env);
    const log = `${target}:\n${res.stderr}${res.stdout}`;
    expect(res.code, log).toBe(0);
    expect(res.stderr, log).toMatch(/^OK$/m);
    expect(res.stderr, log).not.toMatch(/skipped/);
    expect(res.stderr, log).toMatch(/^Ran [1-9]\d* tests? in/m);
  }

  it.skipIf(!HAS_PIP)(
    "installs with pip as the distribution hpc-function-fabric, package fabric_client",
    async () => {
      expect(readdirSync(site)).toEqual(
        expect.arrayContaining(["fabric_client", "hpc_function_fabric-0.1.0.dist-info"]),
      );
      const res = await python(
        ["-c", "import fabric_client, sys; print(fabric_client.__file__); print(fabric_client.__version__)"],
        { ...env, PYTHONPATH: site },
        dir,
      );
      expect(res.code, res.stderr).toBe(0);
      const [file, version] = res.stdout.trim().split("\n");
      expect(file).toBe(path.join(site, "fabric_client", "__init__.py"));
      expect(version).toBe("0.1.0");
      expect(existsSync(path.join(PACKAGE, "build"))).toBe(false);
    },
  );

  it("passes its unit tests (no broker)", async () => {
    await unittest("tests.test_units");
  });

  it.each(["FunctionsTest", "RunTest", "BatchTest", "ExecutorTest", "ListTest", "ErrorsTest"])(
    "against the broker: %s",
    async (name) => {
      await unittest(`tests.test_live.${name}`);
    },
  );

  it.each([
    ["clients/python/README.md", 5],
    ["docs/python-client.md", 1],
  ])("runs the Python blocks of %s, in order, as one script", async (page, atLeast) => {
    const blocks = pythonBlocksOf(readFileSync(path.join(ROOT, page), "utf8"));
    expect(blocks.length).toBeGreaterThanOrEqual(atLeast);
    const file = path.join(dir, `${path.basename(page, ".md").replace(/\W/g, "_")}_session.py`);
    const prelude = 'import os, sys\nsys.path.insert(0, os.environ["FABRIC_CLIENT_PATH"])\n\n';
    writeFileSync(file, `${prelude}${blocks.join("\n\n")}\n`);
    const res = await python([file], env, dir);
    expect(res.code, res.stderr).toBe(0);
    if (page.endsWith("README.md")) {
      // The TaskFailed the page prints: message, then the remote traceback.
      expect(res.stdout).toMatch(
        /failed: FUNCTION_FAILED: .*\n\nRemote traceback:\nTraceback \(most recent call last\):/s,
      );
    }
  });

  it("registers a function the TypeScript SDK sees as Python and runs", async () => {
    const script = [
      "import os, sys",
      "sys.path.insert(0, os.environ['FABRIC_CLIENT_PATH'])",
      "from fabric_client import Client",
      "def triple(x):",
      "    return [x * 3, sys.version_info[0]]",
      "print(Client().register_function(triple))",
    ].join("\n");
    // From a file: inspect.getsource reads the function's source there (`python -c` has none).
    const file = path.join(dir, "register_triple.py");
    writeFileSync(file, `${script}\n`);
    const res = await python([file], env, dir);
    expect(res.code, res.stderr).toBe(0);
    const functionId = res.stdout.trim();
    const client = await fabric!.client("alice");
    expect(await client.getFunction(functionId)).toMatchObject({ kind: "python", entryPoint: "triple" });
    const taskId = await client.run(functionId, endpointId, [5]);
    // `sys` reached the remote source as an import of the module it names.
    expect(await client.waitForResult(taskId, { timeoutMs: 30_000 })).toEqual([15, 3]);
  });

  it("speaks HTTPS to a broker with a tls block, with the client certificate it requires", async () => {
    const ca = await TestCa.create(path.join(dir, "ca"), "python client test CA");
    const [server, user] = [await ca.issueServer("broker"), await ca.issueClient("alice")];
    const port = await freePort();
    const secure = await LocalFabric.start({
      name: "pyclient-tls",
      brokerConfig: {
        http: { listen: `127.0.0.1:${port}` },
        tls: { ...server, clientCaFile: ca.certFile, requireClientCert: true },
      },
    });
    // Stopped with the suite's fabric too, should this test time out before its own stop.
    fabric!.adopt(secure);
    try {
      const script = [
        "import os, sys",
        "sys.path.insert(0, os.environ['FABRIC_CLIENT_PATH'])",
        "from fabric_client import Client, FabricError",
        "from fabric_client.client import tls_context",
        "def inc(x):",
        "    return x + 1",
        "client = Client()  # https://, FABRIC_CA_FILE, FABRIC_CERT_FILE, FABRIC_KEY_FILE",
        "fid = client.register_function(inc)",
        "print('listed', fid in [f['id'] for f in client.list_functions()])",
        "address, token = os.environ['FABRIC_HTTP_ADDRESS'], os.environ['FABRIC_TOKEN']",
        "for name, other in [",
        "    ('no-client-cert', Client(address, token, ssl_context=tls_context(os.environ['FABRIC_CA_FILE']))),",
        "    ('untrusted', Client(address, token, ssl_context=tls_context())),",
        "    ('plaintext', Client(address.replace('https:', 'http:'), token, retry_window=0)),",
        "]:",
        "    try:",
        "        other.list_functions()",
        "        print(name, 'served')",
        "    except FabricError as err:",
        "        print(name, err.code, err.reason or '-', err.retryable)",
      ].join("\n");
      const file = path.join(dir, "over_https.py");
      writeFileSync(file, `${script}\n`);
      const res = await python([file], {
        ...env,
        FABRIC_HTTP_ADDRESS: `https://127.0.0.1:${port}`,
        FABRIC_TOKEN: await secure.broker.token("alice"),
        FABRIC_CA_FILE: ca.certFile,
        FABRIC_CERT_FILE: user.certFile,
        FABRIC_KEY_FILE: user.keyFile,
      });
      expect(res.code, res.stderr).toBe(0);
      expect(res.stdout.trim().split("\n")).toEqual([
        "listed True",
        // Refused certificates are not retried (30 s of retries would mend nothing).
        "no-client-cert UNAVAILABLE tls False",
        "untrusted UNAVAILABLE tls False",
        "plaintext UNAVAILABLE - True",
      ]);
    } finally {
      await secure.stop();
    }
  }, 60_000);

  // Last: it restarts the broker under the others' feet.
  it("an Executor's futures complete across a broker restart (its event stream reopens)", async () => {
    const script = [
      "import os, sys, time",
      "sys.path.insert(0, os.environ['FABRIC_CLIENT_PATH'])",
      "from fabric_client import Client, Executor",
      "def nap(i):",
      "    time.sleep(3)",
      "    return i",
      "with Executor(Client()) as ex:",
      "    futures = [ex.submit(nap, i) for i in range(4)]",
      "    while not all(f.task_id for f in futures):",
      "        time.sleep(0.02)",
      "    print('submitted', flush=True)",
      "    print('results', [f.result(timeout=60) for f in futures], flush=True)",
      "    print('streams', ex._reader.streams_opened, flush=True)",
    ].join("\n");
    const file = path.join(dir, "across_restart.py");
    writeFileSync(file, `${script}\n`);
    const child = spawn(PYTHON, [file], { cwd: dir, env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on("data", (b: Buffer) => {
          stdout += b.toString();
          if (stdout.includes("submitted")) resolve();
        });
        void exited.then(() => reject(new Error(`the script ended before submitting: ${stderr}`)));
      });
      // The tasks run for 3 s: the broker is killed (at once) while their futures wait on its
      // stream, and started again.
      await fabric!.broker.restart();
      expect(await exited, stderr).toBe(0);
      expect(stdout).toContain("results [0, 1, 2, 3]");
      // One stream before the restart, at least one after it.
      expect(Number(/streams (\d+)/.exec(stdout)?.[1])).toBeGreaterThanOrEqual(2);
    } finally {
      child.kill("SIGKILL");
    }
  }, 60_000);
});
