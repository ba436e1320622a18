#!/usr/bin/env bash
# Real engines for local runs and integration tests, without Docker.
#
#   stack.sh up [component...]     install if missing, start if stopped, wait until healthy
#   stack.sh down [component...]   stop (TERM, then KILL after a grace period)
#   stack.sh status                what runs, where
#   stack.sh env                   export lines with the addresses, for `eval`
#
# Components: redis registry kafka cassandra prometheus (default: all, in that
# order; the JVMs start one at a time because on 2 cores starting them together
# makes each much slower). Everything lives under $TICKETING_LOCAL_DIR
# (default: <repo>/.local): downloads in opt/, data in data/, logs in logs/,
# pid files in run/. Every engine listens on 127.0.0.1 only.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LOCAL=${TICKETING_LOCAL_DIR:-$REPO/.local}
OPT=$LOCAL/opt
DATA=$LOCAL/data
LOGS=$LOCAL/logs
RUN=$LOCAL/run

KAFKA_VERSION=4.1.1
CASSANDRA_VERSION=5.0.4
REGISTRY_MODULE=github.com/axonops/axonops-schema-registry
REGISTRY_VERSION=v0.2.1

KAFKA_PORT=${TICKETING_LOCAL_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${TICKETING_LOCAL_KAFKA_CONTROLLER_PORT:-9093}
CQL_PORT=${TICKETING_LOCAL_CQL_PORT:-9042}
CASSANDRA_STORAGE_PORT=${TICKETING_LOCAL_CASSANDRA_STORAGE_PORT:-7000}
REDIS_PORT=${TICKETING_LOCAL_REDIS_PORT:-6379}
REGISTRY_PORT=${TICKETING_LOCAL_REGISTRY_PORT:-8081}
PROMETHEUS_PORT=${TICKETING_LOCAL_PROMETHEUS_PORT:-9090}

ALL=(redis registry kafka cassandra prometheus)

log() { printf '[stack] %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_of() {
  local f=$RUN/$1.pid
  [[ -f $f ]] || return 1
  local pid
  pid=$(<"$f")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

running() { pid_of "$1" >/dev/null; }

# start NAME CMD...: runs CMD detached (own session, so it outlives this shell
# and a Ctrl-C here), stdout and stderr to logs/NAME.log.
start_bg() {
  local name=$1
  shift
  mkdir -p "$LOGS" "$RUN"
  log "starting $name"
  # A fresh log per run, so health checks never read an earlier run's lines.
  [[ -f $LOGS/$name.log ]] && mv -f "$LOGS/$name.log" "$LOGS/$name.log.prev"
  setsid nohup "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

# wait_healthy NAME TIMEOUT_SECS CHECK...: polls CHECK until it succeeds; on
# timeout or if the process died, shows the log's tail and fails.
wait_healthy() {
  local name=$1 timeout=$2
  shift 2
  local start=$SECONDS
  until "$@"; do
    if ! running "$name"; then
      tail -n 40 "$LOGS/$name.log" >&2 || true
      die "$name exited during start-up (log: $LOGS/$name.log)"
    fi
    if ((SECONDS - start > timeout)); then
      tail -n 40 "$LOGS/$name.log" >&2 || true
      die "$name not healthy after ${timeout}s (log: $LOGS/$name.log)"
    fi
    sleep 1
  done
  log "$name healthy after $((SECONDS - start))s"
}

stop() {
  local name=$1 pid
  if ! pid=$(pid_of "$name"); then
    rm -f "$RUN/$name.pid"
    return 0
  fi
  log "stopping $name ($pid)"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name did not stop in 20s; killing"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/$name.pid"
}

apt_install() {
  # Never let a package's maintainer scripts start its system service: the
  # engines here run as our own processes, on our own ports and data.
  local policy=/usr/sbin/policy-rc.d created=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created=1
  fi
  if [[ ! -f $LOCAL/.apt-updated ]]; then
    log "apt-get update"
    apt-get update -qq >"$LOGS/apt.log" 2>&1 || die "apt-get update failed (log: $LOGS/apt.log)"
    touch "$LOCAL/.apt-updated"
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >>"$LOGS/apt.log" 2>&1 ||
    die "apt-get install $* failed (log: $LOGS/apt.log)"
  ((created)) && rm -f "$policy"
  return 0
}

need_java() { command -v java >/dev/null || die "java is required (a JDK 17+)"; }
need_mvn() { command -v mvn >/dev/null || die "mvn is required to fetch the JVM engines"; }

# ---------------------------------------------------------------- redis ----
redis_up() {
  command -v redis-server >/dev/null || apt_install redis-server
  running redis && return 0
  mkdir -p "$DATA/redis"
  start_bg redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
    --save "" --appendonly no --dir "$DATA/redis" --daemonize no
  wait_healthy redis 30 redis_healthy
}
redis_healthy() { [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

# ------------------------------------------------------------- registry ----
# AxonOps Schema Registry (Confluent-compatible REST API), built from its Go
# module at a pinned version. In-memory storage: each start is empty, and the
# platform registers its schemas at start-up.
registry_bin() { echo "$OPT/schema-registry-$REGISTRY_VERSION"; }
registry_install() {
  [[ -x $(registry_bin) ]] && return 0
  command -v go >/dev/null || die "go is required to build the schema registry"
  log "building AxonOps schema registry $REGISTRY_VERSION from the Go module proxy"
  mkdir -p "$OPT" "$LOGS"
  # `go install pkg@version` also asks the proxy for the module's version list,
  # which the proxy refuses for this module; download the pinned version and
  # build it from the module cache instead.
  local dir
  dir=$(GOFLAGS=-mod=mod go mod download -json "$REGISTRY_MODULE@$REGISTRY_VERSION" 2>>"$LOGS/registry-build.log" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -n $dir && -d $dir ]] || die "could not download $REGISTRY_MODULE@$REGISTRY_VERSION (log: $LOGS/registry-build.log)"
  (cd "$dir" && GOFLAGS=-mod=mod go build -o "$(registry_bin).tmp" ./cmd/schema-registry) >>"$LOGS/registry-build.log" 2>&1 ||
    die "building the schema registry failed (log: $LOGS/registry-build.log)"
  mv "$(registry_bin).tmp" "$(registry_bin)"
}
registry_up() {
  registry_install
  running registry && return 0
  mkdir -p "$DATA/registry"
  cat >"$DATA/registry/config.yaml" <<EOF
server:
  host: "127.0.0.1"
  port: $REGISTRY_PORT
storage:
  type: memory
compatibility:
  default_level: BACKWARD
EOF
  start_bg registry "$(registry_bin)" -config "$DATA/registry/config.yaml"
  wait_healthy registry 30 registry_healthy
}
registry_healthy() { curl -fsS "http://127.0.0.1:$REGISTRY_PORT/config" >/dev/null 2>&1; }

# ---------------------------------------------------------------- kafka ----
kafka_home() { echo "$OPT/kafka-$KAFKA_VERSION"; }
kafka_install() {
  [[ -f $(kafka_home)/.complete ]] && return 0
  need_mvn
  log "fetching Apache Kafka $KAFKA_VERSION from Maven Central"
  mkdir -p "$(kafka_home)/libs" "$LOGS"
  mvn -q -B -f "$HERE/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" dependency:copy-dependencies \
    -DoutputDirectory="$(kafka_home)/libs" >"$LOGS/kafka-install.log" 2>&1 ||
    die "resolving Kafka failed (log: $LOGS/kafka-install.log)"
  touch "$(kafka_home)/.complete"
}
kafka_java() {
  java -Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$HERE/kafka/log4j2.properties" \
    -cp "$(kafka_home)/libs/*" "$@"
}
kafka_up() {
  need_java
  kafka_install
  running kafka && return 0
  local data=$DATA/kafka conf=$DATA/kafka.properties
  mkdir -p "$data"
  sed -e "s#@DATA@#$data#" -e "s#@PORT@#$KAFKA_PORT#g" -e "s#@CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#g" \
    "$HERE/kafka/server.properties.in" >"$conf"
  if [[ ! -f $data/meta.properties ]]; then
    local cluster
    cluster=$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$LOGS/kafka-format.log" | tail -n 1)
    kafka_java kafka.tools.StorageTool format --standalone -t "$cluster" -c "$conf" --ignore-formatted \
      >>"$LOGS/kafka-format.log" 2>&1 || die "formatting Kafka storage failed (log: $LOGS/kafka-format.log)"
  fi
  start_bg kafka java -Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$HERE/kafka/log4j2.properties" \
    -cp "$(kafka_home)/libs/*" kafka.Kafka "$conf"
  wait_healthy kafka 120 kafka_healthy
}
# Started means: the broker said so in this run's log, and its port answers.
kafka_healthy() {
  port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$LOGS/kafka.log" 2>/dev/null
}

# ------------------------------------------------------------ cassandra ----
cassandra_home() { echo "$OPT/cassandra-$CASSANDRA_VERSION"; }
cassandra_install() {
  [[ -f $(cassandra_home)/.complete ]] && return 0
  need_mvn
  log "fetching Apache Cassandra $CASSANDRA_VERSION from Maven Central"
  mkdir -p "$(cassandra_home)/lib" "$LOGS"
  mvn -q -B -f "$HERE/cassandra/pom.xml" -Dcassandra.version="$CASSANDRA_VERSION" dependency:copy-dependencies \
    -DoutputDirectory="$(cassandra_home)/lib" >"$LOGS/cassandra-install.log" 2>&1 ||
    die "resolving Cassandra failed (log: $LOGS/cassandra-install.log)"
  touch "$(cassandra_home)/.complete"
}
cassandra_up() {
  need_java
  cassandra_install
  running cassandra && return 0
  local data=$DATA/cassandra conf=$DATA/cassandra.yaml
  mkdir -p "$data"
  sed -e "s#@DATA@#$data#g" -e "s#@CQL_PORT@#$CQL_PORT#g" -e "s#@STORAGE_PORT@#$CASSANDRA_STORAGE_PORT#g" \
    "$HERE/cassandra/cassandra.yaml.in" >"$conf"
  local lib
  lib=$(cassandra_home)/lib
  local jamm
  jamm=$(ls "$lib"/jamm-*.jar | head -n 1)
  # The module flags are those Cassandra's own jvm17-server.options sets: it
  # reaches into JDK internals for off-heap memory and its agents.
  start_bg cassandra java -Xms512m -Xmx1g -XX:+UseG1GC -Xss512k \
    -javaagent:"$jamm" -Djdk.attach.allowAttachSelf=true \
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED --add-exports java.base/jdk.internal.ref=ALL-UNNAMED \
    --add-exports java.base/sun.nio.ch=ALL-UNNAMED --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED \
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED \
    --add-exports java.sql/java.sql=ALL-UNNAMED --add-opens java.base/java.lang.module=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.loader=ALL-UNNAMED --add-opens java.base/jdk.internal.ref=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED --add-opens java.base/jdk.internal.math=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.module=ALL-UNNAMED --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED \
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED --add-opens java.base/sun.nio.ch=ALL-UNNAMED \
    --add-opens java.base/java.io=ALL-UNNAMED --add-opens java.base/java.nio=ALL-UNNAMED \
    --add-opens java.base/java.util.concurrent=ALL-UNNAMED --add-opens java.base/java.util=ALL-UNNAMED \
    --add-opens java.base/java.util.concurrent.atomic=ALL-UNNAMED --add-opens java.base/java.lang=ALL-UNNAMED \
    --add-opens java.base/java.math=ALL-UNNAMED --add-opens java.base/java.lang.reflect=ALL-UNNAMED \
    --add-opens java.base/java.net=ALL-UNNAMED \
    -Dcassandra.config="file://$conf" -Dcassandra-foreground=yes -Dcassandra.storagedir="$data" \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dcassandra.ring_delay_ms=0 \
    -Dcassandra.jmx.local.port=7199 \
    -cp "$lib/*" org.apache.cassandra.service.CassandraDaemon
  wait_healthy cassandra 240 cassandra_healthy
}
# A CQL OPTIONS request answered by SUPPORTED: the native protocol is serving.
cassandra_healthy() {
  port_open "$CQL_PORT" && python3 - "$CQL_PORT" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
s.sendall(bytes([0x04, 0, 0, 0, 0x05, 0, 0, 0, 0]))
head = s.recv(9)
sys.exit(0 if len(head) == 9 and head[4] == 0x06 else 1)
EOF
}

# ----------------------------------------------------------- prometheus ----
prometheus_up() {
  command -v prometheus >/dev/null || apt_install prometheus
  running prometheus && return 0
  mkdir -p "$DATA/prometheus"
  start_bg prometheus prometheus --config.file="$HERE/prometheus.yml" \
    --storage.tsdb.path="$DATA/prometheus" --web.listen-address="127.0.0.1:$PROMETHEUS_PORT"
  wait_healthy prometheus 60 prometheus_healthy
}
prometheus_healthy() { curl -fsS "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" >/dev/null 2>&1; }

# ----------------------------------------------------------------- main ----
components() {
  if (($# == 0)); then
    printf '%s\n' "${ALL[@]}"
    return
  fi
  local c
  for c in "$@"; do
    [[ " ${ALL[*]} " == *" $c "* ]] || die "unknown component: $c (one of: ${ALL[*]})"
    echo "$c"
  done
}

cmd=${1:-}
shift || true
mkdir -p "$LOCAL" "$LOGS" "$RUN"
case $cmd in
up)
  for c in $(components "$@"); do "${c}_up"; done
  ;;
down)
  # Reverse order: consumers of an engine stop before it.
  mapfile -t cs < <(components "$@")
  for ((i = ${#cs[@]} - 1; i >= 0; i--)); do stop "${cs[i]}"; done
  ;;
status)
  for c in "${ALL[@]}"; do
    if pid=$(pid_of "$c"); then
      if "${c}_healthy"; then state=healthy; else state=starting; fi
      printf '%-11s %-9s pid %s\n' "$c" "$state" "$pid"
    else
      printf '%-11s stopped\n' "$c"
    fi
  done
  ;;
env)
  cat <<EOF
export TICKETING_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
export TICKETING_CQL_NODES=127.0.0.1:$CQL_PORT
export TICKETING_REDIS_URL=redis://127.0.0.1:$REDIS_PORT
export TICKETING_SCHEMA_REGISTRY_URL=http://127.0.0.1:$REGISTRY_PORT
export TICKETING_PROMETHEUS_URL=http://127.0.0.1:$PROMETHEUS_PORT
EOF
  ;;
*)
  sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
