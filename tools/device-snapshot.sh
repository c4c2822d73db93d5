#!/usr/bin/env bash
# Make a clean copy of the tree for the `device` tool (which ships the whole working tree, so
# several people editing at once would ship each other's half-done files).
# Usage: tools/device-snapshot.sh NAME [FILE...]
#   creates .snap-NAME/ = HEAD (git archive) + the working-tree versions of FILE... + .deps/.peer
#   (git-ignored helpers: the .debs the GPU machine lacks and the PyTorch peer scripts).
#   Then carry ".snap-NAME" and run `cd .snap-NAME && ...` on the device.
# .snap*/ must be listed in .git/info/exclude so the device copy does not also carry it twice.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=${1:?usage: tools/device-snapshot.sh NAME [FILE...]}; shift
SNAP=$ROOT/.snap-$NAME
rm -rf "$SNAP" && mkdir -p "$SNAP"
git -C "$ROOT" archive HEAD | tar -x -C "$SNAP"
for f in "$@"; do
    mkdir -p "$SNAP/$(dirname "$f")"
    cp -a "$ROOT/$f" "$SNAP/$f"
done
for d in .deps .peer; do [[ -d $ROOT/$d ]] && cp -r "$ROOT/$d" "$SNAP/"; done
du -sh "$SNAP" | cut -f1 | sed "s#^#snapshot .snap-$NAME: #"
