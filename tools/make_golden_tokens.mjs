// Writes tests/golden/tokenizer_golden.json: GPT-2 encodings of tests/golden/tokenizer_text.txt and
// of a few short edge strings, computed by an independent implementation (npm js-tiktoken, `gpt2`
// encoding: its own rank table and JavaScript's Unicode regex engine), so the C++ tokenizer is
// checked against something it shares no code with.
//
// Usage (from the repository root, after tools/fetch_assets.sh, which installs js-tiktoken):
//   node tools/make_golden_tokens.mjs
// "<|endoftext|>" inside text is encoded as ordinary text, like our Tokenizer::encode.
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const npmDir = path.join(root, "assets", "npm");
let tiktoken, version;
try {
    const require = createRequire(path.join(npmDir, "package.json"));
    tiktoken = require("js-tiktoken");
    const manifest = path.join(npmDir, "node_modules", "js-tiktoken", "package.json");
    version = JSON.parse(fs.readFileSync(manifest, "utf8")).version;
} catch (e) {
    console.error(`make_golden_tokens.mjs: js-tiktoken not found under ${npmDir}; ` +
                  `run tools/fetch_assets.sh --force (${e.message})`);
    process.exit(1);
}
const enc = tiktoken.getEncoding("gpt2");
const encodeOrdinary = (text) => Array.from(enc.encode(text, [], []));

// Short strings that probe one rule each.
const edgeCases = {
    "empty": "",
    "single space": " ",
    "newlines": "\n\n\n",
    "spaces around a word": "  hello  ",
    "whitespace run before a word": "a     b",
    "trailing whitespace": "end   ",
    "tabs and CRLF": "\tx\t\ty\r\n\r\nz",
    "contractions": "it's don't we're they've I'm you'll he'd",
    "uppercase contractions": "IT'S DON'T WE'RE THEY'VE I'M YOU'LL HE'D",
    "apostrophe alone": "' '' 's",
    "long digit run": "12345678901234567890",
    "decimal and percent": "3.14159 and 99.9%",
    "endoftext as text": "a<|endoftext|>b",
    "accents": "café naïve façade",
    "combining accent": "e\u0301te\u0301",
    "CJK": "中文文本と日本語",
    "emoji ZWJ and flags": "👨‍👩‍👧 🇺🇸 🙂",
    "no-break and ideographic space": "a\u00a0b\u3000c",
    "unicode line separator": "x\u2028y",
    "no-break spaces before punctuation": "a\u00a0!\u00a0\u00a0.",
    "em spaces around a word": "\u2003\u2003word\u2003 x",
    "ideographic space before digits": "\u300012\u3000\u3000?",
    "long repeated letters": "a".repeat(200),
    "control characters": "a\u0001b\u007fc",
};

const textFile = path.join(root, "tests", "golden", "tokenizer_text.txt");
const text = fs.readFileSync(textFile, "utf8");
const golden = {
    generator: `tools/make_golden_tokens.mjs with js-tiktoken ${version}, encoding gpt2`,
    files: [{ file: "tokenizer_text.txt", bytes: Buffer.byteLength(text, "utf8"), tokens: encodeOrdinary(text) }],
    cases: Object.entries(edgeCases).map(([name, t]) => ({ name, text: t, tokens: encodeOrdinary(t) })),
};

// One case per line keeps diffs of the committed file readable.
const out = path.join(root, "tests", "golden", "tokenizer_golden.json");
const lines = [
    "{",
    `"generator": ${JSON.stringify(golden.generator)},`,
    `"files": [\n${golden.files.map((f) => JSON.stringify(f)).join(",\n")}\n],`,
    `"cases": [\n${golden.cases.map((c) => JSON.stringify(c)).join(",\n")}\n]`,
    "}",
];
fs.writeFileSync(out, lines.join("\n") + "\n");
console.log(`make_golden_tokens.mjs: ${golden.files[0].tokens.length} tokens for ${path.basename(textFile)}, ` +
            `${golden.cases.length} edge cases -> ${path.relative(root, out)}`);
