#!/usr/bin/env bash
# Start `logos train` on every worker (in the background, logging to ~/logos/train.log, pid in
# ~/logos/train.pid). JAX finds the coordinator and process ids on TPU VMs by itself.
# Usage: tpu_scripts/launch.sh --name NAME --zone ZONE --config logos-1b.yaml [--dry-run] [-- KEY=VALUE ...]
#   --config names a file already copied to ~/logos/ (see copy_config.sh); extra KEY=VALUE are overrides.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ARGS=()
OVERRIDES=()
while [[ $# -gt 0 ]]; do
  if [[ "$1" == "--" ]]; then
    shift
    OVERRIDES=("$@")
    break
  fi
  ARGS+=("$1")
  shift
done
parse_common "${ARGS[@]+"${ARGS[@]}"}"
parse_config_only
[[ -n "$CONFIG" ]] || die "--config is required"
QUOTED=""
for item in "${OVERRIDES[@]+"${OVERRIDES[@]}"}"; do
  QUOTED+=" $(printf '%q' "$item")"
done
TRAIN="cd ~/$REMOTE_DIR && nohup logos train --config $(basename "$CONFIG") distributed.enabled=true$QUOTED > train.log 2>&1 & echo \$! > ~/$REMOTE_DIR/train.pid"
echo "# launch logos train on all workers of $TPU_NAME"
on_workers all "$TRAIN"
