#!/usr/bin/env bash
# Build the kfp-sync binaries we ship: dist/kfp-sync-linux-{x64,x64-musl,arm64}, plus dist/SHA256SUMS.
#   bash scripts/build-all.sh [--strict] [linux-x64|linux-x64-musl|linux-arm64 ...]
#
# A binary for another platform embeds that platform's Bun runtime. Left alone, bun downloads it
# itself from registry.npmjs.org: a hard-coded URL (it ignores .npmrc and bunfig registries,
# oven-sh/bun#25713) and no checksum. We fetch the same @oven/bun-* package with `npm pack`
# instead, so npm's registry, proxy and auth settings apply, check it against the integrity that
# package-lock.json pins, and hand it to bun with --compile-executable-path. Runtimes are kept in
# node_modules/.cache/kfp-sync-runtimes, so only the first build downloads (~50 MB each).
#
# A target that cannot be built is reported and skipped; with --strict that makes the exit code 1.
# Nothing built at all is always exit 1.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '• %s\n' "$*" >&2; }

BUN=node_modules/.bin/bun
CACHE=node_modules/.cache/kfp-sync-runtimes
ALL=(linux-x64 linux-x64-musl linux-arm64)
declare -A BUN_TARGET=([linux-x64]=bun-linux-x64 [linux-x64-musl]=bun-linux-x64-musl [linux-arm64]=bun-linux-arm64)
# Bun's npm packages name arm64 "aarch64". The musl binary links libstdc++ dynamically: on Alpine,
# apk add libstdc++.
declare -A RUNTIME_PACKAGE=([linux-x64]=@oven/bun-linux-x64 [linux-x64-musl]=@oven/bun-linux-x64-musl [linux-arm64]=@oven/bun-linux-aarch64)

strict=false
wanted=()
for arg in "$@"; do
  case $arg in
    --strict) strict=true ;;
    -h | --help) sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *)
      if [ -z "${BUN_TARGET[$arg]:-}" ]; then
        echo "build-all: unknown target or option '$arg' (targets: ${ALL[*]}; option: --strict)" >&2
        exit 2
      fi
      wanted+=("$arg")
      ;;
  esac
done
[ ${#wanted[@]} -gt 0 ] || wanted=("${ALL[@]}")

if [ ! -x "$BUN" ]; then
  echo "build-all: $BUN is missing: run npm ci (or bash scripts/setup.sh) first" >&2
  exit 2
fi
bun_version=$("$BUN" --version)
kfp_sync_version=$(node -p 'require("./package.json").version')

# Print the path of a verified runtime for an @oven package, or say why there is none and fail.
runtime_for() {
  local package=$1 pinned version integrity dir tmp tgz actual
  # The lockfile pins each @oven package (they are optional dependencies of bun) with its hash.
  pinned=$(node -e '
    const entry = require("./package-lock.json").packages["node_modules/" + process.argv[1]];
    if (entry) console.log(entry.version, entry.integrity);' "$package")
  read -r version integrity <<<"$pinned" || true
  if [ -z "${integrity:-}" ]; then
    say "$package is not in package-lock.json: cannot verify its runtime"
    return 1
  fi
  if [ "$version" != "$bun_version" ]; then
    say "$package is pinned at $version but $BUN is $bun_version: run npm ci"
    return 1
  fi
  dir=$CACHE/${package#@oven/}-$version
  if [ ! -x "$dir/bin/bun" ]; then
    tmp=$(mktemp -d)
    say "fetching $package@$version (npm pack)"
    if ! tgz=$(npm pack --loglevel=error --pack-destination "$tmp" "$package@$version" 2>"$tmp/npm.log"); then
      say "npm pack $package@$version failed:"
      sed 's/^/    /' "$tmp/npm.log" >&2
      rm -rf "$tmp"
      return 1
    fi
    tgz=$tmp/$(tail -n1 <<<"$tgz")
    actual=sha512-$(node -e 'process.stdout.write(require("crypto").createHash("sha512").update(require("fs").readFileSync(process.argv[1])).digest("base64"))' "$tgz")
    if [ "$actual" != "$integrity" ]; then
      say "$package@$version does not match package-lock.json (got $actual, want $integrity)"
      rm -rf "$tmp"
      return 1
    fi
    mkdir -p "$dir"
    tar -xzf "$tgz" -C "$dir" --strip-components=1 package/bin/bun
    rm -rf "$tmp"
  fi
  echo "$dir/bin/bun"
}

mkdir -p dist
built=()
failed=()
for name in "${wanted[@]}"; do
  out=dist/kfp-sync-$name
  target=${BUN_TARGET[$name]}
  rm -f "$out"
  if ! runtime=$(runtime_for "${RUNTIME_PACKAGE[$name]}"); then
    failed+=("$name")
    continue
  fi
  say "building $out ($target)"
  log=$(mktemp)
  if ! "$BUN" build --compile --minify --target="$target" --compile-executable-path="$runtime" kfp-sync.ts --outfile "$out" >"$log" 2>&1; then
    say "bun build for $target failed:"
    sed 's/^/    /' "$log" >&2
    failed+=("$name")
  else
    built+=("$name")
  fi
  rm -f "$log"
done

# What was made: size, what `file` says, and whether it runs here.
echo
for name in ${built[@]+"${built[@]}"}; do
  out=dist/kfp-sync-$name
  size=$(stat -c %s "$out")
  echo "$out  $((size / 1024 / 1024)) MiB ($size bytes)"
  if command -v file >/dev/null 2>&1; then
    echo "  file: $(file -b "$out")"
  else
    echo "  file: (the file command is not installed)"
  fi
  status=0
  ran=$("$out" --version 2>&1) || status=$?
  if [ "$status" -eq 0 ] && [ "$ran" = "$kfp_sync_version" ]; then
    echo "  runs here: --version prints $ran"
  elif [ "$status" -eq 126 ] || [ "$status" -eq 127 ]; then
    # Exec format error (other CPU) or a missing loader (musl on glibc): expected for a cross build.
    echo "  runs here: no, not this machine's CPU or libc"
  else
    echo "  runs here: BROKEN: --version exited $status with: $ran"
    failed+=("$name")
  fi
done

# Over every binary in dist/, so building one target leaves the others' sums in place.
if compgen -G "dist/kfp-sync-linux-*" >/dev/null; then
  (cd dist && sha256sum kfp-sync-linux-* >SHA256SUMS)
  echo "dist/SHA256SUMS written"
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo
  echo "NOT BUILT: ${failed[*]} (reasons above)" >&2
  if [ ${#built[@]} -eq 0 ] || $strict; then exit 1; fi
  echo "build-all: continuing without them; pass --strict to fail instead" >&2
fi
