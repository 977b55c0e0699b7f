#!/usr/bin/env bash
# Build the Apptainer image from Apptainer.def (the base comes from a registry, as its From: says).
#
#   containers/build-sif.sh [OUT.sif]        default OUT: ppodd-VERSION.sif in the repository root
#
# Run as root, or as a user allowed --fakeroot (set FAKEROOT=1). The build runs the def file's
# %test (ppodd --help) unless NOTEST=1. Needs apptainer 1.1 or newer (or SingularityCE).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
out=${1:-ppodd-$version.sif}
apptainer=$(command -v apptainer || command -v singularity || true)
[ -n "$apptainer" ] || { echo "build-sif: no apptainer (or singularity) on PATH; try 'module load apptainer'" >&2; exit 1; }
args=(build)
[ "${FAKEROOT:-0}" = 1 ] && args+=(--fakeroot)
[ "${NOTEST:-0}" = 1 ] && args+=(--notest)
start=$(date +%s)
"$apptainer" "${args[@]}" "$out" Apptainer.def
echo "build-sif: $out ($(du -h "$out" | cut -f1)) in $(( $(date +%s) - start )) s"
"$apptainer" exec "$out" python3 -c 'import ppodd, submitit; print("build-sif: ppodd", ppodd.__version__, "submitit", submitit.__version__)'
