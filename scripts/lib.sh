# Shared by scripts/test and scripts/quickstart.

# Installs Debian package $2 with apt when command $1 is not there (on PATH
# or in /usr/sbin, where nutcracker lives).
ensure_command() {
    if command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; then
        return 0
    fi
    echo "$1 not found: installing $2 with apt-get" >&2
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update
    $sudo apt-get install -y "$2"
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || {
        echo "$1 is still missing; install it by hand (apt-get install -y $2)" >&2
        exit 1
    }
}

# memcached, which every test and example runs against.
ensure_memcached() { ensure_command memcached memcached; }

# twemproxy (nutcracker): the proxy tests run memring through it.
ensure_nutcracker() { ensure_command nutcracker nutcracker; }
