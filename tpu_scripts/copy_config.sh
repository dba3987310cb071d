#!/usr/bin/env bash
# Copy a train config YAML to ~/logos/ on every worker.
# Usage: tpu_scripts/copy_config.sh --name NAME --zone ZONE --config configs/train/logos-1b.yaml [--dry-run]
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common "$@"
parse_config_only
[[ -f "$CONFIG" ]] || die "--config FILE is required and must exist (got '$CONFIG')"
tpu_flags
echo "# copy $CONFIG to ~/$REMOTE_DIR/ on all workers"
run gcloud compute tpus tpu-vm scp "${ZONE_FLAGS[@]}" --worker=all "$CONFIG" "$TPU_NAME:~/$REMOTE_DIR/"
