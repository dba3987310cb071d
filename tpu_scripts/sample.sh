#!/usr/bin/env bash
# Start `logos sample --distributed` on every worker (in the background, logging to ~/logos/sample.log,
# pid in ~/logos/sample.pid). JAX finds the coordinator and process ids on TPU VMs by itself. Each
# worker samples its own slice of the inputs into <out>.part-<i>-of-<n>; worker 0 merges the parts into
# --out once every worker is done. --ckpt, --input and --out must be under /mnt/logos (the bucket
# every worker sees). Running the same command again resumes a stopped or crashed job.
# Usage: tpu_scripts/sample.sh --name NAME --zone ZONE [--dry-run] -- --task T --ckpt DIR --out FILE [...]
#   everything after -- is passed to `logos sample`.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ARGS=()
SAMPLE=()
while [[ $# -gt 0 ]]; do
  if [[ "$1" == "--" ]]; then
    shift
    SAMPLE=("$@")
    break
  fi
  ARGS+=("$1")
  shift
done
parse_common "${ARGS[@]+"${ARGS[@]}"}"
[[ ${#REST[@]} -eq 0 ]] || die "unknown option ${REST[0]} (logos sample's options go after --)"
[[ ${#SAMPLE[@]} -gt 0 ]] || die "give logos sample's options after -- (--task, --ckpt, --out, ...)"
QUOTED=""
for item in "${SAMPLE[@]}"; do
  QUOTED+=" $(printf '%q' "$item")"
done
CMD="cd ~/$REMOTE_DIR && nohup logos sample --distributed --no-progress$QUOTED > sample.log 2>&1 & echo \$! > ~/$REMOTE_DIR/sample.pid"
echo "# launch logos sample on all workers of $TPU_NAME"
on_workers all "$CMD"
