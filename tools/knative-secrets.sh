#!/usr/bin/env bash
# Creates the Secrets config/knative's functions and MySQL read, once: a
# Secret that exists is never changed, because MySQL keeps the password its
# data directory was created with, and the events' senders (the Rucio
# bridge) keep the secret they sign with. The password is random and
# URL-safe (the functions put it into DATABASE_URL); the events secret is
# 32 random bytes in hex (EVENT_HMAC_SECRET_FILE; rotating it: README,
# Authentication and authorization). The hub token comes from the
# environment, never from the command line (make and ps would show it), and
# every value goes to kubectl in a private file, not as an argument. Usage
# (KUBECTL defaults to kubectl):
#   JUPYTERHUB_API_TOKEN=... tools/knative-secrets.sh
set -euo pipefail
kubectl=${KUBECTL:-kubectl}
ns=skao-staging
values=$(mktemp -d)
trap 'rm -rf "$values"' EXIT
create() { # name, then key=value pairs
	local name=$1
	shift
	if $kubectl -n "$ns" get secret "$name" >/dev/null 2>&1; then
		echo "secret $ns/$name exists: kept"
		return
	fi
	local args=() kv
	for kv in "$@"; do
		printf %s "${kv#*=}" >"$values/${kv%%=*}"
		args+=(--from-file="${kv%%=*}=$values/${kv%%=*}")
	done
	$kubectl -n "$ns" create secret generic "$name" "${args[@]}"
	$kubectl -n "$ns" label secret "$name" app.kubernetes.io/part-of=skao-staging-service >/dev/null
	rm -f "$values"/*
}
$kubectl get namespace "$ns" >/dev/null 2>&1 || $kubectl create namespace "$ns"
create staging-mysql database=staging username=staging "password=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
create staging-jupyterhub "token=${JUPYTERHUB_API_TOKEN:-}"
create staging-events "hmac-secret=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
