#!/usr/bin/env bash
# Build a Debian bookworm root filesystem without any image registry and import it into
# Docker as an image. Health-data hosts often have no registry access at all, so the base
# of every hdshub image is made here from Debian's own packages (debootstrap).
#
# usage: build-rootfs.sh IMAGE_TAG PACKAGES_FILE [MIRROR]
# Without MIRROR, debootstrap uses Debian's default mirror; HDS hosts pass their own.
set -euo pipefail
tag=${1:?image tag}
packages_file=${2:?packages file}
mirror=${3:-}

command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "debootstrap needs root (it creates device nodes and chroots)" >&2; exit 2; }

include=$(grep -v '^\s*#' "$packages_file" | tr -s ' \n' ',' | sed 's/^,//; s/,$//')
work=$(mktemp -d /var/tmp/hdshub-rootfs.XXXXXX)
trap 'rm -rf --one-file-system "$work"' EXIT

echo "[rootfs] debootstrap bookworm ($include)"
debootstrap --variant=minbase --include="$include" bookworm "$work/root" ${mirror:+"$mirror"} \
  > "$work/debootstrap.log" 2>&1 || { tail -40 "$work/debootstrap.log" >&2; exit 1; }

# Trim what a container never needs: apt lists, caches, docs and man pages.
chroot "$work/root" apt-get clean
rm -rf "$work/root"/var/lib/apt/lists/* "$work/root"/usr/share/doc/* "$work/root"/usr/share/man/* \
       "$work/root"/usr/share/info/* "$work/root"/var/cache/debconf/*-old "$work/root"/var/log/*
# The notebook user, uid 1000, with no password and no shell login.
chroot "$work/root" useradd --uid 1000 --user-group --create-home --shell /bin/bash jovyan

echo "[rootfs] docker import -> $tag"
tar -C "$work/root" --numeric-owner -c . | docker import \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
echo "[rootfs] done"
