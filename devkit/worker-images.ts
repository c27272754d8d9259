/**
 * Builds the worker images offline, from this host's own runtimes: `FROM scratch` plus
 * /usr/bin/node, the libraries `ldd` lists, the compiled worker (dist/) and the npm packages it
 * imports. The shell image adds a static busybox as /bin/sh and its tools. The Python image is
 * the host's /usr/bin/python3, its standard library, the site packages that numpy, scipy and
 * scikit-image load (python-image.ts), their libraries and the runtime. No registry is needed.
 *
 * As a script: `node dist/devkit/worker-images.js [--engine docker|podman] [--socket PATH]
 * [--kinds js,shell,python] [--python-packages numpy,scipy,...] [--stage DIR]` (see
 * containers/build-offline.sh). `--stage DIR` only writes the worker files, for the online
 * Dockerfile (containers/Dockerfile).
 */
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  realpathSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import Docker from "dockerode";

import { ROOT } from "./processes.js";
import {
  DEFAULT_PYTHON_PACKAGES,
  PYTHON_RUNTIME_IN_IMAGE,
  hostPython,
  planPythonImage,
  walkImageFiles,
  type PythonImagePlan,
} from "./python-image.js";
import {
  DEFAULT_PYTHON_WORKER_IMAGE,
  DEFAULT_SHELL_WORKER_IMAGE,
  DEFAULT_WORKER_IMAGE,
  DEFAULT_ENGINE_SOCKET,
} from "../endpoint/internal.js";

/** Label holding the hash of an image's content: an image with the same hash is not rebuilt. */
export const IMAGE_HASH_LABEL = "org.fabric.image-hash";
/** Where the worker lives in the images. */
export const WORKER_DIR_IN_IMAGE = "/fabric/worker";

const IMPORT_RE =
  /(?:^|[\s;])(?:import|export)\s[^;]*?from\s*["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)/g;

function packageNameOf(spec: string): string {
  const parts = spec.split("/");
  return spec.startsWith("@") ? `${parts[0]}/${parts[1]}` : parts[0]!;
}

/**
 * Copies the compiled worker entry, every dist file it imports, and the closure of npm packages
 * they import, to `dest` (a `type: module` tree whose entry is `endpoint/worker/main.js`).
 */
export function stageWorker(dest: string, distDir = path.join(ROOT, "dist")): void {
  const entry = path.join(distDir, "endpoint/worker/main.js");
  if (!existsSync(entry))
    throw new Error(`${entry} is missing: build first (npx tsc -p tsconfig.build.json)`);
  const files = new Set<string>();
  const packages = new Set<string>();
  const todo = [entry];
  while (todo.length > 0) {
    const file = todo.pop()!;
    if (files.has(file)) continue;
    files.add(file);
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(IMPORT_RE)) {
      const spec = m[1] ?? m[2]!;
      if (spec.startsWith("node:")) continue;
      if (spec.startsWith(".")) todo.push(path.resolve(path.dirname(file), spec));
      else packages.add(packageNameOf(spec));
    }
  }
  mkdirSync(dest, { recursive: true });
  for (const f of files) {
    const to = path.join(dest, path.relative(distDir, f));
    mkdirSync(path.dirname(to), { recursive: true });
    copyFileSync(f, to);
  }
  writeFileSync(path.join(dest, "package.json"), JSON.stringify({ type: "module", private: true }, null, 2));
  // npm packages: each with its dependencies, resolved the way Node does from a flat node_modules.
  const copied = new Set<string>();
  const pkgTodo = [...packages].map((name) => ({ name, from: ROOT }));
  while (pkgTodo.length > 0) {
    const { name, from } = pkgTodo.pop()!;
    let dir = from;
    let found: string | undefined;
    for (;;) {
      const candidate = path.join(dir, "node_modules", name);
      if (existsSync(path.join(candidate, "package.json"))) {
        found = candidate;
        break;
      }
      if (dir === ROOT || dir === path.dirname(dir)) break;
      dir = path.dirname(dir);
    }
    if (!found) {
      throw new Error(`the worker needs the npm package ${name}, which is not installed (npm ci)`);
    }
    if (copied.has(found)) continue;
    copied.add(found);
    const to = path.join(dest, path.relative(ROOT, found));
    mkdirSync(path.dirname(to), { recursive: true });
    cpSync(found, to, { recursive: true, dereference: true });
    const pj = JSON.parse(readFileSync(path.join(found, "package.json"), "utf8")) as {
      dependencies?: Record<string, string>;
      optionalDependencies?: Record<string, string>;
    };
    for (const dep of Object.keys(pj.dependencies ?? {})) pkgTodo.push({ name: dep, from: found });
    for (const dep of Object.keys(pj.optionalDependencies ?? {})) {
      if (existsSync(path.join(ROOT, "node_modules", dep))) pkgTodo.push({ name: dep, from: found });
    }
  }
}

