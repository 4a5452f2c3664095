#!/usr/bin/env bash
# Reproduce the ROMER paper's OLMoE-1B-7B row (WikiText-2, cim-25c and cim-80c) on one GPU.
#
#   scripts/paper_olmoe.sh MODEL_DIR [TEST_TEXT CALIB_TEXT] [OUT]
#
# MODEL_DIR: a local folder of allenai/OLMoE-1B-7B-0924 (save_pretrained / huggingface-cli download).
# TEST_TEXT, CALIB_TEXT: WikiText-2 raw test and validation text files; without them the script uses
# the `wikitext2` corpus (the Hugging Face datasets cache must hold it on a machine without internet).
# The run resumes: rerun the same command after an interruption. Seeds, methods and token budgets
# can be changed with the environment variables below; ROMER names the command (default `romer`; on a machine
# where romer is importable but not installed: ROMER="python3 -m romer.cli"). METHODS may hold labelled variants, e.g.
# METHODS="none,romer,or=outlier-retune@retune_engine=blockwise@retune_plan=blockwise" (the settings of the CPU run of
# docs/results/scale.md); CALIB_SET adds calibration options for every method, e.g. CALIB_SET="retune_block_steps: 20".
set -euo pipefail
MODEL=${1:?usage: scripts/paper_olmoe.sh MODEL_DIR [TEST_TEXT CALIB_TEXT] [OUT]}
TEST=${2:-wikitext2}
CALIB=${3:-}
OUT=${4:-runs/paper-olmoe}
SEEDS=${SEEDS:-0-4}
METHODS=${METHODS:-none,er,rc,romer,tuned}
MAX_TOKENS=${MAX_TOKENS:-}          # empty: the whole test split
CALIB_TOKENS=${CALIB_TOKENS:-32768}
DEVICE=${DEVICE:-cuda}
WINDOW=${WINDOW:-2048}              # OLMoE-1B-7B was trained on 4,096; the paper scores 2,048
ROMER=${ROMER:-romer}

$ROMER estimate --model "$MODEL" --dtype bfloat16 --window "$WINDOW" --device "$DEVICE"
mkdir -p "$OUT"
CONFIG="$OUT/paper-olmoe.yaml"
{
  echo "model: $MODEL"
  echo "data: $TEST"
  [ -n "$CALIB" ] && echo "calib_data: $CALIB"
  echo "noise: [cim-25c, cim-80c]"
  echo "seeds: \"$SEEDS\""
  echo "methods: [${METHODS}]"
  echo "window: $WINDOW"
  [ -n "$MAX_TOKENS" ] && echo "max_tokens: $MAX_TOKENS"
  echo "routing_tokens: 16384"
  echo "calibration: {calib_tokens: $CALIB_TOKENS, batch_size: 4${CALIB_SET:+, $CALIB_SET}}"
  echo "device: $DEVICE"
  echo "dtype: bfloat16"
  echo "batch_size: auto"
} > "$CONFIG.tmp" && mv "$CONFIG.tmp" "$CONFIG"
$ROMER run --config "$CONFIG" --out "$OUT"
echo "table: $OUT/report.md (paper, OLMoE-1B-7B: 59.8 % lower perplexity with ROMER)"
