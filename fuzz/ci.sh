#!/usr/bin/env bash
# The short fuzz run for CI: each target for FUZZ_SECONDS (default 30) when cargo-fuzz is
# installed, and a notice, not a failure, when it is not. A finding fails the run (see run.sh for
# how to replay it). The first build of the targets (sanitizers, the whole broker) takes minutes.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/ci.sh: cargo-fuzz not installed; fuzzing skipped (cargo install cargo-fuzz)"
    exit 0
fi
exec "$here/run.sh" "${FUZZ_SECONDS:-30}"
