# The two entry points of the README. Each sets up .venv first (a no-op when nothing changed).
.PHONY: setup server-env demo test lint

setup:
	@bash scripts/bootstrap.sh

# The LangGraph Server overlay venv (.sca/langgraph-server) that tests/graph/test_langgraph_server.py
# runs `langgraph dev` from; a no-op when nothing changed. A failure here does not stop the other
# tests: that one test then fails in CI ($CI set) and skips elsewhere, saying why.
server-env: setup
	-@bash scripts/langgraph_server_env.sh

demo: setup
	.venv/bin/sca demo

test: setup server-env
	.venv/bin/python -m pytest

# ruff, then mypy on safe_context_agent/ and training/ (scripts/typecheck.py; tests/test_typecheck.py
# runs the same check inside `make test`, so CI has it too).
lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/python scripts/typecheck.py