/** The shared libraries a binary needs, as `ldd` lists them (absolute paths). */
function sharedLibraries(binary: string): string[] {
  const out = execFileSync("ldd", [binary], { encoding: "utf8" });
  const libs: string[] = [];
  for (const line of out.split("\n")) {
    const m = /=>\s*(\/\S+)|^\s*(\/\S+)\s/.exec(line);
    const lib = m?.[1] ?? m?.[2];
    if (lib) libs.push(lib);
  }
  return libs;
}

function copyIntoRoot(rootfs: string, file: string): void {
  const to = path.join(rootfs, file);
  mkdirSync(path.dirname(to), { recursive: true });
  // Copy the real file under the path the loader asks for.
  copyFileSync(realpathSync(file), to);
  chmodSync(to, statSync(realpathSync(file)).mode & 0o777);
}

function hashTree(dir: string): string {
  const h = createHash("sha256");
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = path.join(d, name);
      const st = statSync(p, { throwIfNoEntry: false });
      h.update(path.relative(dir, p));
      if (st?.isDirectory()) walk(p);
      else if (st?.isFile()) h.update(readFileSync(p));
    }
  };
  walk(dir);
  return h.digest("hex").slice(0, 32);
}

/** Which image to build. */
export type WorkerImageKind = "js" | "shell" | "python";

/** The directories and account files every worker image has. */
function writeBaseDirs(rootfs: string): void {
  for (const d of ["tmp", "fabric/run", "proc", "dev", "sys", "etc"])
    mkdirSync(path.join(rootfs, d), { recursive: true });
  chmodSync(path.join(rootfs, "tmp"), 0o1777);
  writeFileSync(
    path.join(rootfs, "etc/passwd"),
    "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n",
  );
  writeFileSync(path.join(rootfs, "etc/group"), "root:x:0:\nnogroup:x:65534:\n");
}

/** The Dockerfile of the offline Python image: the runtime is its entry point, as nobody. */
const PYTHON_DOCKERFILE = [
  "FROM scratch",
  "COPY rootfs/ /",
  // The root file system is read-only in a worker container: no .pyc is written, output is not held.
  "ENV PATH=/usr/bin:/bin PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LANG=C.UTF-8 MPLBACKEND=Agg",
  "USER 65534:65534",
  "WORKDIR /tmp",
  `ENTRYPOINT ["/usr/bin/python3", "-s", "${PYTHON_RUNTIME_IN_IMAGE}"]`,
  "",
].join("\n");

/** The Python runtime as shipped beside the compiled worker (or in the source tree). */
function pythonRuntimeFile(): string {
  const built = path.join(ROOT, "dist/endpoint/worker/python/fabric_runtime.py");
  return existsSync(built) ? built : path.join(ROOT, "endpoint/worker/python/fabric_runtime.py");
}

