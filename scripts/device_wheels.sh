#!/usr/bin/env bash
# Wheels for a GPU machine that has PyTorch but no package index (the issue-15 device): what romer needs and
# that image lacks (pydantic and its three helpers) or holds at another version (transformers), for Python 3.12
# on x86-64 Linux. Run here, where pip reaches the index; carry .whl to the GPU machine and there run
#
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
#
# romer then imports from the checkout itself (no install, no build backend needed offline).
#   scripts/device_wheels.sh [DIR]     (default .whl)
set -euo pipefail
DIR=${1:-.whl}
PY=${PYTHON:-python3}
versions=$("$PY" - <<'PY'
from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in ("pydantic", "pydantic_core", "annotated-types", "typing-inspection",
                                               "typing_extensions", "transformers", "huggingface-hub", "tokenizers")))
PY
)
mkdir -p "$DIR"
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$DIR" $versions
echo "$DIR: $(ls "$DIR" | wc -l) wheels, $(du -sh "$DIR" | cut -f1) (the same versions as this environment: $versions)"
