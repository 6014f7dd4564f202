#!/usr/bin/env bash
# mpirun with what this project's machines need: permission to run as root (containers, CI) and
# more ranks than cores allowed. Usage: scripts/mpirun.sh -np 2 build/kvshrink generate ...
set -euo pipefail
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
exec mpirun --oversubscribe "$@"
