#!/usr/bin/env bash
# Turn the image built from the Dockerfile into an Apptainer .sif.
#
#   containers/sif-from-docker.sh [IMAGE] [OUT.sif]
#
# IMAGE defaults to localhost/ppodd:VERSION (what `podman build -t localhost/ppodd:VERSION .` or
# containers/smoke-build.sh makes). It is read from a running Docker daemon
# when there is one, else saved from podman's storage as an OCI archive (set PODMAN_ARGS for
# extra podman options, e.g. "--root /var/tmp/ppodd-smoke/storage"). IMAGE may also be an
# existing OCI or Docker archive file (.tar). The Docker ENTRYPOINT becomes the runscript.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
image=${1:-localhost/ppodd:$version}
out=${2:-ppodd-$version.sif}
apptainer=$(command -v apptainer || command -v singularity || true)
[ -n "$apptainer" ] || { echo "sif-from-docker: no apptainer (or singularity) on PATH" >&2; exit 1; }
start=$(date +%s)
if [ -f "$image" ]; then
  if tar -tf "$image" oci-layout >/dev/null 2>&1; then
    source="oci-archive://$(realpath "$image")"
  else
    source="docker-archive://$(realpath "$image")"
  fi
  "$apptainer" build "$out" "$source"
elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  "$apptainer" build "$out" "docker-daemon://$image"
elif command -v podman >/dev/null; then
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/sif-from-docker.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # shellcheck disable=SC2086  # PODMAN_ARGS is a list of words on purpose
  podman ${PODMAN_ARGS:-} save --format oci-archive -o "$tmp/image.tar" "$image"
  "$apptainer" build "$out" "oci-archive://$tmp/image.tar"
else
  echo "sif-from-docker: $image is no archive file, and neither a Docker daemon nor podman is here" >&2
  exit 1
fi
echo "sif-from-docker: $out ($(du -h "$out" | cut -f1)) in $(( $(date +%s) - start )) s"
"$apptainer" exec "$out" python3 -c 'import ppodd, submitit; print("sif-from-docker: ppodd", ppodd.__version__, "submitit", submitit.__version__)'
