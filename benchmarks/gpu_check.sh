#!/usr/bin/env bash
# The GPU check on a fresh, offline GPU machine: install this checkout over the machine's own
# torch (nothing from the network), add the wheels carried in wheels/ (PyAV), then run
# `python -m benchmarks.gpu_check` with the arguments given (see docs/gpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if compgen -G "wheels/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/gpu-check-site wheels/*.whl
    export PYTHONPATH=/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! "$PY" -m pip install -q --no-deps --no-index --no-build-isolation -e . ; then
    echo "gpu_check.sh: editable install failed; running from the checkout" >&2
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
"$PY" -c "import av, torch; print('torch', torch.__version__, 'PyAV', av.__version__)"
exec "$PY" -m benchmarks.gpu_check "$@"
