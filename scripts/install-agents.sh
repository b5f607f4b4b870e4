#!/usr/bin/env bash
# Install the pinned agent CLIs that TeleCoder's engines drive, into project-local prefixes:
#
#   .tools/npm      npm packages (claude, codex, opencode, pi, gemini, ACP adapters); bins in
#                   .tools/npm/node_modules/.bin
#   .tools/node22   Node 22 from the npm package `node` (Qwen Code needs Node >= 22)
#   .tools/npm22    Qwen Code, installed and run with that Node 22
#   .tools/aider    aider-chat in its own virtualenv (its exact pins would fight ours)
#   .tools/bin      the one directory to put on PATH: links to every agent binary
#
# Idempotent: a stamp file records the pinned set; when it matches, nothing runs. Concurrent runs
# take turns (flock), so parallel test workers may all call it.
# Usage: scripts/install-agents.sh [TOOLS_DIR]   (default: .tools next to this script's repo)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${1:-$ROOT/.tools}"
PYTHON="${PYTHON:-python3}"

NPM_PACKAGES=(
    "@anthropic-ai/claude-code@2.1.197"
    "@openai/codex@0.169.0"
    "opencode-ai@1.18.33"
    "@mariozechner/pi-coding-agent@0.73.1"
    "@google/gemini-cli@0.61.0"
    "@agentclientprotocol/claude-agent-acp@0.100.0"
    "@agentclientprotocol/codex-acp@2.6.0"
)
NODE22="node@22.23.3"
QWEN="@qwen-code/qwen-code@0.24.4"
AIDER="aider-chat==0.86.2"

WANT="$(printf '%s\n' "${NPM_PACKAGES[@]}" "$NODE22" "$QWEN" "$AIDER" "layout-2")"
STAMP="$TOOLS/.installed"
installed() { [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; }
if installed; then
    exit 0
fi
# One installer at a time (parallel test workers each ask for the tools): the others wait for
# it, then find the stamp.
mkdir -p "$TOOLS"
exec 9>"$TOOLS/.install.lock"
flock 9
if installed; then
    exit 0
fi

mkdir -p "$TOOLS/npm" "$TOOLS/node22" "$TOOLS/npm22" "$TOOLS/bin"
export npm_config_fund=false npm_config_audit=false npm_config_update_notifier=false

# Three independent installs at once (npm's registry, Node 22 then Qwen, PyPI): each logs how
# long it took; the script fails if any of them failed.
timed() {
    local name="$1" start=$SECONDS
    shift
    if "$@"; then
        echo "install-agents: $name took $((SECONDS - start)) s" >&2
    else
        echo "install-agents: $name failed after $((SECONDS - start)) s" >&2
        return 1
    fi
}
npm_packages() {
    npm install --prefix "$TOOLS/npm" --no-save --loglevel=error "${NPM_PACKAGES[@]}"
}
NODE22_BIN="$TOOLS/node22/node_modules/node/bin/node"
node22_and_qwen() {
    npm install --prefix "$TOOLS/node22" --no-save --loglevel=error "$NODE22"
    "$NODE22_BIN" --version >/dev/null
    PATH="$(dirname "$NODE22_BIN"):$PATH" npm install --prefix "$TOOLS/npm22" --no-save \
        --loglevel=error --engine-strict "$QWEN"
}
aider_venv() {
    if [[ ! -x "$TOOLS/aider/bin/python" ]]; then
        "$PYTHON" -m venv "$TOOLS/aider"
    fi
    "$TOOLS/aider/bin/pip" install -qq --disable-pip-version-check "$AIDER"
}
echo "install-agents: npm packages into $TOOLS/npm, $NODE22 and $QWEN into $TOOLS/node22 and" \
    "$TOOLS/npm22, $AIDER into $TOOLS/aider (at once)" >&2
timed "npm packages" npm_packages &
npm_job=$!
timed "$NODE22 + $QWEN" node22_and_qwen &
qwen_job=$!
timed "$AIDER" aider_venv &
aider_job=$!
failed=0
for job in "$npm_job" "$qwen_job" "$aider_job"; do
    wait "$job" || failed=1
done
if [[ $failed != 0 ]]; then
    exit 1
fi

# One directory of entry points.
for bin in claude codex opencode pi gemini claude-agent-acp codex-acp; do
    ln -sf "$TOOLS/npm/node_modules/.bin/$bin" "$TOOLS/bin/$bin"
done
ln -sf "$TOOLS/aider/bin/aider" "$TOOLS/bin/aider"
QWEN_JS="$(readlink -f "$TOOLS/npm22/node_modules/.bin/qwen")"
cat >"$TOOLS/bin/qwen" <<EOF
#!/bin/sh
exec "$NODE22_BIN" "$QWEN_JS" "\$@"
EOF
chmod +x "$TOOLS/bin/qwen"

for bin in claude codex opencode pi gemini qwen aider; do
    "$TOOLS/bin/$bin" --version >/dev/null 2>&1 || {
        echo "install-agents: $bin does not run" >&2
        exit 1
    }
done
chmod -f +x "$TOOLS"/npm22/node_modules/@qwen-code/qwen-code/vendor/ripgrep/*/rg || true
printf "%s" "$WANT" >"$STAMP"
echo "install-agents: done" >&2
