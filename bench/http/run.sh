#!/usr/bin/env bash
# HTTPDNS speed: Isobar's /{account}/d against nginx serving the same JSON body, in one run.
#
# Servers are pinned to core 0 (taskset -c 0), the load tools to core 1. Each load run lasts
# DURATION seconds (default 10, at most 20): wrk over HTTP/1.1 keep-alive, then h2load over
# HTTP/2 (h2c, prior knowledge), then wrk again with PACE_MS (default 1) ms of think time per
# connection after each answer (paced.lua), and h2load with one request in flight per
# connection (as a mobile client) paced to H2_RPS (default 500) requests/s per connection:
# loads below saturation, whose p99 is the service latency rather than a saturated queue's.
# HTTP/2 percentiles come from h2load's per-request log. Prints one table; req/s ratios are Isobar / nginx,
# CPU ratios nginx µs / Isobar µs per request (above 1: Isobar spends less CPU per request).
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
P_GRPC=25051 P_HTTP=28080 P_NGX=28180 P_NGX2=28181
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

# The scheduler (idle here) runs on the load tools' core; only the HTTP frontend, a process of
# its own fed over gRPC as in production, shares core 0 with nothing.
RUST_LOG=warn taskset -c 1 "$BIN" serve --config "$RUN/world.toml" --db "sqlite://$RUN/isobar.db" \
  --roles scheduler --grpc 127.0.0.1:$P_GRPC --data-dir "$RUN/sched" > "$RUN/scheduler.log" 2>&1 &
PIDS+=($!)
RUST_LOG=warn taskset -c 0 "$BIN" serve --roles http --scheduler http://127.0.0.1:$P_GRPC \
  --http 127.0.0.1:$P_HTTP --data-dir "$RUN/data" --node bench > "$RUN/isobar.log" 2>&1 &
PIDS+=($!)
ISOBAR_PID=$!
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
NGINX_PID=$!
URL_NGX="http://127.0.0.1:$P_NGX$PATH_Q?$QUERY"
URL_NGX2="http://127.0.0.1:$P_NGX2$PATH_Q?$QUERY"
for _ in $(seq 1 50); do curl -sf "$URL_NGX" -o "$RUN/nginx-body.json" && break; sleep 0.1; done
cmp -s "$RUN/body.json" "$RUN/nginx-body.json" || { echo "nginx body differs" >&2; exit 1; }

TCK=$(getconf CLK_TCK)
tree_pids() { local c; echo "$1"; for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do tree_pids "$c"; done; }
ticks() { # pid -> utime+stime of its process tree (nginx's master and worker)
  local t=0 p v
  for p in $(tree_pids "$1"); do
    v=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12+$13}')
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
us_per() { # ticks requests -> server CPU µs per request
  awk -v t="$1" -v k="$TCK" -v n="$2" 'BEGIN { if (n > 0) printf "%.2f", t / k * 1e6 / n; else print "NA" }'
}

