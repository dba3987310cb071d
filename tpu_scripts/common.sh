#!/usr/bin/env bash
# Shared helpers for the tpu_scripts: argument parsing and dry-run execution.
# Sourced by the other scripts; not run directly.

DRY_RUN=0
TPU_NAME="${TPU_NAME:-}"
ZONE="${ZONE:-}"
PROJECT="${PROJECT:-}"
REMOTE_DIR="${REMOTE_DIR:-logos}"   # on each worker, relative to $HOME

# quote ARG: the argument as a shell word (single-quoted only when it needs to be).
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./=:@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# run CMD...: print the command (shell-quoted), then run it unless --dry-run was given.
run() {
  local arg line="+"
  for arg in "$@"; do
    line+=" $(quote "$arg")"
  done
  echo "$line"
  if [[ "$DRY_RUN" -eq 0 ]]; then
    "$@"
  fi
}

die() {
  echo "error: $*" >&2
  exit 2
}

# The gcloud flags every tpu-vm command needs: TPU_FLAGS (name + zone), ZONE_FLAGS (zone only).
tpu_flags() {
  [[ -n "$TPU_NAME" ]] || die "--name is required (or set TPU_NAME)"
  [[ -n "$ZONE" ]] || die "--zone is required (or set ZONE)"
  ZONE_FLAGS=("--zone=$ZONE")
  if [[ -n "$PROJECT" ]]; then
    ZONE_FLAGS+=("--project=$PROJECT")
  fi
  TPU_FLAGS=("$TPU_NAME" "${ZONE_FLAGS[@]}")
}

# on_workers WORKER CMD: run a shell command on one worker (0, 1, ...) or on "all" of them.
on_workers() {
  local worker="$1" command="$2"
  tpu_flags
  run gcloud compute tpus tpu-vm ssh "${TPU_FLAGS[@]}" "--worker=$worker" "--command=$command"
}

# parse_common "$@": handles --name/--zone/--project/--dry-run; leaves the rest in REST.
parse_common() {
  REST=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --name) TPU_NAME="$2"; shift 2 ;;
      --zone) ZONE="$2"; shift 2 ;;
      --project) PROJECT="$2"; shift 2 ;;
      --dry-run) DRY_RUN=1; shift ;;
      *) REST+=("$1"); shift ;;
    esac
  done
}

# parse_config_only: after parse_common, takes --config FILE from REST (nothing else allowed) into CONFIG.
# shellcheck disable=SC2034  # CONFIG is read by the sourcing script
parse_config_only() {
  CONFIG=""
  set -- "${REST[@]+"${REST[@]}"}"
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --config) CONFIG="$2"; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
}
