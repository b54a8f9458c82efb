// Reads docs/PROTOCOL.md: the hex examples (`<!-- wire-example: NAME -->`
// and `<!-- ws-example: NAME -->` blocks, bytes before `|` on each line) and
// markdown tables, the same way tests/wire_spec.rs does.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const path = fileURLToPath(new URL("../../../../docs/PROTOCOL.md", import.meta.url));

export function spec(): string {
  return readFileSync(path, "utf8");
}

export function examples(text: string, marker: "wire-example" | "ws-example"): Map<string, Uint8Array> {
  const found = new Map<string, Uint8Array>();
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const match = lines[i]!.match(new RegExp(`^<!-- ${marker}: (.+) -->$`));
    if (!match) continue;
    const name = match[1]!;
    if (lines[++i] !== "```text") throw new Error(`example ${name}: no fence`);
    const bytes: number[] = [];
    for (i++; lines[i] !== "```"; i++) {
      const row = lines[i]!;
      const bar = row.indexOf("|");
      if (bar < 0) throw new Error(`example ${name}: no | in ${row}`);
      for (const pair of row.slice(0, bar).trim().split(/\s+/).filter(Boolean)) {
        if (!/^[0-9a-f]{2}$/.test(pair)) throw new Error(`example ${name}: bad hex ${pair}`);
        bytes.push(parseInt(pair, 16));
      }
    }
    if (found.has(name)) throw new Error(`example ${name} twice`);
    found.set(name, Uint8Array.from(bytes));
  }
  return found;
}

/** Rows of markdown tables whose first cell satisfies `first`. */
export function tableRows(text: string, first: (cell: string) => boolean): string[][] {
  return text
    .split("\n")
    .filter((line) => line.startsWith("|"))
    .map((line) => line.slice(1).split("|").map((cell) => cell.trim()))
    .filter((cells) => cells.length > 0 && first(cells[0]!));
}
