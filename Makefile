# The two entry points of the README. Each sets up .venv first (a no-op when nothing changed).
.PHONY: setup demo test lint

setup:
	@bash scripts/bootstrap.sh

demo: setup
	.venv/bin/sca demo

test: setup
	.venv/bin/python -m pytest

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
