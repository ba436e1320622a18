#!/usr/bin/env bash
# The flash-sale benchmark against a platform this script starts itself.
#
#   loadtest/run.sh dev   [flashsale options...]   `ticketing dev` (embedded, no services)
#   loadtest/run.sh stack [flashsale options...]   ingress + sink + processor on the
#                                                  local real stack (deploy/local/stack.sh)
#   loadtest/run.sh dev|stack jmeter [-Dloadtest.buyers=N ...]
#                                                  the same sale as a JMeter plan
#
# Builds release binaries, starts the platform on 127.0.0.1:$LOADTEST_PORT
# (default 18080), runs the load, and stops what it started. flashsale writes
# its JSON report to target/loadtest/<mode>-<time>.json (options: `flashsale
# --help`); JMeter (fetched from Maven Central by the jmeter-maven-plugin)
# writes loadtest/jmeter/target/jmeter/{results,reports}.
#
# On the real stack the processor joins TICKETING_PROCESSOR_GROUP (default
# schedule-processor-e2e, the group the integration tests use): every
# processor group of a cluster writes the one changelog, so a cluster must only
# ever have one.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODE=${1:-}
shift || true
TOOL=flashsale
if [[ ${1:-} == jmeter || ${1:-} == flashsale ]]; then
  TOOL=$1
  shift
fi
PORT=${LOADTEST_PORT:-18080}
OUT=$REPO/target/loadtest
BIN=$REPO/target/release
mkdir -p "$OUT"
WORK=$(mktemp -d)
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_ready() {
  local url=$1 i
  for i in $(seq 1 240); do
    if curl -fsS "$url" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "not ready: $url (logs in $WORK)" >&2
  tail -n 30 "$WORK"/*.log >&2 || true
  return 1
}

case $MODE in
dev | stack) ;;
*)
  sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac

cargo build --release -p ticketing -p ticketing-loadtest

export RUST_LOG=${RUST_LOG:-warn}
if [[ $MODE == dev ]]; then
  TICKETING_DATA_DIR=$WORK/data "$BIN/ticketing" dev --listen "127.0.0.1:$PORT" >"$WORK/dev.log" 2>&1 &
  PIDS+=($!)
  TARGET=dev
else
  "$REPO/deploy/local/stack.sh" up
  eval "$("$REPO/deploy/local/stack.sh" env)"
  export TICKETING_CQL_KEYSPACE=${TICKETING_CQL_KEYSPACE:-loadtest}
  export TICKETING_TOKEN_SECRET=${TICKETING_TOKEN_SECRET:-$(head -c 48 /dev/urandom | base64 -w0)}
  export TICKETING_PHONE_KEYS=${TICKETING_PHONE_KEYS:-"lt1:$(head -c 32 /dev/urandom | base64 -w0)"}
  export TICKETING_CARD_KEYS=${TICKETING_CARD_KEYS:-"lt1:$(head -c 32 /dev/urandom | base64 -w0)"}
  export TICKETING_PG_SECRET_KEY=${TICKETING_PG_SECRET_KEY:-test_sk_loadtest}
  export TICKETING_PG_URL=${TICKETING_PG_URL:-http://127.0.0.1:18090}
  TICKETING_PG_LISTEN=127.0.0.1:18090 "$BIN/ticketing" pg-sandbox >"$WORK/pg-sandbox.log" 2>&1 &
  PIDS+=($!)
  export TICKETING_PROCESSOR_GROUP=${TICKETING_PROCESSOR_GROUP:-schedule-processor-e2e}
  export TICKETING_SINK_GROUP=${TICKETING_SINK_GROUP:-catalog-sink-loadtest}
  TICKETING_OPS_LISTEN=127.0.0.1:19101 TICKETING_INSTANCE_ID=loadtest-0 \
    "$BIN/ticketing" processor >"$WORK/processor.log" 2>&1 &
  PIDS+=($!)
  TICKETING_OPS_LISTEN=127.0.0.1:19102 "$BIN/ticketing" sink >"$WORK/sink.log" 2>&1 &
  PIDS+=($!)
  "$BIN/ticketing" ingress --listen "127.0.0.1:$PORT" >"$WORK/ingress.log" 2>&1 &
  PIDS+=($!)
  wait_ready http://127.0.0.1:19101/readyz
  wait_ready http://127.0.0.1:19102/readyz
  TARGET=real-stack
fi
wait_ready "http://127.0.0.1:$PORT/readyz"

if [[ $TOOL == jmeter ]]; then
  mvn -B -q -f "$REPO/loadtest/jmeter/pom.xml" clean verify -Dloadtest.port="$PORT" "$@"
  python3 "$REPO/loadtest/jmeter/summary.py" "$REPO"/loadtest/jmeter/target/jmeter/results/*.csv
  exit 0
fi
REPORT=$OUT/$MODE-$(date -u +%Y%m%dT%H%M%SZ).json
"$BIN/flashsale" --base-url "http://127.0.0.1:$PORT" --target "$TARGET" --json "$REPORT" "$@" >/dev/null
echo "report: $REPORT" >&2
