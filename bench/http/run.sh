#!/usr/bin/env bash
# HTTPDNS speed: Isobar's /{account}/d against nginx serving the same JSON body, in one run.
#
# Servers are pinned to core 0 (taskset -c 0), the load tools to core 1. Each load run lasts
# DURATION seconds (default 10, at most 20): wrk over HTTP/1.1 keep-alive, then h2load over
# HTTP/2 (h2c, prior knowledge). Prints one table; ratios are Isobar / nginx.
#
#   bench/http/run.sh            # builds isobar (release) unless ISOBAR_BIN is set
#   DURATION=15 CONNS=64 bench/http/run.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
STREAMS=${STREAMS:-10}
(( DURATION <= 20 )) || { echo "DURATION must be <= 20 s" >&2; exit 64; }
RUN=$(mktemp -d /tmp/isobar-http-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v nginx >/dev/null || need+=(nginx-light)
command -v curl >/dev/null || need+=(curl)
command -v bc >/dev/null || need+=(bc)
if (( ${#need[@]} )); then
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi

BIN=${ISOBAR_BIN:-}
if [[ -z $BIN ]]; then
  (cd "$ROOT" && cargo build --release -q -p isobar)
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/isobar
fi

# Non-default ports, so a running demo or dev server is never hit.
P_DNS=25353 P_GRPC=25051 P_HTTP=28080 P_NGX=28180 P_NGX2=28181
PATH_Q="/bench/d"
QUERY="host=www.example.test&ip=192.0.2.1"

cat > "$RUN/world.toml" <<TOML
[[regions]]
name = "eu"
lat = 50.1
lon = 8.7

[[pops]]
name = "fra"
region = "eu"
lat = 50.1
lon = 8.7

[[zones]]
name = "example.test"

[[services]]
name = "www.example.test"
ttl = 300
answers = 2

[[services.endpoints]]
pop = "fra"
address = "192.0.2.10"

[[services.endpoints]]
pop = "fra"
address = "192.0.2.11"

[[accounts]]
id = "bench"

# The load comes from one address: no per-client or per-account limit here.
[httpdns]
per_client = { rate = 0, burst = 0 }
per_account = { rate = 0, burst = 0 }
TOML

RUST_LOG=warn taskset -c 0 "$BIN" serve --config "$RUN/world.toml" --db "sqlite://$RUN/isobar.db" \
  --roles scheduler,dns,http --dns 127.0.0.1:$P_DNS --grpc 127.0.0.1:$P_GRPC \
  --http 127.0.0.1:$P_HTTP --data-dir "$RUN/data" > "$RUN/isobar.log" 2>&1 &
PIDS+=($!)
URL_ISOBAR="http://127.0.0.1:$P_HTTP$PATH_Q?$QUERY"
for _ in $(seq 1 100); do
  curl -sf "$URL_ISOBAR" -o "$RUN/body.json" && break
  sleep 0.2
done
[[ -s $RUN/body.json ]] || { echo "isobar did not answer; log:" >&2; cat "$RUN/isobar.log" >&2; exit 1; }
BODY=$(cat "$RUN/body.json")

sed -e "s#@R@#$RUN#g" -e "s#@P@#$P_NGX#g" -e "s#@P2@#$P_NGX2#g" -e "s#@PATH@#$PATH_Q#g" \
    -e "s#@BODY@#$BODY#g" "$HERE/nginx.conf" > "$RUN/nginx.conf"
taskset -c 0 nginx -p "$RUN" -e "$RUN/nginx-error.log" -c "$RUN/nginx.conf" &
PIDS+=($!)
URL_NGX="http://127.0.0.1:$P_NGX$PATH_Q?$QUERY"
URL_NGX2="http://127.0.0.1:$P_NGX2$PATH_Q?$QUERY"
for _ in $(seq 1 50); do curl -sf "$URL_NGX" -o "$RUN/nginx-body.json" && break; sleep 0.1; done
cmp -s "$RUN/body.json" "$RUN/nginx-body.json" || { echo "nginx body differs" >&2; exit 1; }

wrk_run() { # url -> "rps p99_ms"
  local out; out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$1")
  local rps p99
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' <<<"$out")
  echo "$rps $p99"
}
h2_run() { # url -> "rps mean_ms"
  local out; out=$(taskset -c 1 h2load -c"$CONNS" -m"$STREAMS" -D "$DURATION" "$1" 2>&1)
  local rps mean
  rps=$(awk '/^finished in/ {print $4}' <<<"$out")
  mean=$(awk '/^time for request:/ {v=$6; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else {sub(/ms/,"",v)}; print v}' <<<"$out")
  echo "$rps $mean"
}

echo "body: $(wc -c < "$RUN/body.json") bytes; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
read -r i1 i1p <<<"$(wrk_run "$URL_ISOBAR")"
read -r n1 n1p <<<"$(wrk_run "$URL_NGX")"
read -r i2 i2m <<<"$(h2_run "$URL_ISOBAR")"
read -r n2 n2m <<<"$(h2_run "$URL_NGX2")"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-22s %12s %12s %8s\n' "" "isobar" "nginx" "ratio"
printf '%-22s %12.0f %12.0f %8.2f\n' "HTTP/1.1 req/s (wrk)" "$i1" "$n1" "$(echo "$i1 / $n1" | bc -l)"
printf '%-22s %12.3f %12.3f\n' "HTTP/1.1 p99 ms" "$i1p" "$n1p"
printf '%-22s %12.0f %12.0f %8.2f\n' "HTTP/2 req/s (h2load)" "$i2" "$n2" "$(echo "$i2 / $n2" | bc -l)"
printf '%-22s %12.3f %12.3f\n' "HTTP/2 mean ms" "$i2m" "$n2m"
