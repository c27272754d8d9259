// Type-checks the docs' example files in a worker thread, so that the compiler (several seconds,
// most of it parsing the sources and their libraries' types) runs beside the examples being run.
// Plain JavaScript: a worker thread gets no TypeScript transform. Used by test/docs-examples.test.ts.
import path from "node:path";
import { parentPort, workerData } from "node:worker_threads";

import ts from "typescript";

/**
 * @typedef {{ file: string, doc: string, line: number }} ExampleFile  a written block and where it came from
 * @typedef {{ root: string, prelude: string, examples: ExampleFile[], paths: Record<string, string[]> }} Job
 */

/** @param {Job} job @returns {string[]} one line per error, naming the doc and its line */
function typeCheck(job) {
  const tsconfig = ts.readConfigFile(path.join(job.root, "tsconfig.json"), (f) => ts.sys.readFile(f));
  if (tsconfig.error) throw new Error(ts.flattenDiagnosticMessageText(tsconfig.error.messageText, "\n"));
  const base = ts.parseJsonConfigFileContent(tsconfig.config, ts.sys, job.root).options;
  /** @type {ts.CompilerOptions} */
  const options = {
    ...base,
    noEmit: true,
    declaration: false,
    sourceMap: false,
    incremental: false,
    // Each block is a module even without an import, so blocks never share top-level names.
    moduleDetection: ts.ModuleDetectionKind.Force,
    paths: job.paths,
  };
  const byFile = new Map(job.examples.map((e) => [path.resolve(e.file), e]));
  const program = ts.createProgram([job.prelude, ...byFile.keys()], options);
  /** @type {ts.Diagnostic[]} */
  const diagnostics = [...program.getOptionsDiagnostics(), ...program.getGlobalDiagnostics()];
  // Only the examples (and the prelude) are checked in full: the sources they import are the
  // project typecheck's job, and checking them here would double this test's time.
  for (const sf of program.getSourceFiles()) {
    const name = path.resolve(sf.fileName);
    if (!byFile.has(name) && name !== path.resolve(job.prelude)) continue;
    diagnostics.push(...program.getSyntacticDiagnostics(sf), ...program.getSemanticDiagnostics(sf));
  }
  return diagnostics.map((d) => {
    const text = ts.flattenDiagnosticMessageText(d.messageText, "\n  ");
    if (!d.file || d.start === undefined) return `TS${d.code}: ${text}`;
    const { line, character } = d.file.getLineAndCharacterOfPosition(d.start);
    const example = byFile.get(path.resolve(d.file.fileName));
    const where = example
      ? `${example.doc}:${example.line + line}:${character + 1}`
      : `${path.relative(job.root, d.file.fileName)}:${line + 1}`;
    return `${where} TS${d.code}: ${text}`;
  });
}

try {
  parentPort?.postMessage({ errors: typeCheck(/** @type {Job} */ (workerData)) });
} catch (err) {
  parentPort?.postMessage({ failure: err instanceof Error ? (err.stack ?? err.message) : String(err) });
}
