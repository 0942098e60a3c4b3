#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG NPROC [train.py options]
# Environment: see dist_run.sh.
set -e
exec bash "$(dirname "$0")/dist_run.sh" train "$2" "$1" "${@:3}"
