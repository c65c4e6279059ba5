#!/bin/sh
# dagy-env-from-stack.sh - prints `export DAGY_...='...'` lines for every output of a stack made
# from deploy/dagy.yaml: output key DagyEcsClusterArn is DAGY_ECS_CLUSTER_ARN (split before
# each capital, upper case, joined by "_"). Keys that do not start with Dagy are ignored.
#   eval "$(scripts/dagy-env-from-stack.sh STACK [aws options...])"
# Extra arguments go to `aws` (--region, --profile, --endpoint-url). Exit 2 on bad use, 1 when
# the stack cannot be described or an output cannot be exported safely.
set -eu

if [ $# -lt 1 ] || [ -z "$1" ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    echo "usage: $0 STACK_NAME [aws options...]" >&2
    exit 2
fi
stack=$1
shift

# One line per output: KEY<TAB>VALUE (text output; a value itself may hold tabs, not newlines).
if ! out=$(aws "$@" cloudformation describe-stacks --stack-name "$stack" \
    --query 'Stacks[0].Outputs[].[OutputKey,OutputValue]' --output text); then
    echo "$0: cannot describe stack $stack" >&2
    exit 1
fi
if [ -z "$out" ] || [ "$out" = "None" ]; then
    echo "$0: stack $stack has no outputs (not created yet?)" >&2
    exit 1
fi

tab=$(printf '\t')
n=0
printf '%s\n' "$out" | {
    while IFS= read -r line; do
        key=${line%%"$tab"*}
        value=${line#*"$tab"}
        case $key in
        Dagy[A-Z]*) ;;
        *) continue ;;
        esac
        case $key in
        *[!A-Za-z0-9]*)
            echo "$0: output key \"$key\" is not CamelCase letters and digits" >&2
            exit 1
            ;;
        esac
        name=$(printf '%s' "$key" | sed 's/\([a-z0-9]\)\([A-Z]\)/\1_\2/g' | tr '[:lower:]' '[:upper:]')
        # Single quotes keep the value literal in the shell that evals this; a quote inside
        # becomes '\''.
        quoted=$(printf '%s' "$value" | sed "s/'/'\\\\''/g")
        printf "export %s='%s'\n" "$name" "$quoted"
        n=$((n + 1))
    done
    if [ "$n" -eq 0 ]; then
        echo "$0: stack $stack has no Dagy* outputs" >&2
        exit 1
    fi
}
