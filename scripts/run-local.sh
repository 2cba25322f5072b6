#!/usr/bin/env bash
# Starts the service locally: every function built under ./bin on its own
# loopback port, behind a local ingress on $PORT that routes paths as the
# cluster's ingress does. Every variable set in the environment wins; only
# unset ones get these defaults. Sample data is seeded into the default
# source storage so a new user can stage at once.
set -euo pipefail
cd "$(dirname "$0")/.."
data="$PWD/.data"
export PORT="${PORT:-8000}"
export HOST="${HOST:-127.0.0.1}"
export SOURCE_STORAGE_PATH="${SOURCE_STORAGE_PATH:-$data/source}"
export TARGET_STORAGE_PATH="${TARGET_STORAGE_PATH:-$data/user_areas}"
export DATABASE_URL="${DATABASE_URL:-sqlite://$data/staging.db}"
export ENABLE_FILE_CREATOR="${ENABLE_FILE_CREATOR:-true}"
export LOGGING_LEVEL="${LOGGING_LEVEL:-INFO}"
case $PORT in
'' | *[!0-9]*) echo "PORT: \"$PORT\" is not a number (make run uses it and the three ports after it)" >&2; exit 1 ;;
esac
if [ "$PORT" -lt 1 ] || [ "$PORT" -gt 65532 ]; then
	echo "PORT: $PORT is not from 1 to 65532 (make run uses it and the three ports after it)" >&2
	exit 1
fi
# AUTH_MODE as the functions read it (lib/config): trimmed, any case, unset
# or blank meaning none.
auth_mode=$(printf '%s' "${AUTH_MODE:-}" | tr -d '[:space:]' | tr '[:upper:]' '[:lower:]')
case $HOST in
127.* | localhost | ::1) ;;
*) if [ "${auth_mode:-none}" = none ]; then
	echo "warning: HOST=$HOST with AUTH_MODE=none: anyone who reaches this address may stage, read and create files as any user" >&2
fi ;;
esac

if [ ! -e "$SOURCE_STORAGE_PATH/samples" ] && [ "$SOURCE_STORAGE_PATH" = "$data/source" ]; then
	mkdir -p "$SOURCE_STORAGE_PATH/samples/observation-001/calibration"
	printf 'Hello from the SKAO Staging Service sample data.\n' >"$SOURCE_STORAGE_PATH/samples/hello.txt"
	head -c 1048576 /dev/urandom >"$SOURCE_STORAGE_PATH/samples/random-1MiB.bin"
	for i in 1 2 3; do
		printf 'visibility block %s\n' "$i" >"$SOURCE_STORAGE_PATH/samples/observation-001/block-$i.txt"
	done
	printf 'gain table\n' >"$SOURCE_STORAGE_PATH/samples/observation-001/calibration/gains.txt"
fi
mkdir -p "$SOURCE_STORAGE_PATH" "$TARGET_STORAGE_PATH"

# Each function gets the next port after $PORT; the ingress keeps $PORT.
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
port=$PORT
routes=""
# start NAME ROUTE...: runs bin/NAME on the next port and routes ROUTEs to it.
start() {
	local name=$1
	shift
	port=$((port + 1))
	PORT=$port HOST=127.0.0.1 "./bin/$name" &
	pids+=($!)
	for r in "$@"; do routes="$routes;$r=http://127.0.0.1:$port"; done
	eval "export ${name^^}_URL=http://127.0.0.1:$port"
}
# jupyter has no route of its own: the stage function hands it jupyter_copy
# (it answers 503 for that method until JUPYTERHUB_URL is set).
start jupyter
export JUPYTER_FUNCTION_URL="${JUPYTER_FUNCTION_URL:-$JUPYTER_URL}"
start stage /
start logs /logs
# Wait until the functions accept connections (bash's /dev/tcp, no curl
# needed); one that exits (a bad setting) ends the run with its message.
for _ in $(seq 200); do
	(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
	for pid in "${pids[@]}"; do
		kill -0 "$pid" 2>/dev/null || { echo "a function did not start: see its message above" >&2; exit 1; }
	done
	sleep 0.05
done

echo "SKAO Staging Service on http://$HOST:$PORT (source $SOURCE_STORAGE_PATH, user areas $TARGET_STORAGE_PATH)"
INGRESS_ROUTES="${routes#;}" ./bin/devingress &
pids+=($!)
wait -n
