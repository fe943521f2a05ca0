# Shared helpers for the scripts in this folder. Source it; do not run it.

# Runs a command as root (directly when we are root, else through sudo).
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs Debian packages that are missing. Usage: need_packages cmd:package [cmd:package...]
need_packages() {
  local missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (apt-get)" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# What every build needs: a Rust toolchain, and cmake (pingora-core builds zlib-ng with it).
need_build_tools() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust first (https://rustup.rs: curl -sSf https://sh.rustup.rs | sh)" >&2
    exit 1
  fi
  need_packages cmake:cmake cc:gcc curl:curl
}
