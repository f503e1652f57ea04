#!/usr/bin/env bash
# Create or update the LangGraph Server overlay venv that tests/graph/test_langgraph_server.py runs
# `langgraph dev` from; a no-op (well under a second) when nothing it depends on changed.
#
# Why an overlay and not the project venv: the `langgraph-server` extra (langgraph-cli[inmem])
# needs protobuf<7, and installing it would move the project venv's protobuf 7.36.2 to 6.33.6
# under a vLLM server that may be running from it. The overlay holds only what the extra adds or
# changes (langgraph-api, its in-memory runtime, protobuf 6, grpcio, ...); a `.pth` line puts the
# project venv's site-packages after its own, so everything else (the project itself, langgraph,
# langchain, torch) is the project venv's, and protobuf 6 shadows 7 only inside the overlay.
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$self")/.."

BASE=${SCA_VENV:-.venv}
OVERLAY=${SCA_LANGGRAPH_VENV:-.sca/langgraph-server}
STAMP="$OVERLAY/.sca-installed"

[[ -x "$BASE/bin/python" ]] || {
    echo "error: $BASE/bin/python not found; run scripts/bootstrap.sh (make setup) first" >&2
    exit 1
}
base_site=$("$BASE/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# The extra's requirements, from pyproject.toml: one list to keep up to date.
mapfile -t requirements < <("$BASE/bin/python" - <<'EOF'
import tomllib
with open("pyproject.toml", "rb") as f:
    extras = tomllib.load(f)["project"]["optional-dependencies"]
print("\n".join(extras["langgraph-server"]))
EOF
)
# Rebuilt when the extra, this script, the project venv (its own stamp: pyproject.toml and
# bootstrap.sh) or where that venv lives changes.
want=$({ printf '%s\n' "${requirements[@]}" "$base_site"; cat "$self"; cat "$BASE/.sca-installed" 2>/dev/null || true; } | sha256sum | cut -d' ' -f1)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$OVERLAY/bin/langgraph" ]]; then
    exit 0
fi

started=$SECONDS
rm -rf "$OVERLAY"
mkdir -p "$(dirname "$OVERLAY")"
# The project venv's interpreter makes a venv on the same base Python.
"$BASE/bin/python" -m venv "$OVERLAY"
overlay_site=$("$OVERLAY/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# `zz_` sorts last, so every .pth of the overlay's own runs first; addsitedir also runs the
# project venv's .pth files (the editable install of this checkout).
echo "import site; site.addsitedir('$(realpath "$base_site")')" > "$overlay_site/zz_sca_project_venv.pth"
# pip sees the project venv's packages as installed and leaves them there (they are outside this
# venv): it installs only what the extra lacks or needs in another version, here.
"$OVERLAY/bin/python" -m pip --disable-pip-version-check -q install "${requirements[@]}"
"$OVERLAY/bin/python" - <<'EOF'
import google.protobuf, langgraph_api, safe_context_agent
print(f"overlay: langgraph-api {langgraph_api.__version__}, protobuf {google.protobuf.__version__},"
      f" safe_context_agent from {safe_context_agent.__path__[0]}")
EOF
echo "$want" > "$STAMP"
echo "LangGraph Server overlay ready in $((SECONDS - started)) s ($OVERLAY)"
