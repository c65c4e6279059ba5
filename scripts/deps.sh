#!/bin/sh
# deps.sh - installs what building and testing dagy needs on a Debian machine, and only what is
# missing (apt-get as root, or through sudo). Safe to run repeatedly.
set -eu

BUILD_PKGS="build-essential cmake ninja-build pkg-config libuv1-dev libcurl4-openssl-dev
libcjson-dev libarchive-dev zlib1g-dev libssl-dev libcmocka-dev python3 ca-certificates"
TEST_PKGS="libarchive-tools shellcheck util-linux binutils"

want="$BUILD_PKGS"
[ "${1:-}" = "--test" ] && want="$want $TEST_PKGS"

# tests/image: rootful podman (no daemon) builds and runs the worker image; debootstrap makes its
# base images from the machine's Debian mirror.
[ "${1:-}" = "--test" ] && want="$want podman buildah runc debootstrap"
missing=""
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "deps: installing:$missing" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

# The integration tests talk to moto_server (an AWS emulator) and check request bodies with
# botocore; both come from PyPI when the machine's python3 lacks them.
if [ "${1:-}" = "--test" ] && ! python3 -c "import moto.server, boto3, botocore" 2>/dev/null; then
    echo "deps: installing moto[server] with pip" >&2
    python3 -m pip install --quiet 'moto[server]>=5' boto3 ||
        python3 -m pip install --quiet --break-system-packages 'moto[server]>=5' boto3
fi
