#!/usr/bin/env bash
# Build the images the deploy uses, with buildah (no Docker engine needed), from docker/Dockerfile:
#   amberscan:TAG               every amberscan process (target `amberscan`)
#   amberscan-model-server:TAG  the CPU model server, OpenVINO on the TF Serving API (target
#                               `model-server`); GPU nodes run the official tensorflow/serving
# TAG is `git describe --always --dirty` unless set.
#
# The Python base: PYTHON_IMAGE when set (e.g. python:3.11-slim-bookworm on a machine that reaches
# its registry); otherwise one made here from Debian's packages, debootstrap --variant=minbase
# bookworm plus python3, python3-venv, python-is-python3 and ca-certificates, from the Debian
# mirror this machine's apt uses, kept as the local image localhost/amberscan-base:bookworm
# (REBASE=1 makes it again).
#
# What this machine needs to reach the package indexes (its CA bundle, its pip and npm
# configuration) goes to the build as secrets (docker/Dockerfile), never into a layer; the script
# checks the built images for it afterwards.
#   stack/image.sh [base]      (`make image`; `base` only makes the base image)
source "$(dirname "$0")/lib.sh"

TAG="${TAG:-$(git -C "$ROOT" describe --always --dirty)}"
BASE_IMAGE="${BASE_IMAGE:-localhost/amberscan-base:bookworm}"
BUILDAH=(buildah)
[ "$(id -u)" = 0 ] || BUILDAH=(sudo buildah)

log() { printf '[image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The Debian mirror this machine's apt uses for bookworm (and its updates and security suites),
# as "URI SUITE" lines: the base's sources are the machine's, not a name written here.
debian_sources() {
  apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(ORIGIN) $(LABEL)' 2>/dev/null \
    | awk '$3 == "Debian" && $2 ~ /^bookworm(-updates|-security)?$/ {print $1, $2}' | sort -u
}

make_base() {
  if [ -z "${REBASE:-}" ] && "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base: $BASE_IMAGE (made before; REBASE=1 makes it again)"
    return
  fi
  command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
  local sources mirror rootfs
  sources=$(debian_sources)
  mirror=$(awk '$2 == "bookworm" {print $1; exit}' <<<"$sources")
  [ -n "$mirror" ] || die "this machine's apt has no Debian bookworm source to debootstrap from"
  rootfs=$(mktemp -d "${TMPDIR:-/tmp}/amberscan-base.XXXXXX")
  trap 'rm -rf "$rootfs"' RETURN
  log "base: debootstrap --variant=minbase bookworm into $rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; die "debootstrap failed"; }
  awk '{print "deb", $1, $2, "main"}' <<<"$sources" >"$rootfs/etc/apt/sources.list"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
  local ctr
  ctr=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" copy --quiet "$ctr" "$rootfs" / >/dev/null
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/bash --label "org.opencontainers.image.description=Debian bookworm minbase with Python 3 (debootstrap)" "$ctr"
  "${BUILDAH[@]}" commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
  rm -f "$rootfs.log"
  log "base: $BASE_IMAGE made"
}

# The build secrets, from this machine's own configuration, into $SECRETS (a private temp dir).
make_secrets() {
  local ca=""
  for candidate in "${PIP_CERT:-}" "$(python3 -m pip config get global.cert 2>/dev/null || true)" \
      "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
    if [ -n "$candidate" ] && [ -s "$candidate" ]; then ca=$candidate; break; fi
  done
  if [ -n "$ca" ]; then cp "$ca" "$SECRETS/ca"; SECRET_ARGS+=(--secret "id=ca,src=$SECRETS/ca"); fi
  # pip: every setting of `pip config list` (files and PIP_* variables) in one [global] section,
  # with the CA bundle at its build-time path and local paths of this machine (find-links) left out.
  if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip config list 2>/dev/null | python3 -c '
import os, re, sys
settings = {}
for line in sys.stdin:
    match = re.match(r"^([^.]*)\.([\w-]+)=(.*)$", line.strip())
    if not match:
        continue
    key, value = match[2], match[3].strip("\x27\"")
    if key == "cert":
        value = "/run/secrets/ca"
    elif value.startswith("/"):
        continue
    settings[key] = value
print("[global]")
for key, value in settings.items():
    print(f"{key} = {value}")
' >"$SECRETS/pip.conf"
    SECRET_ARGS+=(--secret "id=pipconf,src=$SECRETS/pip.conf")
  fi
  # npm: the registry this machine's npm uses, and the CA bundle.
  if command -v npm >/dev/null; then
    { echo "registry=$(npm config get registry)"; [ -z "$ca" ] || echo "cafile=/run/secrets/ca"; } >"$SECRETS/npmrc"
    SECRET_ARGS+=(--secret "id=npmrc,src=$SECRETS/npmrc")
  fi
}

# check_clean IMAGE: nothing of the build machine's configuration is in the image.
check_clean() {
  local image=$1 ctr mnt
  ctr=$("${BUILDAH[@]}" from --quiet "$image")
  mnt=$("${BUILDAH[@]}" mount "$ctr")
  local leaks=()
  [ ! -e "$mnt/run/secrets/ca" ] && [ ! -e "$mnt/run/secrets/pipconf" ] || leaks+=("a build secret under /run/secrets")
  [ ! -e "$mnt/etc/pip.conf" ] || leaks+=("/etc/pip.conf")
  [ ! -e "$mnt/home/amberscan/.npmrc" ] && [ ! -e "$mnt/root/.npmrc" ] || leaks+=("an .npmrc")
  if "${BUILDAH[@]}" inspect --type image --format '{{range .OCIv1.Config.Env}}{{println .}}{{end}}' "$image" \
      | grep -qE '^(PIP_CERT|PIP_CONFIG_FILE|PIP_INDEX_URL|NODE_EXTRA_CA_CERTS|NPM_CONFIG_)'; then
    leaks+=("a pip/npm setting in the image's environment")
  fi
  "${BUILDAH[@]}" umount "$ctr" >/dev/null
  "${BUILDAH[@]}" rm "$ctr" >/dev/null
  [ ${#leaks[@]} -eq 0 ] || die "$image holds the build machine's configuration: ${leaks[*]}"
}

build() {
  local target=$1 name=$2
  log "$name:$TAG: buildah bud --target $target (base $PYTHON_IMAGE)"
  "${BUILDAH[@]}" bud --isolation chroot --layers --target "$target" \
    --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" "${SECRET_ARGS[@]}" \
    -f "$ROOT/docker/Dockerfile" -t "localhost/$name:$TAG" "$ROOT"
  check_clean "localhost/$name:$TAG"
}

command -v buildah >/dev/null || die "buildah is not installed (apt-get install buildah)"
if [ -z "${PYTHON_IMAGE:-}" ]; then
  make_base
  PYTHON_IMAGE=$BASE_IMAGE
fi
[ "${1:-}" = base ] && exit 0

SECRETS=$(mktemp -d "${TMPDIR:-/tmp}/amberscan-secrets.XXXXXX")
trap 'rm -rf "$SECRETS"' EXIT
SECRET_ARGS=()
make_secrets

build amberscan amberscan
build model-server amberscan-model-server
"${BUILDAH[@]}" images --filter "reference=localhost/amberscan*:$TAG" >&2
log "built localhost/amberscan:$TAG and localhost/amberscan-model-server:$TAG"
