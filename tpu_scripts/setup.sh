#!/usr/bin/env bash
# Install JAX for TPU and logos_jax on every worker, and mount the bucket at /mnt/logos (gcsfuse)
# so run_dir / init_from / data paths are shared by all hosts.
# Usage: tpu_scripts/setup.sh --name NAME --zone ZONE --bucket BUCKET [--source PIP_SPEC] [--dry-run]
#   PIP_SPEC: what to pip install (default: the git repo given by LOGOS_REPO, or "logos_jax").
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common "$@"
BUCKET=""
SOURCE="${LOGOS_REPO:+git+$LOGOS_REPO}"
SOURCE="${SOURCE:-logos_jax}"
set -- "${REST[@]+"${REST[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bucket) BUCKET="$2"; shift 2 ;;
    --source) SOURCE="$2"; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
[[ -n "$BUCKET" ]] || die "--bucket is required (the GCS bucket holding runs, models and corpora)"
INSTALL="python3 -m pip install -U \"jax[tpu]\" \"$SOURCE\" && mkdir -p ~/$REMOTE_DIR"
MOUNT="sudo mkdir -p /mnt/logos && sudo chown \$USER /mnt/logos && (mountpoint -q /mnt/logos || gcsfuse --implicit-dirs $BUCKET /mnt/logos)"
echo "# install jax[tpu] + $SOURCE on all workers of $TPU_NAME"
on_workers all "$INSTALL"
echo "# mount gs://$BUCKET at /mnt/logos on all workers"
on_workers all "$MOUNT"
