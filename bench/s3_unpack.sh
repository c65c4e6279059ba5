#!/bin/sh
# s3_unpack.sh - end to end artifact fetch: dagy-agent running a one-task flow from an
# s3://...#sha256= artifact (download, verify, unpack, run `true`), against the peer
# `curl -sf -o artifact URL && bsdtar -xf artifact` (and the same with `sha256sum -c` between),
# all served by one nginx on loopback (path-style, no auth: nginx ignores the signature).
# Paired alternating runs (bench/paired.py): median wall and CPU (user + sys, children
# included) of each, and the agent's peak RSS. Goal: agent <= 0.8x (curl + bsdtar), <= 32 MiB.
#
#   bench/s3_unpack.sh [--strict]    env: SIZE_MIB=256 RUNS=5 FORMAT=tar|tar.gz|zip FILES=64
set -eu
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

[ "${1:-}" = --strict ] && STRICT=1
SIZE_MIB=${SIZE_MIB:-256}
RUNS=${RUNS:-5}
FORMAT=${FORMAT:-tar}
FILES=${FILES:-64}
need_agent
command -v nginx >/dev/null 2>&1 || die "nginx not found (apt-get install nginx-light)"
command -v bsdtar >/dev/null 2>&1 || die "bsdtar not found (apt-get install libarchive-tools)"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dagy-bench-unpack.XXXXXX")
nginx_pid=
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    if [ -n "$nginx_pid" ]; then kill "$nginx_pid" 2>/dev/null || true; fi
    [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$WORK/www/bench" "$WORK/logs" "$WORK/tmp" "$WORK/trash"
# FILES files of random (incompressible) data, SIZE_MIB MiB in all, then the flow spec.
python3 - "$WORK/www/bench/artifact.$FORMAT" "$FORMAT" "$SIZE_MIB" "$FILES" <<'EOF'
import io, json, os, sys, tarfile, zipfile
path, fmt, size_mib, files = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
spec = json.dumps({"spec_version": 1, "name": "bench_unpack", "version": "1.0.0",
                   "tasks": [{"name": "t", "command": ["true"]}]}).encode()
each = (size_mib << 20) // files
entries = [("data/%03d.bin" % i, os.urandom(each)) for i in range(files)]
entries.append(("flow_spec.json", spec))
if fmt == "zip":
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries:
            z.writestr(name, data)
else:
    with tarfile.open(path, "w:gz" if fmt == "tar.gz" else "w", **({"compresslevel": 1} if fmt == "tar.gz" else {})) as t:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
EOF
sha=$(sha256sum "$WORK/www/bench/artifact.$FORMAT" | cut -d' ' -f1)
echo "$sha  $WORK/peer/artifact" >"$WORK/sha.txt"
chmod 755 "$WORK"
chmod -R a+rX "$WORK/www"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/nginx.conf" <<EOF
daemon off;
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/logs/error.log;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $WORK/tmp;
    proxy_temp_path $WORK/tmp;
    fastcgi_temp_path $WORK/tmp;
    uwsgi_temp_path $WORK/tmp;
    scgi_temp_path $WORK/tmp;
    sendfile on;
    keepalive_requests 10000;
    server {
        listen 127.0.0.1:$port;
        root $WORK/www;
        location / { etag on; }
    }
}
EOF
nginx -p "$WORK" -c "$WORK/nginx.conf" &
nginx_pid=$!
i=0
until curl -sf -o /dev/null -r 0-0 "http://127.0.0.1:$port/bench/artifact.$FORMAT"; do
    i=$((i + 1))
    [ $i -lt 100 ] || die "nginx did not start: $(cat "$WORK/logs/error.log")"
    sleep 0.1
done

export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench-secret
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_SESSION_TOKEN 2>/dev/null || true
DAGY_STATUS_BACKEND=local
DAGY_WORK_DIR=$WORK/work
export DAGY_STATUS_BACKEND DAGY_WORK_DIR

url="http://127.0.0.1:$port/bench/artifact.$FORMAT"
agent_cmd="$AGENT --flow s3://bench/artifact.$FORMAT#sha256=$sha --log-format json --state-dir $WORK/state"
peer_cmd="curl -sf -o $WORK/peer/artifact $url && bsdtar -xf $WORK/peer/artifact -C $WORK/peer/out"
peer_sha_cmd="curl -sf -o $WORK/peer/artifact $url && sha256sum -c --status $WORK/sha.txt && bsdtar -xf $WORK/peer/artifact -C $WORK/peer/out"
# Before each run, untimed: the previous run's files are moved away (not deleted: the freed
# blocks would be discarded and inodes scanned during the next run) and the page cache of the
# served file is warm for both (nginx reads it from the cache either way).
agent_prep="mv $WORK/work $WORK/trash/w\$\$ 2>/dev/null; mv $WORK/state $WORK/trash/s\$\$ 2>/dev/null; true"
peer_prep="mv $WORK/peer $WORK/trash/p\$\$ 2>/dev/null; mkdir -p $WORK/peer/out"

sh -c "$agent_cmd" >"$WORK/agent.log" 2>&1 || die "agent run failed: $(tail -n 3 "$WORK/agent.log")"
sh -c "$peer_prep"
sh -c "$peer_sha_cmd" || die "peer run failed"

python3 "$BENCH_DIR/paired.py" --runs "$RUNS" --warmup 1 \
    agent "$agent_prep" "$agent_cmd" \
    curl_bsdtar "$peer_prep" "$peer_cmd" \
    curl_sha_bsdtar "$peer_prep" "$peer_sha_cmd" >"$WORK/paired.json" || die "timing failed"
sh -c "$agent_prep"
# shellcheck disable=SC2086 # the command line is split into its words on purpose
rss_kib=$(peak_rss_kib $agent_cmd)
sh -c "$agent_prep"

fig() {
    python3 -c 'import json, sys; print("%.6f" % json.load(open(sys.argv[1]))[sys.argv[2]][sys.argv[3]])' \
        "$WORK/paired.json" "$1" "$2"
}
ratio=$(python3 -c 'import sys; print("%.3f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$(fig agent median)" "$(fig curl_bsdtar median)")
rss_mib=$(python3 -c 'import sys; print("%.1f" % (int(sys.argv[1]) / 1024))' "$rss_kib")
echo
echo "s3_unpack: $SIZE_MIB MiB $FORMAT ($FILES files + flow_spec.json) over loopback nginx, median of $RUNS paired runs, $(nproc) CPUs"
for n in agent curl_bsdtar curl_sha_bsdtar; do
    printf '  %-28s wall %8.3f s   cpu %8.3f s\n' "$n" "$(fig $n median)" "$(fig $n cpu_median)"
done
verdict "$ratio" 0.8
printf '  %-28s %10s    goal <= 0.8   %s\n' "wall agent/(curl+bsdtar)" "$ratio" "$VERDICT"
verdict "$rss_mib" 32
printf '  %-28s %10s MiB goal <= 32   %s\n' "agent peak RSS" "$rss_mib" "$VERDICT"
finish