/** Writes the Python image's build context from its plan (see python-image.ts). */
export function preparePythonContext(plan: PythonImagePlan, dir: string): void {
  const rootfs = path.join(dir, "rootfs");
  mkdirSync(rootfs, { recursive: true });
  copyIntoRoot(rootfs, plan.python);
  chmodSync(path.join(rootfs, plan.python), 0o755);
  for (const lib of plan.libraries) copyIntoRoot(rootfs, lib);
  plan.trees.forEach((tree, i) => {
    walkImageFiles(tree, i === 0, (file) => {
      const to = path.join(rootfs, file);
      mkdirSync(path.dirname(to), { recursive: true });
      copyFileSync(file, to);
    });
  });
  const runtime = path.join(rootfs, PYTHON_RUNTIME_IN_IMAGE);
  mkdirSync(path.dirname(runtime), { recursive: true });
  copyFileSync(pythonRuntimeFile(), runtime);
  writeBaseDirs(rootfs);
  writeFileSync(path.join(dir, "Dockerfile"), PYTHON_DOCKERFILE);
}

/** Writes a build context (rootfs + Dockerfile) for the js or shell image; returns its directory and hash. */
export function prepareOfflineContext(kind: "js" | "shell", dir: string): { dir: string; hash: string } {
  const rootfs = path.join(dir, "rootfs");
  mkdirSync(rootfs, { recursive: true });
  const node = realpathSync(process.execPath);
  copyIntoRoot(rootfs, "/usr/bin/node");
  copyFileSync(node, path.join(rootfs, "usr/bin/node"));
  for (const lib of sharedLibraries(node)) copyIntoRoot(rootfs, lib);
  stageWorker(path.join(rootfs, WORKER_DIR_IN_IMAGE.slice(1)));
  writeBaseDirs(rootfs);
  if (kind === "shell") {
    const busybox = "/bin/busybox";
    if (!existsSync(busybox)) {
      execFileSync("bash", [path.join(ROOT, "scripts/ensure-system.sh"), "busybox-static"], {
        stdio: "inherit",
      });
    }
    mkdirSync(path.join(rootfs, "bin"), { recursive: true });
    copyFileSync(busybox, path.join(rootfs, "bin/busybox"));
    chmodSync(path.join(rootfs, "bin/busybox"), 0o755);
    const applets = execFileSync(busybox, ["--list"], { encoding: "utf8" }).split("\n").filter(Boolean);
    for (const a of applets) {
      if (a === "busybox") continue;
      const link = path.join(rootfs, "bin", a);
      if (!existsSync(link)) symlinkSync("busybox", link);
    }
  }
  const dockerfile = [
    "FROM scratch",
    "COPY rootfs/ /",
    `ENV PATH=/usr/bin:/bin NODE_ENV=production`,
    "USER 65534:65534",
    "WORKDIR /tmp",
    `ENTRYPOINT ["/usr/bin/node", "${WORKER_DIR_IN_IMAGE}/endpoint/worker/main.js"]`,
    "",
  ].join("\n");
  writeFileSync(path.join(dir, "Dockerfile"), dockerfile);
  return { dir, hash: hashTree(dir) };
}

/** Options of {@link ensureWorkerImages}. */
export interface WorkerImageOptions {
  readonly docker: Docker;
  /** Images to ensure. @default js and shell (the Python image takes longer: ask for it) */
  readonly kinds?: readonly WorkerImageKind[];
  /** The Python image's interpreter and the imports it must serve. @default /usr/bin/python3; numpy, scipy, skimage */
  readonly python?: { readonly executable?: string; readonly packages?: readonly string[] };
  /** Tags. @default the config defaults (fabric-worker:VERSION, fabric-worker-shell:VERSION, fabric-worker-python:VERSION) */
  readonly tags?: Partial<Record<WorkerImageKind, string>>;
  /** Extra labels (tests remove what they built by label). */
  readonly labels?: Readonly<Record<string, string>>;
  /** Progress lines. */
  readonly onProgress?: (line: string) => void;
}

