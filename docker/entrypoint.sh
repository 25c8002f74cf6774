#!/bin/sh
# Entrypoint of the satosa-orcid image.
#
#   (no arguments)        check the keys and the config, migrate PostgreSQL, exec gunicorn
#   -<gunicorn options>   the same, with extra gunicorn options
#   <command> [args]      check the keys, then exec the command (e.g. satosa-orcid sync run)
#
# It refuses to start without the two keys instead of inventing them: a key made up at start
# differs between instances (logins break when a load balancer switches them) and between
# restarts (every stored ORCID token becomes unreadable).
#
# Environment:
#   SATOSA_STATE_ENCRYPTION_KEY   (required) key of SATOSA's state cookie, the same everywhere
#   SATOSA_ORCID_TOKEN_KEYS       (required) Fernet key(s) encrypting ORCID tokens, newest first
#     (each also as <NAME>_FILE: a file holding the value, e.g. a Docker/Kubernetes secret)
#   SATOSA_CONFIG                 proxy_conf.yaml (default /etc/satosa/proxy_conf.yaml)
#   SATOSA_ORCID_DATABASE_URL     postgresql+psycopg://... -> `satosa-orcid db upgrade` first
#   SATOSA_ORCID_DB_UPGRADE       auto (PostgreSQL only, the default) | always | never
#   SATOSA_ORCID_CHECK_CONFIG     1 (default): `satosa-orcid check-config` before gunicorn; 0 skips
#   PROMETHEUS_MULTIPROC_DIR      directory for the workers' metrics (created, wiped by gunicorn);
#                                 must be writable (a volume or tmpfs under a read-only root):
#                                 when it is not, one line says so and the workers keep none
#   SATOSA_ORCID_CONFIG           the CLI's configuration (default: SATOSA_CONFIG)
#   GUNICORN_BIND, GUNICORN_WORKERS, GUNICORN_THREADS, GUNICORN_TIMEOUT, GUNICORN_MAX_REQUESTS,
#   GUNICORN_MAX_REQUESTS_JITTER, GUNICORN_CMD_ARGS
set -eu

die() {
    echo "satosa-orcid: $*" >&2
    exit 1
}

# <NAME>_FILE -> NAME, for secrets mounted as files
for name in SATOSA_STATE_ENCRYPTION_KEY SATOSA_ORCID_TOKEN_KEYS ORCID_CLIENT_SECRET SATOSA_ORCID_DATABASE_URL; do
    eval "file=\${${name}_FILE:-}"
    eval "value=\${${name}:-}"
    if [ -z "$value" ] && [ -n "$file" ]; then
        [ -r "$file" ] || die "${name}_FILE=$file cannot be read"
        value=$(cat "$file")
        export "$name=$value"
    fi
done

[ -n "${SATOSA_STATE_ENCRYPTION_KEY:-}" ] || die "refusing to start: SATOSA_STATE_ENCRYPTION_KEY is not set (generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))', and give every instance the same value)"
[ -n "${SATOSA_ORCID_TOKEN_KEYS:-}" ] || die "refusing to start: SATOSA_ORCID_TOKEN_KEYS is not set (generate one with: satosa-orcid keys generate, keep it safe: it decrypts every stored ORCID token)"

SATOSA_CONFIG=${SATOSA_CONFIG:-/etc/satosa/proxy_conf.yaml}
SATOSA_ORCID_CONFIG=${SATOSA_ORCID_CONFIG:-$SATOSA_CONFIG}
export SATOSA_CONFIG SATOSA_ORCID_CONFIG

serve=0
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    serve=1
fi

if [ "$serve" -eq 1 ]; then
    [ -f "$SATOSA_CONFIG" ] || die "refusing to start: SATOSA_CONFIG=$SATOSA_CONFIG is not a file"
    conf_dir=$(dirname "$SATOSA_CONFIG")
    if [ "${SATOSA_ORCID_CHECK_CONFIG:-1}" != "0" ]; then
        (cd "$conf_dir" && satosa-orcid check-config "$SATOSA_CONFIG" >/dev/null) \
            || die "refusing to start: $SATOSA_CONFIG has errors (see above)"
    fi
fi

upgrade=${SATOSA_ORCID_DB_UPGRADE:-auto}
case "$upgrade" in
    auto)
        case "${SATOSA_ORCID_DATABASE_URL:-}" in
            postgres*) [ "$serve" -eq 1 ] || upgrade=never ;;
            *) upgrade=never ;;
        esac
        ;;
    always | never) ;;
    *) die "SATOSA_ORCID_DB_UPGRADE must be auto, always or never (not $upgrade)" ;;
esac
if [ "$upgrade" != "never" ]; then
    (cd "$(dirname "$SATOSA_CONFIG")" && satosa-orcid --config "$SATOSA_CONFIG" db upgrade) \
        || die "refusing to start: the database schema upgrade failed (see above)"
fi

if [ "$serve" -eq 1 ] && [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    probe="$PROMETHEUS_MULTIPROC_DIR/.satosa-orcid-write-test"
    if mkdir -p "$PROMETHEUS_MULTIPROC_DIR" 2>/dev/null && (: >"$probe") 2>/dev/null; then
        rm -f "$probe"
    else
        echo "satosa-orcid: metrics off: PROMETHEUS_MULTIPROC_DIR=$PROMETHEUS_MULTIPROC_DIR is not writable (mount a volume or tmpfs there, e.g. --tmpfs $PROMETHEUS_MULTIPROC_DIR:uid=10001,gid=10001)" >&2
        unset PROMETHEUS_MULTIPROC_DIR
    fi
fi

if [ "$serve" -eq 1 ]; then
    exec gunicorn -c python:satosa_orcid_plugin.ops.gunicorn_conf "$@" satosa_orcid_plugin.ops.wsgi:app
fi
exec "$@"
