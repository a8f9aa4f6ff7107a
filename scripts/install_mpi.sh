#!/usr/bin/env bash
# Installs what the cargo feature `mpi` needs on Debian or Ubuntu: Open MPI (mpirun and the
# library), its headers, and libclang for the bindings' generator. Does nothing when they are
# already there. Needs root, or sudo.
set -euo pipefail
if command -v mpirun >/dev/null && command -v mpicc >/dev/null &&
    ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then
    echo "install_mpi: Open MPI and libclang are already installed"
    exit 0
fi
as_root=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install_mpi: needs root or sudo" >&2; exit 1; }
    as_root=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
"${as_root[@]}" apt-get install -y -q openmpi-bin libopenmpi-dev libclang-dev
