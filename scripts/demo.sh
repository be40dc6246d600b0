#!/usr/bin/env bash
# The demo: a single-zone mesh on this machine, from the embedded defaults.
#   kuma-cp (sqlite store in .work/demo), two replicas of `backend`, one `frontend`,
#   each a small HTTP server behind its own kuma-dp + Envoy.
# Each proxy presents a dataplane token (`kumactl generate dataplane-token`, issued by the CP
# from localhost, which is admin), as dataplane authentication is on by default.
# It sends requests through the frontend's outbound (127.0.0.1:10000 -> backend), counts the
# answers per replica and fails unless both replicas answer, then lists the proxies with
# `kumactl inspect dataplanes` and the services with `kumactl inspect services`.
# Leaves everything running until Ctrl-C (DEMO_ONCE=1: stop after showing). Every process it
# started is stopped on exit (SIGTERM to its process group, SIGKILL after 10 s).
set -euo pipefail
cd "$(dirname "$0")/.."
ENVOY_BIN=$(./scripts/setup.sh | tail -1)
cargo build --release --bins
BIN=$PWD/target/release
WORK=$PWD/.work/demo
rm -rf "$WORK"; mkdir -p "$WORK"
PIDS=()
cleanup() {
  local p alive
  [ "${#PIDS[@]}" -gt 0 ] || return 0
  for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true; done
  # kuma-dp drains its Envoy (--drain-time) before exiting: give the groups time, then kill.
  for _ in $(seq 1 50); do
    alive=0
    for p in "${PIDS[@]}"; do kill -0 -- "-$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.2
  done
  for p in "${PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
fail() { echo "demo: FAILED: $*" >&2; exit 1; }
KUMACTL=("$BIN/kumactl" --api-url http://localhost:5681)

start() { # name, command...
  local name=$1; shift
  setsid "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
}

echo "== starting kuma-cp (REST API :5681, DP server :5678, diagnostics :5680)"
start kuma-cp env KUMA_GENERAL_WORK_DIR="$WORK/cp" KUMA_XDS_DATAPLANE_DEREGISTRATION_DELAY=2s "$BIN/kuma-cp" run
for _ in $(seq 1 100); do curl -sf localhost:5680/ready >/dev/null && break; sleep 0.2; done
curl -sf localhost:5680/ready >/dev/null || { tail -20 "$WORK/kuma-cp.log"; fail "kuma-cp did not become ready (log above)"; }

workload() { # name port: an HTTP server answering with its name
  start "app-$1" python3 -c '
import http.server, sys
name, port = sys.argv[1], int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (name + "\n").encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()' "$1" "$2"
}

cat > "$WORK/dataplane.yaml" <<'YAML'
type: Dataplane
mesh: default
name: {{ name }}
networking:
  address: 127.0.0.1
  admin:
    port: {{ admin }}
  inbound:
  - port: {{ port }}
    servicePort: {{ app }}
    tags:
      kuma.io/service: {{ service }}
      kuma.io/protocol: http
YAML
cat > "$WORK/frontend.yaml" <<'YAML'
type: Dataplane
mesh: default
name: frontend
networking:
  address: 127.0.0.1
  admin:
    port: 29903
  inbound:
  - port: 20003
    servicePort: 21003
    tags:
      kuma.io/service: frontend
      kuma.io/protocol: http
  outbound:
  - port: 10000
    tags:
      kuma.io/service: backend
YAML

dp() { # name file readiness-port vars...
  local name=$1 file=$2 ready=$3; shift 3
  local vars=()
  for v in "$@"; do vars+=(--dataplane-var "$v"); done
  # A dataplane token bound to this proxy's mesh and name.
  "${KUMACTL[@]}" generate dataplane-token --mesh default --name "$name" >"$WORK/token-$name" \
    || fail "kumactl generate dataplane-token --name $name"
  start "dp-$name" "$BIN/kuma-dp" run --cp-address https://localhost:5678 --ca-cert-file "$WORK/cp/kuma-cp.crt" \
    --dataplane-file "$file" "${vars[@]}" --dataplane-token-file "$WORK/token-$name" \
    --binary-path "$ENVOY_BIN" --readiness-port "$ready" --drain-time 2s --envoy-log-level warning
}

echo "== starting backend-1, backend-2 and frontend (each: app + kuma-dp + Envoy)"
workload backend-1 21001; workload backend-2 21002; workload frontend 21003
dp backend-1 "$WORK/dataplane.yaml" 29911 name=backend-1 service=backend port=20001 app=21001 admin=29901
dp backend-2 "$WORK/dataplane.yaml" 29912 name=backend-2 service=backend port=20002 app=21002 admin=29902
dp frontend "$WORK/frontend.yaml" 29913

live() { curl -s "localhost:$1/ready" 2>/dev/null | grep -q LIVE; }
ready=0
for _ in $(seq 1 150); do
  n=$(curl -s localhost:29903/clusters | grep -c '^backend::127.0.0.1:.*::cx_active' || true)
  if [ "$n" = 2 ] && live 29901 && live 29902 && live 29903; then ready=1; break; fi
  sleep 0.2
done
if [ "$ready" != 1 ]; then
  for f in dp-backend-1 dp-backend-2 dp-frontend; do echo "-- $f.log"; tail -5 "$WORK/$f.log"; done
  fail "the three proxies did not become ready within 30 s (log tails above)"
fi
REQUESTS=20
echo "== $REQUESTS requests through the frontend's outbound 127.0.0.1:10000 (service backend):"
declare -A answers=()
failed=0
for _ in $(seq 1 "$REQUESTS"); do
  if body=$(curl -sf --max-time 5 localhost:10000/) && [ -n "$body" ]; then
    answers[$body]=$(( ${answers[$body]:-0} + 1 ))
  else
    failed=$((failed + 1))
  fi
done
for r in backend-1 backend-2; do printf '%8d  %s\n' "${answers[$r]:-0}" "$r"; done
[ "$failed" = 0 ] || printf '%8d  failed\n' "$failed"
for r in "${!answers[@]}"; do
  case $r in backend-1|backend-2) ;; *) fail "unexpected answer: $r";; esac
done
[ "${answers[backend-1]:-0}" -gt 0 ] && [ "${answers[backend-2]:-0}" -gt 0 ] \
  || fail "both backend replicas must answer (backend-1: ${answers[backend-1]:-0}, backend-2: ${answers[backend-2]:-0}, failed: $failed; logs in $WORK)"
echo "== kumactl inspect dataplanes"
sleep 1
"${KUMACTL[@]}" inspect dataplanes
echo "== kumactl inspect services"
"${KUMACTL[@]}" inspect services
echo "== logs in $WORK"
if [ "${DEMO_ONCE:-}" = 1 ]; then echo "== demo OK: both replicas answered; stopping"; exit 0; fi
echo "== the mesh keeps running; Ctrl-C stops it"
wait
