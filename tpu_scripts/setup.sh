#!/usr/bin/env bash
# Install JAX for TPU and logos_jax on every worker, and mount the bucket at /mnt/logos (gcsfuse)
# so run_dir / init_from / data paths are shared by all hosts.
# Usage: tpu_scripts/setup.sh --name NAME --zone ZONE --bucket BUCKET [--repo GIT_URL [--ref REF]] [--dry-run]
#   default: this checkout's committed HEAD (git archive), copied to ~/logos/src on every worker;
#   --repo (or LOGOS_REPO): a git clone of GIT_URL (at REF) there instead.
# logos_jax is not on the package index: it is installed editable from ~/logos/src, whose configs/
# hold the presets (`model: logos-1b`) that training reads.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common "$@"
BUCKET=""
REPO="${LOGOS_REPO:-}"
REF=""
set -- "${REST[@]+"${REST[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bucket) BUCKET="$2"; shift 2 ;;
    --repo) REPO="$2"; shift 2 ;;
    --ref) REF="$2"; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
[[ -n "$BUCKET" ]] || die "--bucket is required (the GCS bucket holding runs, models and corpora)"
[[ -z "$REF" || -n "$REPO" ]] || die "--ref needs --repo (the checkout is shipped at its HEAD)"
tpu_flags
# shellcheck disable=SC2088  # expanded by the worker's shell, not here
SRC="~/$REMOTE_DIR/src"
if [[ -n "$REPO" ]]; then
  FETCH="rm -rf $SRC && git clone --depth 1 ${REF:+--branch $(quote "$REF") }$(quote "$REPO") $SRC"
  echo "# clone $REPO${REF:+ at $REF} into $SRC on all workers"
else
  CHECKOUT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  ARCHIVE="${TMPDIR:-/tmp}/logos_jax-src.tar.gz"
  echo "# ship $CHECKOUT (committed HEAD) to $SRC on all workers"
  run git -C "$CHECKOUT" archive --format=tar.gz -o "$ARCHIVE" HEAD
  on_workers all "mkdir -p ~/$REMOTE_DIR"
  run gcloud compute tpus tpu-vm scp "${ZONE_FLAGS[@]}" --worker=all "$ARCHIVE" "$TPU_NAME:~/$REMOTE_DIR/"
  FETCH="rm -rf $SRC && mkdir -p $SRC && tar -xzf ~/$REMOTE_DIR/logos_jax-src.tar.gz -C $SRC"
fi
INSTALL="mkdir -p ~/$REMOTE_DIR && $FETCH && python3 -m pip install -U \"jax[tpu]\" -e $SRC"
MOUNT="sudo mkdir -p /mnt/logos && sudo chown \$USER /mnt/logos && (mountpoint -q /mnt/logos || gcsfuse --implicit-dirs $BUCKET /mnt/logos)"
echo "# install jax[tpu] + logos_jax (editable, from $SRC) on all workers of $TPU_NAME"
on_workers all "$INSTALL"
echo "# mount gs://$BUCKET at /mnt/logos on all workers"
on_workers all "$MOUNT"
