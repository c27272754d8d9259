import { readFileSync } from "node:fs";

/** What the fence of a TypeScript block asks for: compile it (default), also run it, or neither. */
export type BlockMode = "check" | "run" | "nocheck";

/** One ```ts / ```typescript block of a Markdown file. */
export interface DocBlock {
  /** The Markdown file, as given. */
  readonly file: string;
  /** 1-based line of the block's first code line in that file. */
  readonly line: number;
  readonly mode: BlockMode;
  /** The code, with the fence's own indentation removed. */
  readonly code: string;
}

const FENCE = /^( *)(`{3,}|~{3,})\s*([\w-]*)\s*(.*)$/;
const TS_LANGS = new Set(["ts", "typescript"]);

/** One fenced block of a Markdown text, whatever its language. */
interface Fence {
  /** 0-based index of the opening fence's line. */
  readonly open: number;
  readonly lang: string;
  /** The info string after the language. */
  readonly rest: string;
  /** The code, with the fence's own indentation removed. */
  readonly code: string;
}

/** The fenced blocks of a Markdown text, in order. */
function fencesOf(lines: readonly string[]): Fence[] {
  const fences: Fence[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = FENCE.exec(lines[i]!);
    if (!open) continue;
    const [, indent = "", fence = "", lang = "", rest = ""] = open;
    // The closing fence: the same character, at least as long, nothing after it.
    const close = new RegExp(`^ {0,${indent.length + 3}}${fence[0]}{${fence.length},}\\s*$`);
    let end = i + 1;
    while (end < lines.length && !close.test(lines[end]!)) end++;
    const code = lines
      .slice(i + 1, end)
      .map((l) => (l.startsWith(indent) ? l.slice(indent.length) : l.trimStart()))
      .join("\n");
    fences.push({ open: i, lang: lang.toLowerCase(), rest, code });
    i = end;
  }
  return fences;
}

/**
 * The TypeScript blocks of a Markdown text. A fence's info string is its language and, for
 * TypeScript, at most one word more: `run` (the block needs no fabric and is also executed) or
 * `nocheck` (skipped). Any other word is an error, so a typo cannot silently skip a block.
 */
export function tsBlocksOf(markdown: string, file: string): DocBlock[] {
  const blocks: DocBlock[] = [];
  for (const f of fencesOf(markdown.split("\n"))) {
    if (!TS_LANGS.has(f.lang)) continue;
    const word = f.rest.trim();
    if (word !== "" && word !== "run" && word !== "nocheck") {
      throw new Error(`${file}:${f.open + 1}: unknown word "${word}" after \`\`\`${f.lang} (run or nocheck)`);
    }
    blocks.push({ file, line: f.open + 2, mode: word || "check", code: f.code });
  }
  return blocks;
}

/** One block a marker comment names (see {@link markedBlocksOf}). */
export interface MarkedBlock {
  readonly file: string;
  /** 1-based line of the block's first code line. */
  readonly line: number;
  readonly lang: string;
  readonly code: string;
}

/**
 * The fenced blocks of a Markdown text that an HTML comment `<!-- marker -->` right before their
 * fence names (blank lines between are allowed), in order: a doc marks the blocks a test runs.
 * A marker followed by anything but a fence is an error, so a marked block cannot silently drop out.
 */
export function markedBlocksOf(markdown: string, file: string, marker: string): MarkedBlock[] {
  const lines = markdown.split("\n");
  const comment = `<!-- ${marker} -->`;
  const fenceAt = new Map(fencesOf(lines).map((f) => [f.open, f]));
  const blocks: MarkedBlock[] = [];
  lines.forEach((l, i) => {
    if (l.trim() !== comment) return;
    let next = i + 1;
    while (next < lines.length && lines[next]!.trim() === "") next++;
    const f = fenceAt.get(next);
    if (!f) throw new Error(`${file}:${i + 1}: ${comment} is not followed by a fenced block`);
    blocks.push({ file, line: f.open + 2, lang: f.lang, code: f.code });
  });
  return blocks;
}

/** The TypeScript blocks of Markdown files on disk, in order. */
export function tsBlocksOfFiles(files: readonly string[], displayName = (f: string) => f): DocBlock[] {
  return files.flatMap((f) => tsBlocksOf(readFileSync(f, "utf8"), displayName(f)));
}
