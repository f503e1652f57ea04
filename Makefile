# The two entry points of the README. Each sets up .venv first (a no-op when nothing changed).
.PHONY: setup demo test lint

setup:
	@bash scripts/bootstrap.sh

demo: setup
	.venv/bin/sca demo

test: setup
	.venv/bin/python -m pytest

# ruff, then mypy on safe_context_agent/ and training/ (scripts/typecheck.py; tests/test_typecheck.py
# runs the same check inside `make test`, so CI has it too).
lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/python scripts/typecheck.py
