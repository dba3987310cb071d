#!/usr/bin/env bash
# Follow the training log of one worker (worker 0 writes metrics; others log errors); --job sample:
# the log of sample.sh's job instead.
# Usage: tpu_scripts/logs.sh --name NAME --zone ZONE [--worker 0] [--lines 100] [--job train|sample] [--dry-run]
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common "$@"
WORKER=0
LINES=100
JOB=train
set -- "${REST[@]+"${REST[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --worker) WORKER="$2"; shift 2 ;;
    --lines) LINES="$2"; shift 2 ;;
    --job) JOB="$2"; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
[[ "$JOB" == train || "$JOB" == sample ]] || die "--job must be train or sample"
echo "# tail the $JOB log on worker $WORKER of $TPU_NAME"
on_workers "$WORKER" "tail -n $LINES -f ~/$REMOTE_DIR/$JOB.log"
