#!/usr/bin/env bash
# Starts the broker the way `streamrec up` does (infra/kafka_broker.py): one KRaft node,
# storage formatted once, then `kafka.Kafka` in the foreground, logging to stdout.
set -euo pipefail

libs=${KAFKA_LIBS:-/opt/kafka/libs}
data=${KAFKA_DATA_DIR:-/var/lib/kafka/data}
port=${KAFKA_PORT:-19092}
controller_port=${KAFKA_CONTROLLER_PORT:-19093}
# What clients outside the container dial: the port compose publishes on the host.
advertised_host=${KAFKA_ADVERTISED_HOST:-127.0.0.1}
conf=$(mktemp -d)

cat >"$conf/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=localhost:$controller_port
listeners=PLAINTEXT://0.0.0.0:$port,CONTROLLER://0.0.0.0:$controller_port
advertised.listeners=PLAINTEXT://$advertised_host:$port,CONTROLLER://localhost:$controller_port
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.cleaner.backoff.ms=5000
PROPS

# The same levels as infra/kafka/log4j2.yaml, to the console so `docker compose logs` has them.
cat >"$conf/log4j2.properties" <<'LOG'
appender.stdout.type=Console
appender.stdout.name=stdout
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
rootLogger.level=INFO
rootLogger.appenderRef.stdout.ref=stdout
logger.cleaner.name=kafka.log.LogCleaner
logger.cleaner.level=WARN
logger.state.name=state.change.logger
logger.state.level=WARN
LOG

java_opts=(-XX:+UseG1GC -Djava.awt.headless=true "-Dlog4j2.configurationFile=$conf/log4j2.properties" -cp "$libs/*")
if [[ ! -f "$data/meta.properties" ]]; then
    cluster_id=$(java "${java_opts[@]}" kafka.tools.StorageTool random-uuid | tail -n 1)
    java "${java_opts[@]}" kafka.tools.StorageTool format --standalone \
        -t "$cluster_id" -c "$conf/server.properties"
fi
heap=${KAFKA_HEAP:-768m}
exec java "-Xms$heap" "-Xmx$heap" "${java_opts[@]}" kafka.Kafka "$conf/server.properties"
