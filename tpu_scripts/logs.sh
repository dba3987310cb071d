#!/usr/bin/env bash
# Follow the training log of one worker (worker 0 writes metrics; others log errors).
# Usage: tpu_scripts/logs.sh --name NAME --zone ZONE [--worker 0] [--lines 100] [--dry-run]
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common "$@"
WORKER=0
LINES=100
set -- "${REST[@]+"${REST[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --worker) WORKER="$2"; shift 2 ;;
    --lines) LINES="$2"; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
echo "# tail the train log on worker $WORKER of $TPU_NAME"
on_workers "$WORKER" "tail -n $LINES -f ~/$REMOTE_DIR/train.log"
