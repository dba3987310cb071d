#!/usr/bin/env bash
#SBATCH --job-name=logos-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=48:00:00
#SBATCH --output=logos-train-%j.out
# Multi-node GPU training under SLURM: one `logos train` process per node, each driving its node's
# GPUs; node 0 hosts the jax.distributed coordinator. run_dir must be on a filesystem all nodes share.
# Submit:  sbatch tpu_scripts/slurm_gpu.sh --config configs/train/logos-8b.yaml [KEY=VALUE ...]
# Preview: tpu_scripts/slurm_gpu.sh --dry-run --config configs/train/logos-8b.yaml [KEY=VALUE ...]
# Sampling: everything after --sample goes to `logos sample --distributed` (one process per node; each
# samples its slice of the inputs into <out>.part-<i>-of-<n>, node 0 merges them into --out, which
# must be on the shared filesystem; submitting the same command again resumes):
#   sbatch --job-name=logos-sample tpu_scripts/slurm_gpu.sh --sample --task retro --ckpt /shared/ckpt \
#       --input /shared/retro.jsonl --out /shared/retro_out.jsonl
set -euo pipefail
DRY_RUN=0
CONFIG=""
PORT="${LOGOS_PORT:-12355}"
OVERRIDES=()
SAMPLE=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --config) CONFIG="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --sample) SAMPLE=1; shift; OVERRIDES=("$@"); break ;;
    *) OVERRIDES+=("$1"); shift ;;
  esac
done
if [[ "$SAMPLE" -eq 1 ]]; then
  COMMAND=(logos sample --distributed --no-progress "${OVERRIDES[@]+"${OVERRIDES[@]}"}")
  ARGS="--sample ${OVERRIDES[*]+"${OVERRIDES[*]}"}"
elif [[ -z "$CONFIG" ]]; then
  echo "error: --config is required (or --sample and logos sample's options)" >&2
  exit 2
else
  COMMAND=(logos train --config "$CONFIG" distributed.enabled=true "${OVERRIDES[@]+"${OVERRIDES[@]}"}")
  ARGS="--config $CONFIG ${OVERRIDES[*]+"${OVERRIDES[*]}"}"
fi

if [[ "$DRY_RUN" -eq 1 ]]; then
  NODES="2 (from #SBATCH --nodes)"
  COORDINATOR="<first node of the allocation>:$PORT"
  NTASKS="<SLURM_NTASKS>"
  echo "# submit: one task per node"
  echo "+ sbatch $0 $ARGS"
else
  if [[ -z "${SLURM_JOB_ID:-}" ]]; then
    echo "error: submit this script with sbatch (or preview it with --dry-run)" >&2
    exit 2
  fi
  NODES="$SLURM_JOB_NUM_NODES"
  COORDINATOR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1):$PORT"
  NTASKS="$SLURM_NTASKS"
fi
echo "# on each of $NODES nodes: ${COMMAND[*]:0:2}, coordinator $COORDINATOR, process id = SLURM_PROCID"
echo "+ srun --kill-on-bad-exit=1 env LOGOS_COORDINATOR=$COORDINATOR LOGOS_NUM_PROCESSES=$NTASKS LOGOS_PROCESS_ID=\$SLURM_PROCID ${COMMAND[*]}"
if [[ "$DRY_RUN" -eq 0 ]]; then
  export LOGOS_COORDINATOR="$COORDINATOR" LOGOS_NUM_PROCESSES="$NTASKS"
  # shellcheck disable=SC2016  # $SLURM_PROCID differs per task: each task's shell expands it
  srun --kill-on-bad-exit=1 bash -c 'export LOGOS_PROCESS_ID="$SLURM_PROCID"; exec "$@"' logos-job "${COMMAND[@]}"
fi
