#!/usr/bin/env bash
# DNS benchmark, one run, same machine: Isobar (the real `isobar serve --roles dns` frontend,
# fed by a scheduler in a second process) against Knot, NSD, gdnsd (geoip plugin) and
# PowerDNS (geoip backend). Each server in turn is pinned to core 0 and dnsperf to core 1.
#
# Workloads (UDP):
#   static  one A record (static-www.txt), no ECS                      all servers
#   gslb    gslb.example.test A with ECS from 8 subnets on 5 continents  gdnsd, pdns-geoip, isobar
#           (8 dnsperf processes, one per subnet, 1 connection x 12 outstanding each)
#   mix     mix.txt: 20 % NXDOMAIN, CNAME, SOA, NS, AAAA, no ECS       all servers
# Figure of merit: server CPU time per answer (all its threads / processes), from
# /proc/PID/stat, the figure least disturbed by a shared machine; qps is printed too.
#
# Usage: bench/dns/run.sh     (DUR=8 REPS=2; needs dnsperf knot nsd gdnsd pdns-server
#                               pdns-backend-geoip bind9-dnsutils; python3 pip for the mmdb)
# Knobs: SERVERS, WORKLOADS (static-www gslb mix), DUR, REPS, and PERF_STAT=1 to count each
# server's I/O system calls and context switches mid-run (`perf stat`): answers per call.
# The GeoLite2-City database is fetched from PyPI (maxminddb-geolite2) into $MMDB_CACHE,
# never into the repository. Every load run is bounded by `timeout`; traffic is 127.0.0.1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DUR=${DUR:-8}
REPS=${REPS:-2}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SERVERS=${SERVERS:-knot nsd gdnsd pdns-geoip isobar}
WORKLOADS=${WORKLOADS:-static-www gslb mix}
PERF_STAT=${PERF_STAT:-0} # 1: count the server's I/O system calls with `perf stat` as well
PERF_EVENTS=syscalls:sys_enter_recvmmsg,syscalls:sys_enter_sendmmsg,syscalls:sys_enter_recvmsg,syscalls:sys_enter_sendmsg,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,context-switches
CACHE=${MMDB_CACHE:-/tmp/gslb-anchors-cache}
MMDB=$CACHE/GeoLite2-City.mmdb
RUN=$(mktemp -d /tmp/isobar-dnsbench.XXXXXX)
RES=$RUN/results.tsv
: >"$RES"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  [ "${KEEP_RUN:-0}" = 1 ] && echo "run dir kept: $RUN" >&2 || rm -rf "$RUN"
}
trap cleanup EXIT
log() { echo "[$(date +%T)] $*" >&2; }

for tool in dnsperf taskset dig knotd nsd gdnsd pdns_server; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install dnsperf knot nsd gdnsd pdns-server pdns-backend-geoip bind9-dnsutils)"; exit 1; }
done
if [ ! -s "$MMDB" ]; then
  mkdir -p "$CACHE/dl"
  log "fetching GeoLite2-City from PyPI (maxminddb-geolite2==2018.703)"
  (cd "$CACHE/dl" && timeout 300 python3 -m pip download -q --no-deps maxminddb-geolite2==2018.703)
  tar -xzf "$CACHE"/dl/maxminddb-geolite2-*.tar.gz -C "$CACHE/dl"
  cp "$(find "$CACHE/dl" -name GeoLite2-City.mmdb | head -1)" "$MMDB"
fi
# ISOBAR=path measures a binary built elsewhere (e.g. the previous commit's) instead.
if [ -z "${ISOBAR:-}" ]; then
  case " $SERVERS " in *" isobar "*) (cd "$ROOT" && cargo build --release -q -p isobar) ;; esac
  ISOBAR="$ROOT/target/release/isobar"
fi

