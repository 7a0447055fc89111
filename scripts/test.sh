#!/usr/bin/env bash
# Runs every test of the workspace, after making sure what the tests need is there.
#
#   ./scripts/test.sh            # everything
#   ./scripts/test.sh -p sluice-operators   # extra arguments go to `cargo test`
#
# Today the tests need only Rust and the golden data in ../shared/testdata (SPEC §1.3).
# Connectors that talk to servers start their own on loopback (the Firehose simulator, an
# SSE gateway); the MySQL and Elasticsearch connectors will add their servers here.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d ../shared/testdata ]; then
  echo "error: ../shared/testdata is missing: the golden envelopes live beside this repository (see README)." >&2
  exit 2
fi

cargo test --workspace --all-targets --locked --no-fail-fast "$@"
