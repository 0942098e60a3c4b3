#!/usr/bin/env bash
# Usage: tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py options, e.g. --eval sea]
# Environment: see dist_run.sh.
set -e
exec bash "$(dirname "$0")/dist_run.sh" test "$3" "$1" "$2" "${@:4}"
