#!/usr/bin/env bash
# Create a TPU VM slice.
# Usage: tpu_scripts/create.sh --name NAME --zone ZONE [--type v5p-32] [--version RUNTIME] [--spot]
#        [--project P] [--dry-run]
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common "$@"
TYPE="v5p-32"
VERSION="v2-alpha-tpuv5"
SPOT=0
set -- "${REST[@]+"${REST[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --type) TYPE="$2"; shift 2 ;;
    --version) VERSION="$2"; shift 2 ;;
    --spot) SPOT=1; shift ;;
    *) die "unknown option $1" ;;
  esac
done
tpu_flags
ARGS=(--accelerator-type="$TYPE" --version="$VERSION")
if [[ "$SPOT" -eq 1 ]]; then
  ARGS+=(--spot)
fi
echo "# create TPU VM slice $TPU_NAME ($TYPE, runtime $VERSION) in $ZONE"
run gcloud compute tpus tpu-vm create "${TPU_FLAGS[@]}" "${ARGS[@]}"
