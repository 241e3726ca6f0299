#!/usr/bin/env bash
# `make cluster`: the docker-compose topology without Docker, on loopback ports —
# one redis-server (AOF on), two feedserver nodes, nginx in front with ip_hash.
# CLUSTER_REDIS=cluster: a Redis Cluster of three masters instead (AOF on, ports
# REDIS_PORT, +1, +2; each node's cluster bus on its port + 10000), and the nodes on
# FEED_STORE=redis-cluster://...
# Ctrl-C (or the end of any one process) stops them all.
#
# Ports and places (environment): CLUSTER_PORT (8080, nginx), NODE1_PORT (3001),
# NODE2_PORT (3002), REDIS_PORT (6380), CLUSTER_DIR (.cluster: Redis's AOF, nginx's files
# and the logs; kept between runs, so events survive a restart of the whole cluster).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
CLUSTER_PORT=${CLUSTER_PORT:-8080}
NODE1_PORT=${NODE1_PORT:-3001}
NODE2_PORT=${NODE2_PORT:-3002}
REDIS_PORT=${REDIS_PORT:-6380}
CLUSTER_DIR=$(mkdir -p "${CLUSTER_DIR:-$ROOT/.cluster}" && cd "${CLUSTER_DIR:-$ROOT/.cluster}" && pwd)
CLUSTER_REDIS=${CLUSTER_REDIS:-single}
case "$CLUSTER_REDIS" in
  single) REDIS_PORTS=("$REDIS_PORT"); REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" ;;
  cluster)
    REDIS_PORTS=("$REDIS_PORT" "$((REDIS_PORT + 1))" "$((REDIS_PORT + 2))")
    REDIS_URL="redis-cluster://127.0.0.1:${REDIS_PORTS[0]},127.0.0.1:${REDIS_PORTS[1]},127.0.0.1:${REDIS_PORTS[2]}" ;;
  *) echo "cluster: CLUSTER_REDIS is single or cluster, not '$CLUSTER_REDIS'" >&2; exit 2 ;;
esac
cd "$ROOT"  # `python -m feedserver` imports this checkout

PATH="$PATH:/usr/sbin:/sbin"  # nginx lives in /usr/sbin, off a normal user's PATH on Debian
for tool in redis-server redis-cli nginx curl; do
  command -v "$tool" >/dev/null || { echo "cluster: $tool is missing (make cluster installs it)" >&2; exit 1; }
done

pids=()
stop_all() {
  trap - INT TERM EXIT
  echo "cluster: stopping (logs in $CLUSTER_DIR)"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop_all INT TERM EXIT

wait_until() {  # wait_until WHAT COMMAND...: up to 15 s for COMMAND to succeed
  local what=$1; shift
  for _ in $(seq 150); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "cluster: $what did not come up; see $CLUSTER_DIR/*.log" >&2
  exit 1
}

mkdir -p "$CLUSTER_DIR/nginx/tmp"
if [ "$CLUSTER_REDIS" = single ]; then
  mkdir -p "$CLUSTER_DIR/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --appendonly yes --save '' \
    --dir "$CLUSTER_DIR/redis" >"$CLUSTER_DIR/redis.log" 2>&1 &
  pids+=($!)
  wait_until "redis-server" redis-cli -p "$REDIS_PORT" ping
else
  # nodes.conf in each directory: a cluster created by an earlier run forms again by itself.
  # Without full coverage required, the masters that are up go on serving their slots when
  # one is down: only that master's tenants wait (docs/scaling.md, "One master hung").
  for port in "${REDIS_PORTS[@]}"; do
    mkdir -p "$CLUSTER_DIR/redis-$port"
    redis-server --port "$port" --bind 127.0.0.1 --appendonly yes --save '' \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
      --cluster-require-full-coverage no \
      --dir "$CLUSTER_DIR/redis-$port" >"$CLUSTER_DIR/redis-$port.log" 2>&1 &
    pids+=($!)
  done
  for port in "${REDIS_PORTS[@]}"; do
    wait_until "redis-server on port $port" redis-cli -p "$port" ping
  done
  if ! redis-cli -p "$REDIS_PORT" cluster info | grep -q '^cluster_known_nodes:3'; then
    redis-cli --cluster create "${REDIS_PORTS[@]/#/127.0.0.1:}" --cluster-replicas 0 \
      --cluster-yes >"$CLUSTER_DIR/redis-create.log" 2>&1
  fi
  for port in "${REDIS_PORTS[@]}"; do
    wait_until "the Redis Cluster (port $port)" \
      sh -c "redis-cli -p $port cluster info | grep -q '^cluster_state:ok'"
  done
fi

for port in "$NODE1_PORT" "$NODE2_PORT"; do
  FEED_STORE=$REDIS_URL PORT=$port HOST=127.0.0.1 FEED_TRUST_PROXY=127.0.0.1 \
  CORS_ORIGIN=${CORS_ORIGIN:-http://localhost:$CLUSTER_PORT} \
    "$PYTHON" -m feedserver serve >"$CLUSTER_DIR/node-$port.log" 2>&1 &
  pids+=($!)
done
for port in "$NODE1_PORT" "$NODE2_PORT"; do
  wait_until "the node on port $port" curl -fsS "http://127.0.0.1:$port/api/health"
done

sed -e "s/\${FEED_NODE_1}/127.0.0.1:$NODE1_PORT/" \
    -e "s/\${FEED_NODE_2}/127.0.0.1:$NODE2_PORT/" \
    -e "s/\${NGINX_PORT}/127.0.0.1:$CLUSTER_PORT/" \
    "$ROOT/deploy/nginx/feedserver.conf.template" >"$CLUSTER_DIR/nginx/feedserver.conf"
cp "$ROOT/deploy/nginx/nginx.conf" "$CLUSTER_DIR/nginx/nginx.conf"
nginx -q -t -e stderr -p "$CLUSTER_DIR/nginx" -c nginx.conf
nginx -e stderr -p "$CLUSTER_DIR/nginx" -c nginx.conf -g 'daemon off;' 2>"$CLUSTER_DIR/nginx.log" &
pids+=($!)
wait_until "nginx" curl -fsS "http://127.0.0.1:$CLUSTER_PORT/api/health"

cat <<INFO
cluster: up — open http://localhost:$CLUSTER_PORT (nginx, ip_hash over both nodes)
  node 1   http://127.0.0.1:$NODE1_PORT   log $CLUSTER_DIR/node-$NODE1_PORT.log
  node 2   http://127.0.0.1:$NODE2_PORT   log $CLUSTER_DIR/node-$NODE2_PORT.log
  redis    $REDIS_URL   AOF in $CLUSTER_DIR/redis*
Ctrl-C stops everything.
INFO
wait -n "${pids[@]}" || true  # Ctrl-C, or one process ended: stop_all ends the rest
