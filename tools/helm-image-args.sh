#!/usr/bin/env bash
# Prints the helm --set arguments that install the images `ko build
# --image-refs` recorded (one reference a line, such as
# registry.example.org/skao/stage:latest@sha256:...), pinned by digest:
# a rebuilt image has a new digest, so the pods roll. Usage:
#   tools/helm-image-args.sh IMAGE_REFS
set -euo pipefail
refs=$1
while read -r ref; do
	[ -n "$ref" ] || continue
	repo=${ref%%@*}
	digest=${ref#*@}
	if [ "$repo" = "$ref" ]; then
		echo "$refs: $ref has no digest (@sha256:...)" >&2
		exit 1
	fi
	# Drop a tag, but not a registry port: a tag follows the last slash.
	last=${repo##*/}
	if [ "${last%:*}" != "$last" ]; then repo=${repo%:*} && last=${last%:*}; fi
	case $last in
	stage) key=image ;;
	logs | jupyter) key=functions.$last.image ;;
	*) echo "$refs: $ref is not the image of stage, logs or jupyter" >&2 && exit 1 ;;
	esac
	printf -- '--set %s.repository=%s --set %s.digest=%s ' "$key" "$repo" "$key" "$digest"
done <"$refs"
