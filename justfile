# Recipes mirror CI: `just test` is what .ci/run runs.
set dotenv-load := false
export UV_PYTHON_DOWNLOADS := "never"

# serve the demo assistants (offline model, no key needed)
run *ARGS:
    uv run --frozen gateway serve {{ARGS}}

# the whole test suite
test *ARGS: browser
    #!/usr/bin/env bash
    set -euo pipefail
    # As root the sandbox runs actions as another uid, which must be able to enter
    # the checkout (its .venv, its demo database). From a folder it cannot enter
    # (e.g. under /root or a 0700 mktemp dir) the suite runs from a readable copy.
    if [ "$(id -u)" = 0 ] && ! python3 -m gateway._reachable . 2>/dev/null; then
      copy=$(mktemp -d /tmp/gateway-test.XXXXXX)
      trap 'rm -rf "$copy"' EXIT
      echo "this checkout is not reachable by the sandbox's uid: testing a copy in $copy"
      tar --exclude=./.venv --exclude=./.git -cf - . | tar -xf - -C "$copy"
      chmod -R go+rX "$copy"
      cd "$copy"
    fi
    uv run --frozen pytest -n 2 {{ARGS}}

# install Debian's chromium for the browser test when missing (needs root + apt)
browser:
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v chromium >/dev/null; then exit 0; fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      echo "chromium not found: the browser test will be skipped (apt-get install chromium)"
    fi

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
