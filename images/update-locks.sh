#!/usr/bin/env bash
# Regenerate the pinned locks of the base image and of every statistics kit.
# The images run Debian bookworm's CPython 3.11 on x86_64 and install wheels only, so the
# locks are resolved for that target whatever the host is. A kit's requirements.in pulls in
# the base's requirements.in and is constrained by the base lock: both resolve together and
# every package they share keeps the base's version (images.py refuses a kit lock that drifts).
#
# Left out of every lock: rfc3987-syntax (and lark, which only it needs). jsonschema uses it,
# when installed, to check the "iri" format; it builds an Earley parser when imported, which
# cost about 1 s of every single-user server start. Nothing in the images validates IRIs.
#
# usage: images/update-locks.sh          (from anywhere; needs uv: pip install uv)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null || { echo "uv is missing: pip install uv" >&2; exit 2; }

compile() {
  uv pip compile "$1" -o "$2" --quiet --upgrade \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 --only-binary :all: \
    --no-emit-package rfc3987-syntax --no-emit-package lark \
    --no-header --annotation-style line
}

compile images/base/requirements.in images/base/requirements.txt
for kit in stats_kits/*; do
  [ -f "$kit/requirements.in" ] && compile "$kit/requirements.in" "$kit/requirements.txt"
done
echo "locks updated: review 'git diff -- images stats_kits' before building"
