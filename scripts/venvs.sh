# Sourced by setup.sh and test.sh. Python environments are kept outside the checkout, one per content of their
# requirements file (and Python version), and a checkout's .venv is a link to its one: a clean checkout (CI's) links
# the environment built before instead of building it again, and a changed requirements file gets a new one. A
# checkout whose .venv is a directory of its own keeps it. DUMPSITE_VENV_CACHE moves the store.
VENV_CACHE=${DUMPSITE_VENV_CACHE:-/var/cache/dumpsite/venvs}

# venv_link LINK NAME FILE...: point LINK at the environment of NAME for FILE's content (created empty when new, for
# the caller to install into) and print the environment's real path. Environments of NAME unused for 30 days go.
venv_link() {
  local link=$1 name=$2 key dir
  shift 2
  if [ -d "$link" ] && [ ! -L "$link" ]; then (cd "$link" && pwd -P); return; fi
  key=$(cat "$@" | sha256sum | cut -c1-16)
  dir="$VENV_CACHE/$name-$(python3 -c 'import sys; print("py%d%d" % sys.version_info[:2])')-$key"
  mkdir -p "$VENV_CACHE"
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir" >&2
  touch "$dir"
  ln -sfn "$dir" "$link"
  find "$VENV_CACHE" -mindepth 1 -maxdepth 1 -type d -name "$name-py*" -mtime +30 ! -path "$dir" -exec rm -rf {} + || true
  echo "$dir"
}