p99_ms() { # wrk --latency output on stdin -> its 99th percentile in ms
  awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}'
}
wrk_run() { # pid url -> "rps p99_ms cpu_us_per_request"
  local t0 out; t0=$(ticks "$1")
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$2")
  local rps p99 n
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p99=$(p99_ms <<<"$out")
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  echo "$rps $p99 $(us_per $(( $(ticks "$1") - t0 )) "$n")"
}
paced_run() { # url -> "rps p99_ms" under PACE_MS ms of think time per connection
  local out
  out=$(PACE_MS=${PACE_MS:-1} taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$HERE/paced.lua" "$1")
  echo "$(awk '/^Requests\/sec/ {print $2}' <<<"$out") $(p99_ms <<<"$out")"
}
log_p99_ms() { # h2load --log-file -> 99th percentile of the request durations, ms
  awk -F'\t' '$2 == 200 {print $3}' "$1" | sort -n | awk '{v[NR]=$1} END {
    if (NR == 0) { print "NA"; exit }
    i = int(NR * 0.99); if (i < 1) i = 1; printf "%.3f", v[i] / 1000 }'
}
h2_run() { # pid url -> "rps p99_ms cpu_us_per_request"
  local t0 out; t0=$(ticks "$1")
  rm -f "$RUN/h2.log" # h2load appends
  out=$(taskset -c 1 h2load -c"$CONNS" -m"$STREAMS" -D "$DURATION" --log-file="$RUN/h2.log" "$2" 2>&1)
  local rps n
  rps=$(awk '/^finished in/ {print $4}' <<<"$out")
  n=$(awk '/^requests:/ {print $8}' <<<"$out")
  echo "$rps $(log_p99_ms "$RUN/h2.log") $(us_per $(( $(ticks "$1") - t0 )) "$n")"
}
h2_paced_run() { # url -> "rps p99_ms", each connection one request at a time, H2_RPS per second
  local out
  rm -f "$RUN/h2-paced.log"
  out=$(taskset -c 1 h2load -c"$CONNS" -m1 --rps="${H2_RPS:-500}" -D "$DURATION" \
    --log-file="$RUN/h2-paced.log" "$1" 2>&1)
  echo "$(awk '/^finished in/ {print $4}' <<<"$out") $(log_p99_ms "$RUN/h2-paced.log")"
}

echo "body: $(wc -c < "$RUN/body.json") bytes; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
read -r i1 i1p i1c <<<"$(wrk_run "$ISOBAR_PID" "$URL_ISOBAR")"
read -r n1 n1p n1c <<<"$(wrk_run "$NGINX_PID" "$URL_NGX")"
read -r i2 i2m i2c <<<"$(h2_run "$ISOBAR_PID" "$URL_ISOBAR")"
read -r n2 n2m n2c <<<"$(h2_run "$NGINX_PID" "$URL_NGX2")"
read -r i3 i3p <<<"$(paced_run "$URL_ISOBAR")"
read -r n3 n3p <<<"$(paced_run "$URL_NGX")"
read -r i4 i4p <<<"$(h2_paced_run "$URL_ISOBAR")"
read -r n4 n4p <<<"$(h2_paced_run "$URL_NGX2")"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
# Requests per second of server CPU is the figure a shared machine disturbs least: a
# neighbour on core 0 lowers both servers' req/s but not what a request costs.
printf '%-34s %12s %12s %8s\n' "" "isobar" "nginx" "ratio"
printf '%-34s %12.0f %12.0f %8.2f\n' "HTTP/1.1 req/s (wrk)" "$i1" "$n1" "$(echo "$i1 / $n1" | bc -l)"
printf '%-34s %12.3f %12.3f\n' "HTTP/1.1 p99 ms" "$i1p" "$n1p"
printf '%-34s %12s %12s %8.2f\n' "HTTP/1.1 server CPU µs/request" "$i1c" "$n1c" "$(echo "$n1c / $i1c" | bc -l)"
printf '%-34s %12.0f %12.0f %8.2f\n' "HTTP/2 req/s (h2load)" "$i2" "$n2" "$(echo "$i2 / $n2" | bc -l)"
printf '%-34s %12s %12s\n' "HTTP/2 p99 ms" "$i2m" "$n2m"
printf '%-34s %12s %12s %8.2f\n' "HTTP/2 server CPU µs/request" "$i2c" "$n2c" "$(echo "$n2c / $i2c" | bc -l)"
printf '%-34s %12.0f %12.0f\n' "HTTP/1.1 paced req/s (${PACE_MS:-1} ms)" "$i3" "$n3"
printf '%-34s %12.3f %12.3f\n' "HTTP/1.1 paced p99 ms" "$i3p" "$n3p"
printf '%-34s %12.0f %12.0f\n' "HTTP/2 paced req/s (${H2_RPS:-500}/conn)" "$i4" "$n4"
printf '%-34s %12s %12s\n' "HTTP/2 paced p99 ms" "$i4p" "$n4p"
