#!/usr/bin/env bash
# Opt-in smoke build (not in CI): build the Dockerfile with podman on a machine that reaches no
# container registry, then run `ppodd --help` and the demo config inside the image. Root only.
#
#   containers/smoke-build.sh            heavy (a few GB, minutes): run it under
#   flock /tmp/ppodd-heavy.lock containers/smoke-build.sh
#
# The base image is made here: a Debian rootfs from debootstrap, `podman import`ed, plus a stand-in
# for pytorch/pytorch (torch and torchvision at pyproject's pins in /opt/conda). That stand-in is
# passed as BASE_IMAGE, so the Dockerfile itself is built unchanged.
#
# Environment:
#   WORK         scratch folder, kept for reuse (default /var/tmp/ppodd-smoke); podman's storage lives there
#   MIRROR       Debian mirror for debootstrap (default: the first URI of this machine's apt sources)
#   SUITE        Debian suite of the base (default bookworm: Python 3.11, as torch's cp311 wheels need)
#   LOCAL_INDEX  folder holding a PEP 503 index at simple/ with torch wheels, mounted read-only
#                into the base build (default /opt/pypi-more when it exists; else PyPI)
#   CA_BUNDLE    CA bundle mounted for pip (default /etc/ssl/certs/ca-certificates.crt)
#   OCI=1        also save the image as WORK/ppodd-VERSION.oci.tar (input of containers/sif-from-docker.sh)
# The images stay in WORK/storage, so a second run rebuilds only what changed; rm -rf WORK frees it.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${WORK:-/var/tmp/ppodd-smoke}
SUITE=${SUITE:-bookworm}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
LOCAL_INDEX=${LOCAL_INDEX:-$([ -d /opt/pypi-more/simple ] && echo /opt/pypi-more || true)}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
TORCH=$(sed -n 's/.*"torch==\([^"]*\)".*/\1/p' pyproject.toml)
TORCHVISION=$(sed -n 's/.*"torchvision==\([^"]*\)".*/\1/p' pyproject.toml)
DEBIAN_IMAGE=localhost/ppodd-smoke/debian-py:$SUITE
BASE_IMAGE=localhost/ppodd-smoke/torch-base:$TORCH
IMAGE=localhost/ppodd:$VERSION
LOG=$WORK/smoke.log

[ "$(id -u)" = 0 ] || { echo "smoke-build: needs root (debootstrap, podman storage)" >&2; exit 1; }
mkdir -p "$WORK"
: > "$LOG"
say() { echo "smoke-build: $*" | tee -a "$LOG"; }
step_start=0
step() { step_start=$(date +%s); say "== $*"; }
done_step() { say "   took $(( $(date +%s) - step_start )) s"; }

if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null || ! command -v runc >/dev/null; then
  step "installing podman, runc, debootstrap (apt)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    podman runc uidmap fuse-overlayfs debootstrap >> "$LOG" 2>&1
  done_step
fi
if [ -z "${MIRROR:-}" ]; then
  MIRROR=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 1p)
  [ -n "$MIRROR" ] || MIRROR=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
fi

# Daemonless podman in this kind of sandbox: runc (crun refuses hybrid cgroups), cgroupfs, and
# ulimits within the hard limits (no CAP_SYS_RESOURCE to raise them). Private storage under WORK.
pod() {
  podman --root "$WORK/storage" --runroot "$WORK/run" --runtime runc --cgroup-manager cgroupfs "$@"
}
ULIMITS=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

total_start=$(date +%s)
if ! pod image exists "$DEBIAN_IMAGE"; then
  [ -n "${MIRROR:-}" ] || { echo "smoke-build: no Debian mirror found; set MIRROR" >&2; exit 1; }
  step "debootstrap $SUITE (minbase + python3, venv, CA certificates)"
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$WORK/rootfs" "$MIRROR" >> "$LOG" 2>&1
  done_step
  step "podman import the rootfs as $DEBIAN_IMAGE"
  tar -C "$WORK/rootfs" -c . | pod import - "$DEBIAN_IMAGE" >> "$LOG" 2>&1
  rm -rf "$WORK/rootfs"
  done_step
fi

if ! pod image exists "$BASE_IMAGE"; then
  step "stand-in for pytorch/pytorch: torch==$TORCH torchvision==$TORCHVISION in /opt/conda"
  ctx=$WORK/base-context
  mkdir -p "$ctx"
  index_args=()
  mounts=(-v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
  if [ -n "$LOCAL_INDEX" ]; then
    index_args=(--extra-index-url "file://$LOCAL_INDEX/simple")
    mounts+=(-v "$LOCAL_INDEX:$LOCAL_INDEX:ro")
  fi
  cat > "$ctx/Containerfile" <<CONTAINERFILE
FROM $DEBIAN_IMAGE
RUN python3 -m venv /opt/conda && /opt/conda/bin/pip install --no-cache-dir ${index_args[*]} torch==$TORCH torchvision==$TORCHVISION
ENV PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CONTAINERFILE
  pod build --network host "${ULIMITS[@]}" "${mounts[@]}" -t "$BASE_IMAGE" "$ctx" >> "$LOG" 2>&1
  done_step
fi

step "podman build the Dockerfile with BASE_IMAGE=$BASE_IMAGE"
pod build --network host "${ULIMITS[@]}" -v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro" \
  --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" "$REPO" >> "$LOG" 2>&1
done_step
say "image size: $(pod image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')"
say "user, entrypoint: $(pod image inspect --format '{{.Config.User}} {{.Config.Entrypoint}}' "$IMAGE")"

step "ppodd --help inside the image"
pod run --rm --network none "${ULIMITS[@]}" "$IMAGE" --help > "$WORK/help.txt" 2>&1
cat "$WORK/help.txt" >> "$LOG"
say "$(grep -m1 'Usage: ppodd' "$WORK/help.txt")"
done_step

step "versions inside the image vs this checkout"
inside=$(pod run --rm --network none "${ULIMITS[@]}" --entrypoint python3 "$IMAGE" -c \
  'import ppodd, submitit, torch; print(ppodd.__version__, submitit.__version__, torch.__version__)')
say "inside: ppodd submitit torch = $inside; pyproject: ppodd $VERSION, torch $TORCH"
[ "${inside%% *}" = "$VERSION" ] || { say "FAIL: ppodd version differs"; exit 1; }
done_step

step "ppodd run --config configs/demo.yaml inside the image (as uid 1000, results bound in)"
results=$WORK/results
rm -rf "$results"
install -d -o 1000 -g 1000 "$results"
pod run --rm --network none "${ULIMITS[@]}" -v "$REPO/configs:/configs:ro" -v "$results:/results" \
  "$IMAGE" run --config /configs/demo.yaml --set threads=2 --out /results >> "$LOG" 2>&1
done_step
say "result: $(cd "$results" && ls ./*.h5)"
grep '"event": "run_done"' "$LOG" | tail -1 || true

if [ "${OCI:-0}" = 1 ]; then
  step "podman save the image as an OCI archive (for containers/sif-from-docker.sh)"
  pod save --format oci-archive -o "$WORK/ppodd-$VERSION.oci.tar" "$IMAGE" >> "$LOG" 2>&1
  say "$WORK/ppodd-$VERSION.oci.tar: $(du -h "$WORK/ppodd-$VERSION.oci.tar" | cut -f1)"
  done_step
fi
say "OK in $(( $(date +%s) - total_start )) s; full log $LOG"