# ECS subnets (dnsperf -E code:hex; family 1, source /24, scope 0, 3 address bytes):
# GB 81.2.69/24, DE 5.9.0/24, US 8.8.8/24, JP 1.0.16/24, AU 1.1.1/24, BR 177.0.0/24,
# FR 2.0.0/24, IN 1.6.0/24.
SUBNETS="81.2.69.0/24 5.9.0.0/24 8.8.8.0/24 1.0.16.0/24 1.1.1.0/24 177.0.0.0/24 2.0.0.0/24 1.6.0.0/24"
ecs_hex() { # a.b.c.0/24 -> 8:00011800AABBCC
  local ip=${1%/*}; IFS=. read -r a b c _ <<<"$ip"
  printf '8:00011800%02x%02x%02x' "$a" "$b" "$c"
}

fill() { # template -> stdout; @D@ bench dir, @R@ run dir, @P@ port, @W@ workers, @MMDB@
  sed -e "s|@D@|$HERE|g" -e "s|@R@|$2|g" -e "s|@P@|$3|g" -e "s|@W@|1|g" -e "s|@MMDB@|$MMDB|g" "$1"
}

wait_dns() { # port
  for _ in $(seq 100); do
    dig +time=1 +tries=1 +short -p "$1" @127.0.0.1 www.example.test A 2>/dev/null | grep -q '^192\.0\.2\.' && return 0
    sleep 0.2
  done
  return 1
}

TCK=$(getconf CLK_TCK)
tree_pids() { local c; echo "$1"; for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do tree_pids "$c"; done; }
srv_ticks() { # pid -> utime+stime of its whole process tree (pdns and gdnsd fork helpers)
  local t=0 p v
  for p in $(tree_pids "$1"); do
    v=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12+$13}')
    t=$((t + ${v:-0}))
  done
  echo "$t"
}

SRV=""
start_srv() { # log cmd...
  local lf=$1; shift
  taskset -c "$SERVER_CPU" "$@" >"$lf" 2>&1 &
  SRV=$!
  PIDS+=("$SRV")
}
stop_pid() {
  kill "$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

geo_check() { # name port
  local out="" s
  for s in $SUBNETS; do
    out="$out $s=>$(dig +time=1 +tries=1 +short +subnet="$s" -p "$2" @127.0.0.1 gslb.example.test A | tr '\n' ' ' | sed 's/ $//')"
  done
  echo "geo-check $1:$out" | tee -a "$RUN/geo.txt" >&2
}

load() { # server port workload
  local srv=$1 port=$2 wl=$3 r
  for r in $(seq "$REPS"); do
    local t0 t1 n i
    t0=$(srv_ticks "$SRV")
    local sp=""
    if [ "$PERF_STAT" = 1 ]; then # syscalls and context switches, mid-run, DUR-2 s
      (sleep 1; perf stat -x, -e "$PERF_EVENTS" -p "$(tree_pids "$SRV" | paste -sd,)" \
        -o "$RUN/$srv-$wl-$r.perf" -- sleep $((DUR - 2)) >/dev/null 2>&1) &
      sp=$!
    fi
    if [ "$wl" = gslb ]; then
      i=0; local perf=()
      for s in $SUBNETS; do
        taskset -c "$CLIENT_CPU" timeout $((DUR + 20)) dnsperf -s 127.0.0.1 -p "$port" \
          -d "$HERE/gslb.txt" -l "$DUR" -c 1 -q 12 -T 1 -E "$(ecs_hex "$s")" >"$RUN/$srv-$wl-$r-$i.out" 2>&1 &
        perf+=($!); i=$((i + 1))
      done
      for p in "${perf[@]}"; do wait "$p" || true; done
    else
      taskset -c "$CLIENT_CPU" timeout $((DUR + 20)) dnsperf -s 127.0.0.1 -p "$port" \
        -d "$HERE/$wl.txt" -l "$DUR" -c 8 -q 100 -T 1 >"$RUN/$srv-$wl-$r-0.out" 2>&1 || true
    fi
    t1=$(srv_ticks "$SRV")
    [ -n "$sp" ] && wait "$sp" 2>/dev/null || true
    local done_q qps lost
    done_q=$(cat "$RUN/$srv-$wl-$r"-*.out | awk '/Queries completed:/{s+=$3} END{print s+0}')
    lost=$(cat "$RUN/$srv-$wl-$r"-*.out | awk '/Queries lost:/{s+=$3} END{print s+0}')
    qps=$(cat "$RUN/$srv-$wl-$r"-*.out | awk '/Queries per second:/{s+=$4} END{printf "%.0f", s}')
    local us
    us=$(awk -v t=$((t1 - t0)) -v k="$TCK" -v q="$done_q" 'BEGIN{ if (q>0) printf "%.2f", t/k*1e6/q; else print "NA"}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$srv" "$wl" "$r" "$qps" "$lost" "$us" >>"$RES"
    log "$srv $wl rep $r: qps=$qps lost=$lost server-cpu=${us}us/answer"
    if [ -s "$RUN/$srv-$wl-$r.perf" ]; then
      # Packets per I/O system call: answers/s over (receive + send calls)/s, both halves.
      awk -F, -v q="$qps" -v d=$((DUR - 2)) -v tag="$srv $wl rep $r" '
        $3 ~ /sys_enter_(recv|send)/ { split($3, e, "sys_enter_"); io[e[2]] += $1; calls += $1 }
        $3 ~ /context-switches/ { cs = $1 }
        END { if (calls > 0 && q > 0) {
                line = sprintf("%s: %.0f io calls/s (", tag, calls / d)
                for (k in io) line = line sprintf("%s %.0f ", k, io[k] / d)
                printf "%s), %.2f answers per io call, %.2f context switches per 100 answers\n", line, q * d / calls, cs * 100 / (q * d) } }' \
        "$RUN/$srv-$wl-$r.perf" | tee -a "$RUN/perf.txt" >&2
    fi
  done
}

bench() { # name
  local n=$1 d=$RUN/$1 port geo=0 extra=""
  mkdir -p "$d"
  case $n in
    knot) port=15301
      cat >"$d/knot.conf" <<CONF
server:
    rundir: "$d"
    listen: 127.0.0.1@$port
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "$d/db"
log:
  - target: stderr
    any: warning
zone:
  - domain: example.test
    file: "$HERE/example.test.zone"
    zonefile-sync: -1
    journal-content: none
CONF
      start_srv "$d/log" knotd -c "$d/knot.conf" ;;
    nsd) port=15302
      fill "$HERE/conf/nsd.conf.in" "$d" $port >"$d/nsd.conf"
      start_srv "$d/log" nsd -d -c "$d/nsd.conf" ;;
    gdnsd) port=15303; geo=1
      mkdir -p "$d/conf/zones"
      fill "$HERE/conf/gdnsd.config.in" "$d" $port >"$d/conf/config"
      cp "$HERE/conf/example.test.gdnsd" "$d/conf/zones/example.test"
      start_srv "$d/log" gdnsd -c "$d/conf" start ;;
    pdns-geoip) port=15304; geo=1
      mkdir -p "$d/cfg"
      fill "$HERE/conf/pdns-geoip.conf.in" "$d" $port >"$d/cfg/pdns.conf"
      start_srv "$d/log" pdns_server --config-dir="$d/cfg" ;;
    isobar) port=15305; geo=1
      # The scheduler (idle: no probes) runs on the client core; only the frontend is measured.
      taskset -c "$CLIENT_CPU" "$ISOBAR" serve --roles scheduler --config "$HERE/world.toml" \
        --db "sqlite://$d/isobar.db" --grpc 127.0.0.1:15350 --data-dir "$d/sched" >"$d/sched.log" 2>&1 &
      extra=$!; PIDS+=("$extra")
      start_srv "$d/log" "$ISOBAR" serve --roles dns --dns 127.0.0.1:$port \
        --scheduler http://127.0.0.1:15350 --geoip "$MMDB" --data-dir "$d/fe" --node bench ;;
  esac
  if ! wait_dns $port; then
    log "$n did not answer on port $port:"; tail -20 "$d/log" >&2
    stop_pid "$SRV"; [ -n "$extra" ] && stop_pid "$extra"; return
  fi
  [ $geo = 1 ] && geo_check "$n" $port
  for w in $WORKLOADS; do
    [ "$w" = gslb ] && [ $geo = 0 ] && continue
    load "$n" $port "$w"
  done
  stop_pid "$SRV"
  [ -n "$extra" ] && stop_pid "$extra"
  return 0
}

log "versions: $(knotd -V | head -1); $(nsd -v 2>&1 | head -1); $(gdnsd -V 2>&1 | grep -m1 -i version); pdns-server $(dpkg-query -W -f='${Version}' pdns-server 2>/dev/null); $(dnsperf -h 2>&1 | grep -m1 -i version || true)"
for s in $SERVERS; do bench "$s"; done

echo
echo "| server | workload | qps (per rep) | lost | server CPU µs/answer (per rep) | median µs |"
echo "|---|---|---|---|---|---|"
awk -F'\t' '
  { k = $1 "\t" $2; if (!(k in seen)) { order[++n] = k; seen[k] = 1 }
    qps[k] = qps[k] (qps[k] == "" ? "" : ", ") $4; lost[k] += $5
    us[k] = us[k] (us[k] == "" ? "" : ", ") $6; c[k]++; v[k, c[k]] = $6 }
  END { for (i = 1; i <= n; i++) { k = order[i]; split(k, p, "\t")
          # median of the reps
          m = c[k]; for (a = 1; a <= m; a++) s[a] = v[k, a]
          for (a = 1; a <= m; a++) for (b = a + 1; b <= m; b++) if (s[b] + 0 < s[a] + 0) { t = s[a]; s[a] = s[b]; s[b] = t }
          med = (m % 2) ? s[(m + 1) / 2] : (s[m / 2] + s[m / 2 + 1]) / 2
          printf "| %s | %s | %s | %d | %s | %.2f |\n", p[1], p[2], qps[k], lost[k], us[k], med
          print p[1] "\t" p[2] "\t" med > "'"$RUN"'/medians.tsv" } }' "$RES"
echo
awk -F'\t' '{ m[$1 "/" $2] = $3 }
  function ratio(peer, wl) { if ((peer "/" wl) in m && ("isobar/" wl) in m && m["isobar/" wl] > 0)
      printf "- %s: Isobar vs %s: %.2fx (server CPU per answer, %s / %s µs)\n", wl, peer, m[peer "/" wl] / m["isobar/" wl], m[peer "/" wl], m["isobar/" wl] }
  END { ratio("knot", "static-www"); ratio("nsd", "static-www"); ratio("gdnsd", "static-www"); ratio("pdns-geoip", "static-www")
        ratio("gdnsd", "gslb"); ratio("pdns-geoip", "gslb")
        ratio("knot", "mix"); ratio("nsd", "mix") }' "$RUN/medians.tsv"
echo
cat "$RUN/geo.txt" 2>/dev/null || true
[ -s "$RUN/perf.txt" ] && { echo; cat "$RUN/perf.txt"; }
true
