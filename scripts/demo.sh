#!/usr/bin/env bash
# The demo: a single-zone mesh on this machine, from the embedded defaults.
#   kuma-cp (sqlite store in .work/demo), two replicas of `backend`, one `frontend`,
#   each a small HTTP server behind its own kuma-dp + Envoy.
# It sends requests through the frontend's outbound (127.0.0.1:10000 -> backend) and shows
# that both replicas answer, then lists the proxies with `kumactl inspect dataplanes`.
# Leaves everything running until Ctrl-C (DEMO_ONCE=1: stop after showing).
set -euo pipefail
cd "$(dirname "$0")/.."
ENVOY_BIN=$(./scripts/setup.sh | tail -1)
cargo build --release --bins
BIN=$PWD/target/release
WORK=$PWD/.work/demo
rm -rf "$WORK"; mkdir -p "$WORK"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

start() { # name, command...
  local name=$1; shift
  setsid "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
}

echo "== starting kuma-cp (REST API :5681, DP server :5678, diagnostics :5680)"
start kuma-cp env KUMA_GENERAL_WORK_DIR="$WORK/cp" KUMA_XDS_DATAPLANE_DEREGISTRATION_DELAY=2s "$BIN/kuma-cp" run
for _ in $(seq 1 100); do curl -sf localhost:5680/ready >/dev/null && break; sleep 0.2; done
curl -sf localhost:5680/ready >/dev/null || { echo "kuma-cp did not become ready:"; tail -20 "$WORK/kuma-cp.log"; exit 1; }

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
  start "dp-$name" "$BIN/kuma-dp" run --cp-address https://localhost:5678 --ca-cert-file "$WORK/cp/kuma-cp.crt" \
    --dataplane-file "$file" "${vars[@]}" --binary-path "$ENVOY_BIN" --readiness-port "$ready" --drain-time 2s --envoy-log-level warning
}

echo "== starting backend-1, backend-2 and frontend (each: app + kuma-dp + Envoy)"
workload backend-1 21001; workload backend-2 21002; workload frontend 21003
dp backend-1 "$WORK/dataplane.yaml" 29911 name=backend-1 service=backend port=20001 app=21001 admin=29901
dp backend-2 "$WORK/dataplane.yaml" 29912 name=backend-2 service=backend port=20002 app=21002 admin=29902
dp frontend "$WORK/frontend.yaml" 29913

for _ in $(seq 1 150); do
  n=$(curl -s localhost:29903/clusters | grep -c '^backend::127.0.0.1:.*::cx_active' || true)
  [ "$n" = 2 ] && break; sleep 0.2
done
echo "== 10 requests through the frontend's outbound 127.0.0.1:10000 (service backend):"
for _ in $(seq 1 10); do curl -s localhost:10000/; done | sort | uniq -c
echo "== kumactl inspect dataplanes"
sleep 1
"$BIN/kumactl" --api-url http://localhost:5681 inspect dataplanes
echo "== logs in $WORK"
if [ "${DEMO_ONCE:-}" = 1 ]; then exit 0; fi
echo "== the mesh keeps running; Ctrl-C stops it"
wait
