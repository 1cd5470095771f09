#!/usr/bin/env bash
# The whole job without a cluster: start the KFP-faithful server and an ntfy-faithful server on
# loopback, sync examples/ (everything created, and the two schedules of examples/kfp-sync.yaml
# as recurring runs), sync again with nothing changed (everything unchanged, zero writes), then
# stop both. Run by `npm run demo` after scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
BUN=node_modules/.bin/bun
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

"$BUN" test/kfp-server.ts --port 0 2>"$work/kfp.log" &
"$BUN" test/ntfy-server.ts --port 0 >"$work/ntfy.url" 2>"$work/ntfy.log" &
for _ in $(seq 100); do
  grep -q "listening on" "$work/kfp.log" 2>/dev/null && [ -s "$work/ntfy.url" ] && break
  sleep 0.1
done
kfp=$(sed -n 's/.*listening on //p' "$work/kfp.log" | head -n1)
ntfy=$(head -n1 "$work/ntfy.url")
[ -n "$kfp" ] && [ -n "$ntfy" ] || { echo "test servers did not start" >&2; cat "$work"/*.log >&2; exit 1; }

export KFP_HOST=$kfp NTFY_URL=$ntfy/gitea-ci KFP_SYNC_PYTHON=$PWD/.venv/bin/python KFP_SYNC_KFP_VERSION=2.17.3
counts() { "$BUN" -e 'const s = JSON.parse(await Bun.stdin.text()); console.log(JSON.stringify(s.counts))' <"$1"; }
schedules() { "$BUN" -e 'const s = JSON.parse(await Bun.stdin.text()); for (const o of s.schedules ?? []) console.log(`  ${o.pipeline}/${o.name} (${o.where ?? "-"}): ${o.state}${o.recurringRunId ? ` ${o.recurringRunId}` : ""}`)' <"$1"; }

printf '\n== first sync of examples/ against %s ==\n' "$kfp" >&2
(cd examples && ../kfp-sync) >"$work/first.json"
printf 'counts: %s\n' "$(counts "$work/first.json")" >&2
printf 'schedules (examples/kfp-sync.yaml):\n%s\n' "$(schedules "$work/first.json")" >&2

printf '\n== second sync, nothing changed ==\n' >&2
(cd examples && ../kfp-sync) >"$work/second.json"
printf 'counts: %s\n' "$(counts "$work/second.json")" >&2
printf 'schedules:\n%s\n' "$(schedules "$work/second.json")" >&2

printf '\n== what the server saw (method, path, status) ==\n' >&2
grep -v "listening on" "$work/kfp.log" | sed -E 's/\?[^ ]*//; s/^/  /' >&2
printf '\n== what ntfy received ==\n' >&2
sed 's/^/  /' "$work/ntfy.log" >&2

"$BUN" -e '
const [a, b] = [await Bun.file(process.argv[1]).json(), await Bun.file(process.argv[2]).json()];
const all = (s, state) => s.schedules.length > 0 && s.schedules.every((o) => o.state === state);
const ok = a.counts.created === a.counts.found && b.counts.unchanged === b.counts.found && b.counts.uploaded === 0 && all(a, "created") && all(b, "unchanged");
console.error(ok ? `\nok: ${a.counts.created} pipelines and ${a.schedules.length} schedules created, then all unchanged with zero writes` : "\nunexpected counts");
process.exit(ok ? 0 : 1);' "$work/first.json" "$work/second.json"
