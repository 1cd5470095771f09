#!/usr/bin/env bash
# Set up everything kfp-sync needs on a fresh machine, from the npm registry, PyPI and the Go
# module proxy only. Idempotent: a second run only checks and skips.
#   node_modules/  Bun (pinned devDependency) and the runtime dependencies, from package-lock.json
#   .venv/         Python virtual environment with the pinned kfp SDK (requirements.txt)
#   .tools/bin/    actionlint, for the workflow tests (needs Go; skipped with a warning without it)
#   ~/.cache/kfp-sync-peers/  Gitea 1.27.3, 1.26.0 and Gitea's runner for the end-to-end test (needs Go)
#   ./kfp-sync     the compiled binary (bun build --compile)
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '• %s\n' "$*" >&2; }

if ! cmp -s package-lock.json node_modules/.kfp-sync-installed 2>/dev/null; then
  say "installing Bun and dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error >&2
  cp package-lock.json node_modules/.kfp-sync-installed
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ] || ! cmp -s requirements.txt .venv/requirements.txt; then
  say "creating .venv with the pinned kfp SDK"
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt >&2
  cp requirements.txt .venv/requirements.txt
fi

ACTIONLINT_VERSION=v1.7.12
if [ ! -x .tools/bin/actionlint ]; then
  if command -v go >/dev/null 2>&1; then
    say "installing actionlint $ACTIONLINT_VERSION (go install)"
    GOBIN="$PWD/.tools/bin" GOFLAGS=-mod=mod go install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION" >&2
  else
    say "warning: Go is not installed, so actionlint is not; the workflow lint test will fail"
  fi
fi

# The end-to-end test's peers (test/e2e-gitea.test.ts): Gitea 1.27.3 and 1.26.0 and Gitea's runner,
# built from the Go module proxy once per machine into ~/.cache/kfp-sync-peers (cold: about 6 minutes
# per Gitea on 2 cores; then nothing). start.sh builds and starts; stopped at once, it leaves the cache.
PEERS_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/kfp-sync-peers
if command -v go >/dev/null 2>&1; then
  if [ ! -x "$PEERS_CACHE/runner-1.0.8/gitea-runner" ]; then
    say "building Gitea's runner 1.0.8 (once per machine)"
    bash test/peers/runner/install.sh >/dev/null
  fi
  for gitea_version in 1.27.3 1.26.0; do
    if [ ! -x "$PEERS_CACHE/gitea-$gitea_version/gitea" ]; then
      say "building Gitea $gitea_version (once per machine, several minutes)"
      gitea_env=$(bash test/peers/gitea/start.sh --version "$gitea_version")
      bash test/peers/gitea/stop.sh "$(sed -n 's/^GITEA_DIR=//p' <<<"$gitea_env")"
    fi
  done
else
  say "warning: Go is not installed, so Gitea and its runner are not built; the end-to-end test will fail"
fi

if [ ! -x kfp-sync ] || [ kfp-sync.ts -nt kfp-sync ] || [ package.json -nt kfp-sync ]; then
  say "building ./kfp-sync"
  node_modules/.bin/bun build --compile --minify kfp-sync.ts --outfile kfp-sync >&2
fi
