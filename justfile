# Recipes mirror CI: `just test` is what .ci/run runs.
set dotenv-load := false
export UV_PYTHON_DOWNLOADS := "never"

# serve the demo assistants (offline model, no key needed)
run *ARGS:
    uv run --frozen gateway serve {{ARGS}}

# the whole test suite
test *ARGS:
    uv run --frozen pytest -n 2 {{ARGS}}

# ruff + mypy --strict
lint:
    uv run --frozen ruff check gateway tests bench actions
    uv run --frozen ruff format --check gateway tests bench actions
    uv run --frozen mypy gateway

# format the code
fmt:
    uv run --frozen ruff format gateway tests bench actions
    uv run --frozen ruff check --fix gateway tests bench actions

# validate the demo manifests
validate:
    uv run --frozen gateway validate manifests

# regenerate schemas/manifest.schema.json from the model
schema:
    uv run --frozen gateway schema > schemas/manifest.schema.json

# run every benchmark
bench:
    for b in bench/*.py; do uv run --frozen python "$b"; done
