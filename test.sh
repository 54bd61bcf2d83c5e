#!/usr/bin/env bash
# Runs every test of the workspace (unit, known-answer, property, simulation and, when the
# `tor` daemon is installed, interop tests against a private C tor network on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")"
cargo test --workspace --all-targets "$@"
cargo test --workspace --doc
