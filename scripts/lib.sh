# Shared by scripts/test and scripts/quickstart.

# Installs memcached with apt when it is not on PATH.
ensure_memcached() {
    if command -v memcached >/dev/null 2>&1; then
        return 0
    fi
    echo "memcached not found: installing it with apt-get" >&2
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update
    $sudo apt-get install -y memcached
    command -v memcached >/dev/null 2>&1 || {
        echo "memcached is still missing; install it by hand (apt-get install -y memcached)" >&2
        exit 1
    }
}

# Installs twemproxy (nutcracker) with apt when it is not there: the proxy
# tests run memring through it.
ensure_nutcracker() {
    if command -v nutcracker >/dev/null 2>&1 || [ -x /usr/sbin/nutcracker ]; then
        return 0
    fi
    echo "nutcracker (twemproxy) not found: installing it with apt-get" >&2
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update
    $sudo apt-get install -y nutcracker
}
