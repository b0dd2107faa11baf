#!/usr/bin/env bash
# Prints the first Python 3.12 that runs here, the H200 image's version (compiled wheels are made for
# one Python version), or fails saying how to name one. For prepare_gpu_carry.sh and
# rehearse_gpu_session.sh:  PYTHON312=${PYTHON312:-$(scripts/find_python312.sh)}
for candidate in python3.12 ~/.pyenv/versions/3.12*/bin/python; do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
        command -v "$candidate"
        exit 0
    fi
done
echo "needs Python 3.12, the version of the H200 image: PYTHON312=/path/to/python3.12" >&2
exit 1
