#!/usr/bin/env bash
# shellcheck disable=SC2016  # the hooks' "$1" (the new root) is expanded by mmdebstrap, not here
# A STAND-IN for the official `python:3.11-slim` base image, for machines that cannot pull it
# (CI here: image registries are not reachable). It is NOT the official image and is never
# used when the real one can be pulled: `.ci/image` tries `docker pull python:3.11-slim` first
# and only calls this script when that fails. docker/Dockerfile is unchanged either way.
#
# What it builds: Debian bookworm (minbase, the same Debian release as python:3.11-slim) with
# Debian's python3.11, and `python3 -m venv /usr/local`, so /usr/local/bin/python and
# /usr/local/bin/pip exist and `pip install` installs into /usr/local as in the official image.
# It carries this host's CA bundle, apt settings and pip index settings, so that apt-get and
# pip inside `docker build` reach the same package mirrors as the host does.
#
#   .ci/standin-base.sh [TAG]        (default python:3.11-slim; needs root, mmdebstrap, docker)
#
# Cache: the image is labelled with a hash of this recipe and of the host settings it copies;
# when an image with that label already exists under TAG, nothing is rebuilt.
set -euo pipefail
tag=${1:-python:3.11-slim}
mirror=${STANDIN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${STANDIN_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# pip settings for the build: the host's CA bundle and index (file:// and local find-links
# locations do not exist inside the build and are left out).
{
    echo "[global]"
    echo "cert = /etc/ssl/certs/ca-certificates.crt"
    index=${PIP_INDEX_URL:-$(pip3 config get global.index-url 2>/dev/null || true)}
    extra=${PIP_EXTRA_INDEX_URL:-$(pip3 config get global.extra-index-url 2>/dev/null || true)}
    [ -n "$index" ] && echo "index-url = $index"
    # shellcheck disable=SC2086  # split the list
    extra=$(printf '%s\n' $extra | grep -v '^file:' | tr '\n' ' ' | sed 's/ *$//' || true)
    [ -n "$extra" ] && echo "extra-index-url = $extra"
    if [ -n "${PIP_TRUSTED_HOST:-}" ]; then echo "trusted-host = $PIP_TRUSTED_HOST"; fi
} > "$work/pip.conf"
# apt settings of the host that make its mirror usable (e.g. a snapshot mirror's old Release files)
cat /etc/apt/apt.conf.d/99artifact-registry 2>/dev/null > "$work/99host" || true
cp /etc/ssl/certs/ca-certificates.crt "$work/ca-certificates.crt"
# as Debian's docker images (and so python:3.11-slim): apt deletes downloaded packages and its
# binary caches after every install, so they never end up in a layer
cat > "$work/docker-clean" <<'CLEAN'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CLEAN

key=$(cat "$0" "$work/pip.conf" "$work/docker-clean" "$work/99host" "$work/ca-certificates.crt" | sha256sum | cut -c1-16)
if [ "$(docker image inspect -f '{{ index .Config.Labels "org.satosa-orcid.standin" }}' "$tag" 2>/dev/null || true)" = "$key" ]; then
    echo "stand-in $tag ($key) is cached"
    exit 0
fi

echo "building the stand-in $tag ($key) with mmdebstrap"
nice mmdebstrap --quiet --variant=minbase --mode=root \
    --aptopt="$work/99host" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --include=python3.11,python3.11-venv,python3-pip-whl,python3-setuptools-whl,ca-certificates,netbase,tzdata \
    --customize-hook="cp '$work/99host' \"\$1/etc/apt/apt.conf.d/99host\"" \
    --customize-hook="cp '$work/docker-clean' \"\$1/etc/apt/apt.conf.d/docker-clean\"" \
    --customize-hook="cp '$work/ca-certificates.crt' \"\$1/etc/ssl/certs/ca-certificates.crt\"" \
    --customize-hook="cp '$work/pip.conf' \"\$1/etc/pip.conf\"" \
    --customize-hook='chroot "$1" python3.11 -m venv /usr/local' \
    --customize-hook='chroot "$1" ln -sf python3.11 /usr/local/bin/python3' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/cache/apt/archives/*.deb "$1"/var/log/apt "$1"/var/log/dpkg.log' \
    bookworm "$work/rootfs.tar" \
    "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $security bookworm-security main"

docker import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --change "LABEL org.satosa-orcid.standin=$key" \
    --change 'LABEL org.opencontainers.image.description="stand-in for python:3.11-slim built by .ci/standin-base.sh (Debian bookworm python3.11), not the official image"' \
    "$work/rootfs.tar" "$tag" >/dev/null
echo "stand-in $tag built: $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
