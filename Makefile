# The two commands of the README. Both set everything up first (scripts/setup.sh is idempotent).
.PHONY: demo test lint typecheck setup bench

setup:
	scripts/setup.sh

## Make a small instruction dataset on the embedded model (offline) into out/demo.
demo: setup
	.venv/bin/datamill run instructions-basic --limit 5 --output out/demo

## Run the whole test suite (unit tests on the fake model + end-to-end on the embedded model).
test: setup
	.venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check src tests bench
	.venv/bin/ruff format --check src tests bench

typecheck: setup
	.venv/bin/mypy
