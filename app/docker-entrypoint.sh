#!/bin/sh
# The container's entrypoint: read secrets from files where asked, then start the server
# (`serve`, the default command) or run whatever command was given, e.g.
#   docker run --rm -it -v passgate-data:/data passgate python -m app create-admin --email ...
set -eu

# Docker and compose secrets arrive as files under /run/secrets. NAME_FILE names the file whose
# content becomes NAME, so the secret never shows in `docker inspect` or in compose.yaml.
# PGPASSWORD is read by asyncpg when DATABASE_URL carries no password, so the URL itself can
# stay in plain configuration. An explicit list: JWT_PRIVATE_KEY_FILE is a setting of its own,
# a path that the service reads itself.
for name in SECRET_KEY DATABASE_URL REDIS_URL PGPASSWORD SMTP_PASSWORD METRICS_TOKEN INTROSPECTION_CLIENTS; do
    eval "file=\${${name}_FILE:-}"
    [ -n "$file" ] || continue
    eval "inline=\${${name}:-}"
    if [ -n "$inline" ]; then
        echo "passgate: both $name and ${name}_FILE are set; set only one" >&2
        exit 1
    fi
    if [ ! -r "$file" ]; then
        echo "passgate: ${name}_FILE=$file is not a readable file" >&2
        exit 1
    fi
    value=$(cat "$file")  # $(...) drops the trailing newline editors leave
    export "$name=$value"
    unset "${name}_FILE"
done

if [ "$#" -eq 0 ] || [ "$1" = serve ]; then
    [ "$#" -eq 0 ] || shift
    # exec: the server replaces this shell, so `docker stop`'s SIGTERM reaches it and it stops
    # its workers gracefully. `python -m app serve` checks the configuration, the port and the
    # database first (one line per mistake, instead of workers that uvicorn restarts forever),
    # migrates once, then runs uvicorn with --workers processes sharing the port and the log
    # format of LOG_FORMAT. Proxy headers (client address, https) are trusted only from
    # FORWARDED_ALLOW_IPS.
    exec python -m app serve \
        --host 0.0.0.0 \
        --port 8000 \
        --workers "${WORKERS:-1}" \
        --forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-127.0.0.1}" \
        "$@"
fi
exec "$@"
