#!/usr/bin/env bash
# Regenerate the audit of the `general` pack in docs/rule-audit/general/ (docs/rule-packs.md,
# "Auditing a pack"): a small adaptive-mode `sca eval` on every public suite, then
# `sca rules audit` over its traces.
#
#   scripts/audit_general.sh [--base-url URL] [--model NAME] [--limit N] [--runs DIR]
#
# The eval is resumable: rerunning with the same --runs folder only makes the missing runs.
# Use a fresh --runs folder for another model (the eval refuses to mix two models in one
# folder). Benchmark files are read from $SCA_DATA (default /work/shared/data).
set -euo pipefail

base_url=()
model=()
limit=10
runs=runs/audit-general
while [[ $# -gt 0 ]]; do
  case "$1" in
    --base-url) base_url=(--base-url "$2"); shift 2 ;;
    --model) model=(--model "$2"); shift 2 ;;
    --limit) limit="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    *) echo "error: unknown argument $1 (use --base-url, --model, --limit, --runs)" >&2; exit 2 ;;
  esac
done

here="$(cd "$(dirname "$0")/.." && pwd)"
sca="${SCA:-$here/.venv/bin/sca}"
D="${SCA_DATA:-/work/shared/data}"

status=0
"$sca" eval \
  --suite strongreject="$D/strongreject/strongreject_dataset.csv" \
  --suite harmbench="$D/harmbench/harmbench_behaviors_text_all.csv" \
  --suite advbench="$D/advbench/harmful_behaviors.csv" \
  --suite jbb-harmful="$D/jailbreakbench/harmful-behaviors.csv" \
  --suite jbb-benign="$D/jailbreakbench/benign-behaviors.csv" \
  --suite xstest="$D/xstest/xstest_prompts.csv" \
  --suite gsm8k="$D/gsm8k/test.jsonl" \
  --modes adaptive --limit "$limit" --seed 0 --concurrency 8 --max-tokens 64 \
  --pack general --out "$runs" --quiet "${base_url[@]}" "${model[@]}" || status=$?
# Status 1: some prompts have no successful run (listed in the eval report); audit the rest.
if [[ $status -gt 1 ]]; then exit "$status"; fi

"$sca" rules audit general --traces "$runs/traces.jsonl" --out "$here/docs/rule-audit/general"
