#!/bin/sh
# entrypoint.sh - ENTRYPOINT of the dagy worker image (Dockerfile.worker). In container mode (no
# --flow) it checks the environment the agent needs before anything is downloaded, then `exec`s
# dagy-agent so the agent is PID 1: it receives ECS's SIGTERM directly and reaps orphans.
#
#   docker run IMAGE                      container mode: everything from DAGY_* (contract section 5)
#   docker run IMAGE --flow s3://b/k ...  arguments go to dagy-agent unchanged
#   docker run IMAGE dagy-launch status X run another program of the image (or sh, for debugging)
#   AWS Lambda (AWS_LAMBDA_RUNTIME_API set, no arguments): `dagy-launch lambda`, the control
#                                         plane's custom runtime (docs/lambda.md)
#
# DAGY_AGENT_BIN overrides the agent's path (tests). Exit 2 when required environment is missing.
set -eu

AGENT=${DAGY_AGENT_BIN:-/opt/dagy/bin/dagy-agent}

# Prints the names of the required variables that are unset or empty, comma-separated.
missing_env() {
    missing=""
    [ -n "${DAGY_RUN_ID:-}" ] || missing="$missing, DAGY_RUN_ID"
    [ -n "${DAGY_ARTIFACT_S3_URI:-}" ] || missing="$missing, DAGY_ARTIFACT_S3_URI"
    # DynamoDB (the container-mode default) needs a region to sign requests for; the SDKs accept
    # either variable.
    case "${DAGY_STATUS_BACKEND:-dynamodb}" in
    dynamodb)
        if [ -z "${AWS_REGION:-}" ] && [ -z "${AWS_DEFAULT_REGION:-}" ]; then
            missing="$missing, AWS_REGION (or AWS_DEFAULT_REGION)"
        fi
        ;;
    esac
    echo "${missing#, }"
}

# True when the arguments select a mode that does not read the container environment.
has_local_mode_arg() {
    for arg in "$@"; do
        case "$arg" in
        --flow | --flow=* | --help | -h | --version | --graph) return 0 ;;
        esac
    done
    return 1
}

# The worker image is the Lambda image too: Lambda sets the Runtime API address.
if [ -n "${AWS_LAMBDA_RUNTIME_API:-}" ] && [ $# -eq 0 ]; then
    exec "$(dirname "$AGENT")/dagy-launch" lambda
fi

case "${1:-}" in
dagy-agent)
    shift
    ;;
dagy-launch)
    shift
    exec "$(dirname "$AGENT")/dagy-launch" "$@"
    ;;
"" | -*) ;;
*)
    # Not an option: run the given program instead (docker's usual convention).
    exec "$@"
    ;;
esac

if ! has_local_mode_arg "$@"; then
    missing=$(missing_env)
    if [ -n "$missing" ]; then
        echo "entrypoint: missing required environment: $missing" >&2
        echo "entrypoint: container mode (no --flow) takes the run from DAGY_* variables;" \
            "see docs/operations.md" >&2
        exit 2
    fi
fi

exec "$AGENT" "$@"
