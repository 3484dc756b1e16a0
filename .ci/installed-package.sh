#!/usr/bin/env bash
# The service as a user installs it: a plain `pip install .` into a new virtual environment,
# started from an unrelated folder. Migration on start must find its scripts in the package.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet "$repo" 2>"$work/pip.log" || { cat "$work/pip.log"; exit 1; }
mkdir "$work/elsewhere"
cd "$work/elsewhere"
port=$("$work/venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DATABASE_URL="sqlite+aiosqlite:///$work/elsewhere/db/app.db" \
  "$work/venv/bin/uvicorn" app.main:app --host 127.0.0.1 --port "$port" >"$work/server.log" 2>&1 &
server_pid=$!

base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  curl -fsS "$base/health/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
if ! curl -fsS "$base/health/ready"; then
  echo "installed package did not become ready:"; cat "$work/server.log"; exit 1
fi
echo
curl -fsS -X POST "$base/signup" -H 'Content-Type: application/json' \
  -d '{"name": "Ada", "email": "ada@example.com", "password": "installed-package-check"}' >/dev/null
curl -fsS -X POST "$base/token" -d grant_type=password -d username=ada@example.com \
  -d password=installed-package-check | grep -q access_token
test -f "$work/elsewhere/db/secret_key"
# /docs serves Swagger UI from the installed fastapi-offline package, not from a CDN.
curl -fsS "$base/docs" | grep -q '/docs/assets/swagger-ui-bundle.js'
curl -fsS "$base/docs/assets/swagger-ui-bundle.js" >/dev/null
# The account pages render from templates shipped in the wheel, with their script and style.
# (Read whole before grep: `grep -q` stops reading early and fails curl under pipefail.)
grep -q 'static/recovery.js' <<<"$(curl -fsS "$base/password-reset")"
grep -q '>Confirm</button>' <<<"$(curl -fsS "$base/email-verification")"
grep -q 'replaceState' <<<"$(curl -fsS "$base/static/recovery.js")"
curl -fsS "$base/static/pages.css" >/dev/null
echo "installed package: migrated on start from $(pwd), signup, login and the account pages work"
