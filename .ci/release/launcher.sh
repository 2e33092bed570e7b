#!/bin/sh
# edgenode @VERSION@ for @PLATFORM@: one self-contained executable (a self-extracting archive).
# The first start unpacks the runtime appended below (Python, edgenode and its libraries) into a
# per-build cache directory; every later start runs it from there at once. A build not started for
# 30 days, with no process running from it, is removed by the next start of any build; delete the
# cache directory to reclaim the space at once (it is unpacked again on the next start).
# Cache: $EDGENODE_RUNTIME_DIR, else $XDG_CACHE_HOME/edgenode, else ~/.cache/edgenode
# (~/Library/Caches/edgenode on macOS), else $TMPDIR/edgenode-<uid>.
set -eu
# env -i leaves no PATH; not exported, so edgenode's own environment stays as it was given.
PATH=${PATH:-/usr/bin:/bin}
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
# An unpack cut short by kill -9 is removed by the next start (its shell's pid is in its name).
for stale in "$base"/.unpack.*; do
  pid=${stale#"$base"/.unpack.}
  pid=${pid%%.*}
  if [ -d "$stale" ] && ! kill -0 "$pid" 2>/dev/null; then rm -rf "$stale" 2>/dev/null || true; fi
done
if [ ! -x "$dir/edgenode" ]; then
  mkdir -p "$base"
  tmp=$(mktemp -d "$base/.unpack.$$.XXXXXX")
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
# The stamp says when this build last started (the directory's own mtime would not: a file
# written inside it is not a change of the directory).
touch "$dir/.used" 2>/dev/null || :
for old in "$base"/*; do
  # Only runtimes this launcher unpacked; anything else in the directory is not ours to remove.
  if [ "$old" = "$dir" ] || [ ! -x "$old/edgenode" ]; then continue; fi
  stamp=$old/.used
  [ -e "$stamp" ] || stamp=$old
  if [ -z "$(find "$stamp" -prune -mtime +30 2>/dev/null)" ]; then continue; fi
  # A node of that build may run for months and re-executes its binary for child processes: keep
  # the build while any process runs from it, and when ps cannot say, keep it too.
  running=$(ps -axo command= 2>/dev/null) || continue
  case $running in *"$old/"*) continue ;; esac
  rm -rf "$old" 2>/dev/null || :
done
exec "$dir/edgenode" "$@"
