#!/usr/bin/env bash
# Stop training on every worker (kills the pid recorded by launch.sh); --delete also deletes the slice.
# The last committed checkpoint stays in run_dir: launch.sh again resumes from it. --job sample stops
# sample.sh's job instead (its part files stay: sample.sh again resumes them).
# Usage: tpu_scripts/stop.sh --name NAME --zone ZONE [--job train|sample] [--delete] [--dry-run]
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common "$@"
DELETE=0
JOB=train
set -- "${REST[@]+"${REST[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --delete) DELETE=1; shift ;;
    --job) JOB="$2"; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
[[ "$JOB" == train || "$JOB" == sample ]] || die "--job must be train or sample"
echo "# stop logos $JOB on all workers of $TPU_NAME"
on_workers all "test -f ~/$REMOTE_DIR/$JOB.pid && kill \$(cat ~/$REMOTE_DIR/$JOB.pid) || true"
if [[ "$DELETE" -eq 1 ]]; then
  tpu_flags
  echo "# delete TPU VM slice $TPU_NAME"
  run gcloud compute tpus tpu-vm delete "${TPU_FLAGS[@]}" --quiet
fi
