#!/bin/sh
# edgenode @VERSION@ for @PLATFORM@: one self-contained executable (a self-extracting archive).
# The first start unpacks the runtime appended below (Python, edgenode and its libraries) into a
# per-build cache directory; every later start runs it from there at once. Delete the cache
# directory to reclaim the space; it is unpacked again on the next start.
# Cache: $EDGENODE_RUNTIME_DIR, else $XDG_CACHE_HOME/edgenode, else ~/.cache/edgenode
# (~/Library/Caches/edgenode on macOS), else $TMPDIR/edgenode-<uid>.
set -eu
key=@KEY@
skip=@SKIP@
if [ -n "${EDGENODE_RUNTIME_DIR:-}" ]; then
  base=$EDGENODE_RUNTIME_DIR
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
  base=$XDG_CACHE_HOME/edgenode
elif [ -n "${HOME:-}" ] && [ "$(uname -s)" = Darwin ]; then
  base=$HOME/Library/Caches/edgenode
elif [ -n "${HOME:-}" ]; then
  base=$HOME/.cache/edgenode
else
  base=${TMPDIR:-/tmp}/edgenode-$(id -u)
fi
dir=$base/$key
if [ ! -x "$dir/edgenode" ]; then
  mkdir -p "$base"
  # Unpacks cut short (a kill -9 during a first start) are removed by a later first start.
  find "$base" -maxdepth 1 -name '.unpack.*' -mmin +10 -exec rm -rf {} + 2>/dev/null || true
  tmp=$(mktemp -d "$base/.unpack.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  tail -c +$((skip + 1)) "$0" | gzip -dc | tar -xf - -C "$tmp"
  # The rename makes the runtime appear whole or not at all. When a concurrent first start won
  # the race, mv puts this copy inside the winner's directory instead: remove it from there.
  if [ ! -e "$dir" ]; then mv "$tmp" "$dir"; fi
  rm -rf "$tmp" "$dir/${tmp##*/}"
  trap - EXIT INT TERM
fi
exec "$dir/edgenode" "$@"