async function tarStream(dir: string): Promise<NodeJS.ReadableStream> {
  const tar = spawn("tar", ["-C", dir, "-cf", "-", "."], { stdio: ["ignore", "pipe", "inherit"] });
  return tar.stdout;
}

/**
 * Builds each worker image that is missing or out of date (its content hash differs), through
 * the engine's API (Docker, or Podman's Docker-compatible API). Returns the tags.
 */
export async function ensureWorkerImages(opts: WorkerImageOptions): Promise<Record<WorkerImageKind, string>> {
  const tags: Record<WorkerImageKind, string> = {
    js: opts.tags?.js ?? DEFAULT_WORKER_IMAGE,
    shell: opts.tags?.shell ?? DEFAULT_SHELL_WORKER_IMAGE,
    python: opts.tags?.python ?? DEFAULT_PYTHON_WORKER_IMAGE,
  };
  for (const kind of opts.kinds ?? (["js", "shell"] as const)) {
    const dir = mkdtempSync(path.join(tmpdir(), `fabric-image-${kind}-`));
    try {
      // The Python image is planned from file names, sizes and times first, and copied only
      // when its hash differs from the image's: most runs find it built.
      const plan =
        kind === "python"
          ? planPythonImage(
              opts.python?.executable ?? hostPython(),
              opts.python?.packages ?? DEFAULT_PYTHON_PACKAGES,
              pythonRuntimeFile(),
            )
          : undefined;
      const hash = plan ? plan.hash : prepareOfflineContext(kind as "js" | "shell", dir).hash;
      const existing = await opts.docker
        .getImage(tags[kind])
        .inspect()
        .catch(() => undefined);
      if (existing?.Config?.Labels?.[IMAGE_HASH_LABEL] === hash) continue;
      if (plan) preparePythonContext(plan, dir);
      opts.onProgress?.(
        `building ${tags[kind]} (offline, FROM scratch${plan ? `, Python ${plan.version}` : ""})`,
      );
      const stream = await opts.docker.buildImage(await tarStream(dir), {
        t: tags[kind],
        labels: { ...opts.labels, [IMAGE_HASH_LABEL]: hash },
        rm: true,
        forcerm: true,
      } as Docker.ImageBuildOptions);
      await new Promise<void>((resolve, reject) => {
        opts.docker.modem.followProgress(stream, (err: Error | null, out: Array<{ error?: string }>) => {
          const failed = err?.message ?? out.find((o) => o.error)?.error;
          if (failed) reject(new Error(`building ${tags[kind]} failed: ${failed}`));
          else resolve();
        });
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return tags;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      engine: { type: "string", default: "docker" },
      socket: { type: "string" },
      stage: { type: "string" },
      kinds: { type: "string", default: "js,shell,python" },
      "python-packages": { type: "string" },
    },
    strict: true,
  });
  if (values.stage) {
    rmSync(values.stage, { recursive: true, force: true });
    stageWorker(values.stage);
    console.log(`worker staged in ${values.stage}`);
    return;
  }
  const engine = values.engine === "podman" ? "podman" : "docker";
  const docker = new Docker({ socketPath: values.socket ?? DEFAULT_ENGINE_SOCKET[engine] });
  const kinds = values.kinds.split(",").map((k) => k.trim());
  const bad = kinds.filter((k) => !["js", "shell", "python"].includes(k));
  if (bad.length > 0)
    throw new Error(`--kinds: unknown image ${bad.join(", ")} (expected js, shell, python)`);
  const packages = values["python-packages"]
    ?.split(",")
    .map((p) => p.trim())
    .filter(Boolean);
  const tags = await ensureWorkerImages({
    docker,
    kinds: kinds as WorkerImageKind[],
    ...(packages ? { python: { packages } } : {}),
    onProgress: (l) => console.log(l),
  });
  console.log(`images ready: ${kinds.map((k) => tags[k as WorkerImageKind]).join(" ")}`);
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    console.error(`error: ${(err as Error).message}`);
    process.exitCode = 1;
  });
}
