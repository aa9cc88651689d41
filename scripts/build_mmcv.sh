#!/usr/bin/env bash
# Build mmcv 2.1.0 (the last mmcv that mmdet 3.3.0 accepts) against the installed torch and
# install it, with mmengine and mmdet. PyPI has mmcv 2.1.0 only as source, and its setup.py
# asks for C++14/17 while PyTorch 2.14's headers need C++20.
#
# The wheel is built once per machine and kept in $MMCV_WHEEL_CACHE
# (default ~/.cache/dls-cv/wheels); later runs install the cached wheel in seconds.
# The build itself takes about 16 minutes on 2 cores.
#
#   bash scripts/build_mmcv.sh          # build (or reuse) and install mmcv, then mmdet
set -euo pipefail

cache="${MMCV_WHEEL_CACHE:-$HOME/.cache/dls-cv/wheels}"
torch_version="$(python -c 'import torch; print(torch.__version__.split("+")[0])')"
# A wheel built against one torch does not load beside another: key the cache by torch.
dir="$cache/torch-$torch_version"
mkdir -p "$dir"

python -m pip install --progress-bar off "setuptools<70" wheel "mmengine==0.10.7"

wheel="$(ls "$dir"/mmcv-2.1.0-*.whl 2>/dev/null | head -n 1 || true)"
if [ -z "$wheel" ]; then
  echo "== building mmcv 2.1.0 against torch $torch_version (about 16 minutes on 2 cores)"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  python -m pip download --progress-bar off --no-deps --no-binary :all: --no-build-isolation \
    "mmcv==2.1.0" -d "$work"
  tar -xzf "$work"/mmcv-2.1.0.tar.gz -C "$work"
  src="$work/mmcv-2.1.0"
  sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$src/setup.py"
  grep -q -- '-std=c++20' "$src/setup.py" || { echo "error: $src/setup.py: no -std flag found to patch" >&2; exit 1; }
  MAX_JOBS="${MAX_JOBS:-$(nproc)}" MMCV_WITH_OPS=1 FORCE_CUDA="${FORCE_CUDA:-0}" \
    python -m pip wheel --progress-bar off --no-deps --no-build-isolation -w "$work/out" "$src"
  cp "$work"/out/mmcv-2.1.0-*.whl "$dir/"
  wheel="$(ls "$dir"/mmcv-2.1.0-*.whl | head -n 1)"
  echo "== cached $wheel"
else
  echo "== reusing $wheel"
fi

python -m pip install --progress-bar off --no-deps "$wheel"
python -m pip install --progress-bar off "mmdet==3.3.0"
python -c "import mmcv, mmdet; from mmcv.ops import modulated_deform_conv2d; print('mmcv', mmcv.__version__, 'mmdet', mmdet.__version__)"
