#!/usr/bin/env bash
# A private Docker daemon for CI: its own data root, exec root and socket, no iptables, no
# bridge (containers use --network host and reach only loopback services). The data root is
# kept between runs on the same machine, so the stand-in base and the build cache survive.
#
#   source .ci/dockerd.sh; dockerd_start; ...; dockerd_stop      (dockerd_stop is idempotent)
#
# Environment: SATOSA_ORCID_DOCKER_ROOT (default /var/lib/satosa-orcid-docker).
DOCKERD_ROOT=${SATOSA_ORCID_DOCKER_ROOT:-/var/lib/satosa-orcid-docker}
DOCKERD_RUN=/run/satosa-orcid-docker
export DOCKER_HOST="unix://$DOCKERD_RUN/docker.sock"
DOCKERD_PID=

dockerd_start() {
    mkdir -p "$DOCKERD_ROOT" "$DOCKERD_RUN"
    # one CI run at a time uses this data root
    exec {DOCKERD_LOCK}>"$DOCKERD_ROOT.lock"
    flock "$DOCKERD_LOCK"
    dockerd --data-root "$DOCKERD_ROOT/data" --exec-root "$DOCKERD_RUN/exec" \
        --pidfile "$DOCKERD_RUN/dockerd.pid" --host "$DOCKER_HOST" \
        --iptables=false --ip-masq=false --bridge=none \
        >"$DOCKERD_ROOT/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 1 120); do
        if docker version >/dev/null 2>&1; then return 0; fi
        if ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
            echo "dockerd exited:" >&2; tail -20 "$DOCKERD_ROOT/dockerd.log" >&2; return 1
        fi
        sleep 0.5
    done
    echo "dockerd did not answer in 60 s:" >&2; tail -20 "$DOCKERD_ROOT/dockerd.log" >&2
    return 1
}

dockerd_stop() {
    [ -n "$DOCKERD_PID" ] || return 0
    # containers this daemon runs (only ours: it is a private daemon)
    local ids
    ids=$(docker ps -q 2>/dev/null || true)
    # shellcheck disable=SC2086  # one argument per id
    [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
    kill -TERM "$DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 1 60); do
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 0.5
    done
    kill -KILL "$DOCKERD_PID" 2>/dev/null || true
    wait "$DOCKERD_PID" 2>/dev/null || true
    DOCKERD_PID=
}
