/**
 * What goes into the offline Python worker image: this host's own python3, its standard library,
 * the site packages a list of imports loads (numpy, scipy, scikit-image and what they pull in),
 * the shared libraries all of it links, and the runtime (fabric_runtime.py). Found by asking the
 * interpreter itself: it imports the packages and says which files it loaded from where, so the
 * image holds what those imports need and nothing of the rest of the host.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, realpathSync, statSync } from "node:fs";
import path from "node:path";

/**
 * The imports the default Python worker image serves: the science packages of the tests and
 * demo, and what scikit-image imports only when a function calls into it (image files through
 * PIL and imageio, wavelets, graphs). Every package these load is copied whole, so all of
 * numpy, scipy and scikit-image is there, not only the modules named.
 */
export const DEFAULT_PYTHON_PACKAGES: readonly string[] = [
  "numpy",
  "scipy",
  "skimage",
  "skimage.data",
  "skimage.io",
  "skimage.transform",
  "PIL.Image",
  "imageio",
  "pywt",
  "networkx",
];

/** Where the runtime lives in the image (the `apptainer.pythonRuntimePath` default). */
export const PYTHON_RUNTIME_IN_IMAGE = "/fabric/worker/fabric_runtime.py";

/** Parts of the standard library a worker never needs (tests, GUIs, installers). */
const STDLIB_SKIPPED = new Set(["test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3"]);
/** Directories inside packages that only their own test suites use. */
const PACKAGE_DIRS_SKIPPED = new Set(["tests"]);

/** The host interpreter the image is built from: Debian's, which the project's scripts install. */
export function hostPython(): string {
  return "/usr/bin/python3";
}

/** What the image copies from the host. */
export interface PythonImagePlan {
  /** The interpreter as asked for (its path in the image) and its version. */
  readonly python: string;
  readonly version: string;
  /** Host paths copied to the same paths in the image: files, or directories copied whole (filtered). */
  readonly trees: readonly string[];
  /** Shared libraries (the paths the loader asks for). */
  readonly libraries: readonly string[];
  /** Hash of every file's name, size and mtime, and of the imports: same hash, same image. */
  readonly hash: string;
}

const PROBE = String.raw`
import importlib, json, os, sys, sysconfig
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as e:
        failed[name] = "%s: %s" % (type(e).__name__, e)
stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
site = [os.path.realpath(p) for p in sys.path if p and ("-packages" in p) and os.path.isdir(p)]
entries = set()
for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None)
    if not f:
        continue
    f = os.path.realpath(f)
    for d in site:
        if f.startswith(d + os.sep):
            top = os.path.relpath(f, d).split(os.sep)[0]
            if not top.startswith("_distutils_hack"):
                entries.add(os.path.join(d, top))
print(json.dumps({"version": "%d.%d.%d" % sys.version_info[:3], "stdlib": stdlib,
                  "entries": sorted(entries), "failed": failed}))
`;

/** Whether a path inside a copied tree goes into the image. */
export function keepInImage(tree: string, file: string, stdlib: boolean): boolean {
  const parts = path.relative(tree, file).split(path.sep);
  if (
    stdlib &&
    (STDLIB_SKIPPED.has(parts[0]!) || parts[0]!.startsWith("config-") || parts[0]!.endsWith("-packages"))
  )
    return false;
  return !parts.some((p) => PACKAGE_DIRS_SKIPPED.has(p));
}

/** Calls `fn` for every file (not directory) under `p` that goes into the image. */
export function walkImageFiles(tree: string, stdlib: boolean, fn: (file: string) => void): void {
  const walk = (p: string) => {
    const st = statSync(p, { throwIfNoEntry: false });
    if (!st) return;
    if (!st.isDirectory()) {
      fn(p);
      return;
    }
    for (const name of readdirSync(p).sort()) {
      const child = path.join(p, name);
      if (keepInImage(tree, child, stdlib)) walk(child);
    }
  };
  walk(tree);
}

/** The shared libraries of many binaries at once (ldd takes a list), as absolute paths. */
function sharedLibrariesOf(binaries: readonly string[]): string[] {
  const libs = new Set<string>();
  for (let i = 0; i < binaries.length; i += 200) {
    let out: string;
    try {
      out = execFileSync("ldd", binaries.slice(i, i + 200), {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"],
      });
    } catch (err) {
      // ldd exits 1 when one of the files is not dynamic; what it printed is still right.
      out = String((err as { stdout?: string }).stdout ?? "");
    }
    for (const line of out.split("\n")) {
      const m = /=>\s*(\/\S+)|^\s+(\/\S+)\s/.exec(line);
      const lib = m?.[1] ?? m?.[2];
      if (lib) libs.add(lib);
    }
  }
  return [...libs].sort();
}

/**
 * Asks `python` which files `packages` load, and plans the image. Throws, naming the package,
 * when the interpreter cannot import one of them (install it: scripts/ensure-system.sh).
 */
export function planPythonImage(
  python: string = hostPython(),
  packages: readonly string[] = DEFAULT_PYTHON_PACKAGES,
  runtimeFile?: string,
): PythonImagePlan {
  if (!existsSync(python)) throw new Error(`${python} is missing: the Python worker image is built from it`);
  const probe = JSON.parse(
    execFileSync(python, ["-s", "-c", PROBE, ...packages], { encoding: "utf8", cwd: "/" }),
  ) as { version: string; stdlib: string; entries: string[]; failed: Record<string, string> };
  const failed = Object.entries(probe.failed);
  if (failed.length > 0) {
    throw new Error(
      `${python} cannot import ${failed.map(([n, why]) => `${n} (${why})`).join(", ")}: install it on this host first, or leave it out (--python-packages)`,
    );
  }
  const trees = [probe.stdlib, ...probe.entries];
  const h = createHash("sha256");
  h.update(`${python}\0${probe.version}\0${packages.join(",")}\0`);
  const binaries = [realpathSync(python)];
  for (const tree of [...trees, ...(runtimeFile ? [runtimeFile] : [])]) {
    walkImageFiles(tree, tree === probe.stdlib, (file) => {
      const st = statSync(file);
      h.update(`${file}\0${st.size}\0${st.mtimeMs}\0`);
      if (/\.so(\.|$)/.test(file)) binaries.push(file);
    });
  }
  const libraries = sharedLibrariesOf(binaries);
  for (const lib of libraries) h.update(`${lib}\0`);
  return { python, version: probe.version, trees, libraries, hash: h.digest("hex").slice(0, 32) };
}
