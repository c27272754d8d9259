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

/**
 * The TypeScript blocks of a Markdown text. A fence's info string is its language and, for
 * TypeScript, at most one word more: `run` (the block needs no fabric and is also executed) or
 * `nocheck` (skipped). Any other word is an error, so a typo cannot silently skip a block.
 */
export function tsBlocksOf(markdown: string, file: string): DocBlock[] {
  const lines = markdown.split("\n");
  const blocks: DocBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = FENCE.exec(lines[i]!);
    if (!open) continue;
    const [, indent = "", fence = "", lang = "", rest = ""] = open;
    // The closing fence: the same character, at least as long, nothing after it.
    const close = new RegExp(`^ {0,${indent.length + 3}}${fence[0]}{${fence.length},}\\s*$`);
    let end = i + 1;
    while (end < lines.length && !close.test(lines[end]!)) end++;
    if (TS_LANGS.has(lang.toLowerCase())) {
      const word = rest.trim();
      if (word !== "" && word !== "run" && word !== "nocheck") {
        throw new Error(`${file}:${i + 1}: unknown word "${word}" after \`\`\`${lang} (run or nocheck)`);
      }
      const code = lines
        .slice(i + 1, end)
        .map((l) => (l.startsWith(indent) ? l.slice(indent.length) : l.trimStart()))
        .join("\n");
      blocks.push({ file, line: i + 2, mode: word || "check", code });
    }
    i = end;
  }
  return blocks;
}

/** The TypeScript blocks of Markdown files on disk, in order. */
export function tsBlocksOfFiles(files: readonly string[], displayName = (f: string) => f): DocBlock[] {
  return files.flatMap((f) => tsBlocksOf(readFileSync(f, "utf8"), displayName(f)));
}
