#!/bin/sh
# deps.sh - installs what building and testing dagy needs on a Debian machine, and only what is
# missing (apt-get as root, or through sudo). Safe to run repeatedly.
set -eu

BUILD_PKGS="build-essential cmake ninja-build pkg-config libuv1-dev libcurl4-openssl-dev
libcjson-dev libarchive-dev nettle-dev zlib1g-dev libssl-dev libcmocka-dev python3 ca-certificates"
TEST_PKGS="libarchive-tools shellcheck util-linux binutils valgrind procps"
# tests/integration/test_deploy_*: the AWS CLI deploys deploy/dagy.yaml into moto (Debian's
# awscli is v2 with its own botocore, so it leaves pip's boto3 alone); PyYAML reads the template.
TEST_PKGS="$TEST_PKGS awscli python3-yaml"
# The libFuzzer runtime of clang 14 (scripts/fuzz.sh, -DDAGY_FUZZ=ON).
FUZZ_PKGS="clang libclang-rt-14-dev"
# GNU time (/usr/bin/time): peak RSS in tests/integration/test_agent_ddb_memory.py and bench/.
TEST_PKGS="$TEST_PKGS time"

want="$BUILD_PKGS"
[ "${1:-}" = "--test" ] && want="$want $TEST_PKGS $FUZZ_PKGS"
[ "${1:-}" = "--fuzz" ] && want="$want $FUZZ_PKGS"

# tests/image: rootful podman (no daemon) builds and runs the worker image; debootstrap makes its
# base images from the machine's Debian mirror.
[ "${1:-}" = "--test" ] && want="$want podman buildah runc debootstrap"
missing=""
# node + npm (for dynalite) may come from nodesource's nodejs, which has no separate npm package.
if [ "${1:-}" = "--test" ] && ! command -v npm >/dev/null 2>&1; then
    want="$want nodejs npm"
fi
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

# tests/integration/test_deploy_*: the aws command deploys deploy/dagy.yaml into moto. Debian's
# awscli (apt, above) is v2 with its own botocore, but it breaks when a urllib3 2 from pip
# shadows Debian's python3-urllib3 ("cannot import name 'DEFAULT_CIPHERS'"). So the command is
# tried for real - a refused loopback port must be its only complaint - and pip's awscli (v1,
# resolved together with boto3) is installed when it fails.
aws_cli_works() {
    command -v aws >/dev/null 2>&1 || return 1
    AWS_ACCESS_KEY_ID=probe AWS_SECRET_ACCESS_KEY=probe AWS_CONFIG_FILE=/dev/null \
        AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_MAX_ATTEMPTS=1 \
        aws --endpoint-url http://127.0.0.1:9 --region us-east-1 cloudformation list-stacks 2>&1 |
        grep -q 'Could not connect to the endpoint URL'
}
if [ "${1:-}" = "--test" ] && ! aws_cli_works; then
    echo "deps: installing awscli with pip (the aws command is missing or does not work)" >&2
    python3 -m pip install --quiet awscli boto3 ||
        python3 -m pip install --quiet --break-system-packages awscli boto3
    if ! aws_cli_works; then
        echo "deps: the aws command still does not work: aws --version; aws cloudformation help" >&2
        exit 1
    fi
fi

# dynalite: a second DynamoDB implementation (node) for the fault tests, kept in a cache
# directory (tests/integration/awsenv.py looks there; DAGY_DYNALITE_DIR overrides it).
dyn_dir=${DAGY_DYNALITE_DIR:-${HOME:-/root}/.cache/dagy}
if [ "${1:-}" = "--test" ] && [ ! -f "$dyn_dir/node_modules/dynalite/cli.js" ]; then
    echo "deps: installing dynalite with npm into $dyn_dir" >&2
    mkdir -p "$dyn_dir"
    npm install --silent --no-audit --no-fund --prefix "$dyn_dir" dynalite >/dev/null
fi
