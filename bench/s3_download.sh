#!/bin/sh
# s3_download.sh - download throughput of fetch_s3_get_file (parallel ranged GETs) against
# `curl -o` (one stream) and `aws s3 cp`, all reading the same object from nginx on loopback
# (path-style, no auth: nginx ignores the signature). Prints medians of RUNS runs and the
# probe's peak RSS. Figures only, not pass/fail.
#
#   bench/s3_download.sh [BUILD_DIR]      (default: build; env SIZE_MIB=256 RUNS=3)
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$src/build}
probe=$build/tools/fetch_probe
size_mib=${SIZE_MIB:-256}
runs=${RUNS:-3}
[ -x "$probe" ] || { echo "missing $probe (build the fetch_probe target)" >&2; exit 2; }

work=$(mktemp -d /tmp/dagy-bench-XXXXXX)
nginx_pid=
cleanup() {
    if [ -n "$nginx_pid" ]; then kill "$nginx_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/www/bench" "$work/logs" "$work/tmp" "$work/out"
head -c $((size_mib * 1024 * 1024)) /dev/urandom >"$work/www/bench/object.bin"
sha=$(sha256sum "$work/www/bench/object.bin" | cut -d' ' -f1)
# nginx workers drop root privileges: the served tree must be world-readable.
chmod 755 "$work"
chmod -R a+rX "$work/www"

cat >"$work/nginx.conf" <<EOF
daemon off;
worker_processes 2;
pid $work/nginx.pid;
error_log $work/logs/error.log;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $work/tmp;
    proxy_temp_path $work/tmp;
    fastcgi_temp_path $work/tmp;
    uwsgi_temp_path $work/tmp;
    scgi_temp_path $work/tmp;
    sendfile on;
    keepalive_requests 10000;
    server {
        listen 127.0.0.1:$port;
        root $work/www;
        location / { etag on; }
    }
}
EOF
nginx -p "$work" -c "$work/nginx.conf" &
nginx_pid=$!
i=0
until curl -sf -o /dev/null "http://127.0.0.1:$port/bench/object.bin" -r 0-0; do
    i=$((i + 1))
    [ $i -lt 100 ] || { echo "nginx did not start" >&2; cat "$work/logs/error.log" >&2; exit 1; }
    sleep 0.1
done

export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench-secret
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_SESSION_TOKEN 2>/dev/null || true

now() { date +%s.%N; }
# Prints the seconds one command took (its output discarded).
timeit() {
    t0=$(now)
    "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
    t1=$(now)
    echo "$t1 - $t0" | bc -l
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

out=$work/out/object.bin
probe_times= ; plain_times= ; curl_times= ; aws_times= ; rss=0
for r in $(seq "$runs"); do
    rm -f "$out"; sync
    t=$(timeit "$probe" get "s3://bench/object.bin#sha256=$sha" "$out")
    probe_times="$probe_times $t"
    # Without the checksum, timing the same way; then the peak RSS (VmHWM, printed by the probe).
    rm -f "$out"; sync
    plain_times="$plain_times $(timeit "$probe" get "s3://bench/object.bin" "$out")"
    rm -f "$out"
    k=$("$probe" get "s3://bench/object.bin#sha256=$sha" "$out" | python3 -c 'import json,sys; print(int(json.loads(sys.stdin.readline())["max_rss_kib"]))')
    [ "$k" -gt "$rss" ] && rss=$k
    rm -f "$out"; sync
    curl_times="$curl_times $(timeit curl -sf -o "$out" "http://127.0.0.1:$port/bench/object.bin")"
    rm -f "$out"; sync
    aws_times="$aws_times $(timeit aws s3 cp --only-show-errors "s3://bench/object.bin" "$out")"
done

pm=$(echo $probe_times | tr ' ' '\n' | median)
nm=$(echo $plain_times | tr ' ' '\n' | median)
cm=$(echo $curl_times | tr ' ' '\n' | median)
am=$(echo $aws_times | tr ' ' '\n' | median)
mbps() { echo "$size_mib / $1" | bc -l | xargs printf '%.0f'; }
echo "object: ${size_mib} MiB over loopback nginx, median of $runs runs"
printf '%-34s %8.3f s %6s MiB/s\n' "fetch_s3_get_file (+sha256 check)" "$pm" "$(mbps "$pm")"
printf '%-34s %8.3f s %6s MiB/s\n' "fetch_s3_get_file (no checksum)" "$nm" "$(mbps "$nm")"
printf '%-34s %8.3f s %6s MiB/s\n' "curl -o (one stream)" "$cm" "$(mbps "$cm")"
printf '%-34s %8.3f s %6s MiB/s\n' "aws s3 cp" "$am" "$(mbps "$am")"
printf 'with sha256: %.2fx curl, %.2fx aws s3 cp;  without: %.2fx curl, %.2fx aws s3 cp\n' \
    "$(echo "$cm / $pm" | bc -l)" "$(echo "$am / $pm" | bc -l)" \
    "$(echo "$cm / $nm" | bc -l)" "$(echo "$am / $nm" | bc -l)"
echo "CPUs: $(nproc) (nginx, the client and the hashing thread share them)"
echo "fetch_probe peak RSS: $((rss / 1024)) MiB ($rss KiB)"
