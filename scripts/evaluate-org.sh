#!/usr/bin/env bash
# Trigger today's evaluation of one org and wait for it, as a user of the API would.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/evaluate-org.sh ORG_ID

Calls POST /orgs/ORG_ID/evaluations, then polls GET /batches/{id} until the batch is
completed, failed or cancelled, printing each change of progress. Exits 0 when it completed.

Environment:
  SENSO_URL       base URL of the API (default http://127.0.0.1:8080)
  API_TOKEN       bearer token: the operator token or a partner API key (required)
  POLL_SECONDS    seconds between polls (default 2)
  TIMEOUT_SECONDS give up after this long (default 1800)
Needs curl and python3 (to read JSON).
USAGE
}

if [[ ${1:-} == "-h" || ${1:-} == "--help" ]]; then
  usage
  exit 0
fi
if [[ $# -ne 1 ]]; then
  usage >&2
  exit 2
fi
: "${API_TOKEN:?API_TOKEN must be set}"
org_id=$1
base_url=${SENSO_URL:-http://127.0.0.1:8080}
poll_seconds=${POLL_SECONDS:-2}
timeout_seconds=${TIMEOUT_SECONDS:-1800}

api() {
  local response
  if ! response=$(curl --silent --show-error --fail-with-body \
    --header "Authorization: Bearer ${API_TOKEN}" \
    --header "Content-Type: application/json" "$@"); then
    echo "request failed: ${response}" >&2
    return 1
  fi
  printf '%s\n' "$response"
}

field() {
  python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

accepted=$(api --request POST --data '{"triggered_by": "evaluate-org.sh"}' \
  "${base_url}/orgs/${org_id}/evaluations")
batch_id=$(field batch_id <<<"$accepted")
echo "batch ${batch_id}: $(field total_runs <<<"$accepted") runs, existing=$(field is_existing <<<"$accepted")"

deadline=$((SECONDS + timeout_seconds))
last=""
while :; do
  batch=$(api "${base_url}/batches/${batch_id}")
  status=$(field status <<<"$batch")
  line="${status} $(field completed_runs <<<"$batch")/$(field total_runs <<<"$batch") completed, $(field failed_runs <<<"$batch") failed"
  [[ $line != "$last" ]] && echo "$line"
  last=$line
  case $status in
    completed) exit 0 ;;
    failed | cancelled)
      echo "error: $(field error <<<"$batch")" >&2
      exit 1
      ;;
  esac
  if ((SECONDS >= deadline)); then
    echo "gave up after ${timeout_seconds}s" >&2
    exit 1
  fi
  sleep "$poll_seconds"
done
