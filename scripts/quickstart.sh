#!/usr/bin/env bash
# Quick start: installs what Switchboard needs, builds it, and runs a real runc
# container whose flagged syscalls the agent decides with its embedded default policy.
#
#   scripts/quickstart.sh               # the agent stops when the script ends
#   scripts/quickstart.sh --keep-agent  # the agent keeps running; the script says how to stop it
#
# SWITCHBOARD_BIN_DIR=DIR uses the binaries in DIR and skips installing and building
# (tests/cli.rs runs the quick start this way).
set -euo pipefail
cd "$(dirname "$0")/.."
keep_agent=false
case "${1:-}" in
  --keep-agent) keep_agent=true ;;
  "") ;;
  *) echo "usage: scripts/quickstart.sh [--keep-agent]" >&2; exit 2 ;;
esac
if [ "$(id -u)" != 0 ]; then
  echo "quickstart: run as root (it installs packages and starts a container)" >&2
  exit 1
fi
if [ -n "${SWITCHBOARD_BIN_DIR:-}" ]; then
  bin=$SWITCHBOARD_BIN_DIR
else
  bash scripts/install.sh
  cargo build --release --workspace
  bin=$PWD/target/release
fi

work=$(mktemp -d /tmp/switchboard-quickstart.XXXXXX)
agent_pid=""
cleanup() {
  runc delete -f quickstart-$$ >/dev/null 2>&1 || true
  if $keep_agent && [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
    return
  fi
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# A busybox container; the OCI hook adds the notify rules and listenerPath from the policy.
mkdir -p "$work/bundle/rootfs/bin" "$work/bundle/rootfs/tmp"
cp /bin/busybox "$work/bundle/rootfs/bin/busybox"
for tool in sh mkdir rmdir uname echo; do ln -s busybox "$work/bundle/rootfs/bin/$tool"; done
(cd "$work/bundle" && runc spec)
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config["process"]["terminal"] = False
config["process"]["args"] = ["sh", "-c", "mkdir /tmp/demo && rmdir /tmp/demo; uname -sr; echo container done"]
config["root"]["readonly"] = False
json.dump(config, open(path, "w"), indent=2)
PY
"$bin/switchboard-oci-hook" inject --bundle "$work/bundle" --socket "$work/agent.sock"

echo "== starting the agent (embedded default policy: log every flagged syscall, deny nothing)"
# setsid: with --keep-agent it outlives this script and the terminal's signals.
setsid "$bin/switchboard" agent --socket "$work/agent.sock" --metrics-addr 127.0.0.1:0 \
  --log-format text >"$work/events.log" 2>"$work/agent.log" </dev/null &
agent_pid=$!
for _ in $(seq 100); do [ -S "$work/agent.sock" ] && grep -q "metrics server listening" "$work/agent.log" && break; sleep 0.05; done
addr=$(grep -o 'addr=[0-9.:]*' "$work/agent.log" | head -1 | cut -d= -f2)

echo "== running a busybox container under runc"
(cd "$work/bundle" && runc run quickstart-$$ </dev/null)
sleep 0.1

echo "== events the agent logged"
cat "$work/events.log"
echo "== from the agent's /metrics (http://$addr/metrics)"
python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' \
  "http://$addr/metrics" | grep -E '^switchboard_(syscalls_total|listeners|decision_duration_seconds_count)'
echo "== the agent's status (switchboard status --metrics-addr $addr)"
"$bin/switchboard" status --metrics-addr "$addr"
if $keep_agent; then
  echo "== the agent keeps running (pid $agent_pid), with its socket $work/agent.sock"
  echo "   events: $work/events.log   log: $work/agent.log"
  echo "   switchboard status --metrics-addr $addr"
  echo "   stop it: kill $agent_pid && rm -rf $work"
else
  echo "== the agent stops now; 'scripts/quickstart.sh --keep-agent' leaves it running. See README.md"
fi
