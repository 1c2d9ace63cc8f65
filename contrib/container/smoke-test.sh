#!/bin/bash
# The container image, end to end, with no container registry (docs/deploy.md,
# "How the image was verified"). Not run in CI: it needs root, podman and a
# few minutes. From the checkout's root, as root:
#   apt-get install podman runc mmdebstrap curl
#   contrib/container/smoke-test.sh
# 1. a Debian bookworm minbase root from the Debian mirror (mmdebstrap), imported
#    as docker.io/library/debian:bookworm-slim, the Containerfile's FROM; the
#    host's own CAs in /usr/local/share/ca-certificates go in too (a TLS-
#    intercepting proxy in front of PyPI: the build's pip must trust it);
# 2. `podman build --pull=never` of contrib/container/Containerfile;
# 3. the image on a fresh volume: the first start creates the repository
#    (server --init) and prints the administrator's password once; health;
#    an agent on the host (this checkout's strongroom) enrolls, backs up a
#    small tree through the container and restores it byte-equal;
# 4. a NEW container on the same volume: no new repository, no new
#    administrator (the old password signs in), the point is still there and
#    restores byte-equal again.
# 5. with SMOKE_S3=1: the scale-out shape. A throwaway Ceph RADOS Gateway
#    (.ci/ceph-rgw-up.sh) and PostgreSQL cluster (Debian's postgresql, as
#    nobody) on the host; two containers on the host's network over one S3
#    prefix and one PostgreSQL catalog: the first creates the repository, the
#    second opens it; a session made on one works on the other; the agent
#    backs up through both and restores byte-equal.
# Everything lives in SMOKE_DIR (podman's storage too: the host's podman
# images are not touched) and is deleted at the end unless SMOKE_KEEP=1.
# Exits non-zero at the first failure. Knobs: SMOKE_DIR, SMOKE_KEEP,
# SMOKE_RUNTIME (runc, else crun), SMOKE_MIRROR, SMOKE_PORT, SMOKE_S3.
set -euo pipefail
{ # one compound command: bash reads it whole before running it, so editing
  # this file during a run does not change the run

checkout=$(cd "$(dirname "$0")/../.." && pwd)
work=${SMOKE_DIR:-/var/tmp/strongroom-smoke}
mirror=${SMOKE_MIRROR:-http://deb.debian.org/debian}
port=${SMOKE_PORT:-18420}
base=docker.io/library/debian:bookworm-slim
image=localhost/strongroom:smoke
name=strongroom-smoke
volume=strongroom-smoke-data
url=http://127.0.0.1:$port

say() { printf '== %s\n' "$*" >&2; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (podman's rootful storage under $work)"
for tool in podman mmdebstrap curl python3; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
done

# A private podman: its own storage and settings under $work.
mkdir -p "$work"
runtime=${SMOKE_RUNTIME:-$(command -v runc >/dev/null && echo runc || echo crun)}
# Limits the container may set without CAP_SYS_RESOURCE: podman's defaults for
# root (nofile 1048576, nproc 4194304) are refused in a sandbox below them.
nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ] && nofile=65536
cat > "$work/containers.conf" <<END
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]
[engine]
runtime = "$runtime"
END
cat > "$work/storage.conf" <<END
[storage]
driver = "overlay"
graphroot = "$work/storage"
runroot = "$work/run"
END
export CONTAINERS_CONF=$work/containers.conf CONTAINERS_STORAGE_CONF=$work/storage.conf

# The agent: this checkout's code on the host, with no repository password.
agent_env=(env -u STRONGROOM_PASSWORD -u STRONGROOM_PASSWORD_FILE -u STRONGROOM_REPO
           "PYTHONPATH=$checkout/src" "XDG_CONFIG_HOME=$work/agent-config"
           "XDG_CACHE_HOME=$work/agent-cache" "XDG_DATA_HOME=$work/agent-data")
agent() { "${agent_env[@]}" python3 -m strongroom "$@"; }

# One at a time: podman 4.3's `rm -f A B C` removes nothing after a missing A.
remove_containers() {
    for c in "$name" "$name-a" "$name-b"; do podman rm -f -t 0 "$c" >/dev/null 2>&1 || true; done
}
as_nobody() { (cd / && runuser -u nobody -- "$@"); }   # PostgreSQL refuses root
pg_bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | tail -1)")
cleanup() {
    rc=$?
    remove_containers
    [ -f "$work/pg/data/postmaster.pid" ] \
        && { as_nobody "$pg_bin/pg_ctl" -D "$work/pg/data" -m immediate -w stop >/dev/null 2>&1 || true; }
    [ -e "$work/ceph/.ceph-rgw-up" ] \
        && { "$checkout/.ci/ceph-rgw-down.sh" "$work/ceph" >/dev/null 2>&1 || true; }
    if [ "${SMOKE_KEEP:-0}" != 1 ]; then
        podman volume rm -f "$volume" >/dev/null 2>&1 || true
        podman secret rm repo-password >/dev/null 2>&1 || true
        podman system reset -f >/dev/null 2>&1 || true   # unmounts, then deletes storage
        rm -rf "$work"
    fi
    [ "$rc" = 0 ] && say "smoke test passed" || say "smoke test FAILED (exit $rc)"
}
trap cleanup EXIT

# Start from a clean slate when an earlier run was killed (idempotent).
remove_containers
podman volume rm -f "$volume" >/dev/null 2>&1 || true
podman secret rm repo-password >/dev/null 2>&1 || true
for p in "$port" "$((port + 1))"; do   # a removed container's port may take a moment
    for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || break; sleep 0.2; done
    ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || fail "port $p is in use (SMOKE_PORT=...)"
done
rm -rf "$work/agent-config" "$work/agent-cache" "$work/agent-data" "$work/tree" "$work/restored"*

if ! podman image exists "$base"; then
    say "1. base image $base from $mirror (mmdebstrap minbase)"
    rm -f "$work/base.tar"
    mmdebstrap --variant=minbase --include=ca-certificates \
        --customize-hook='if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
            cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/";
            chroot "$1" update-ca-certificates; fi' \
        bookworm "$work/base.tar" "$mirror" >"$work/mmdebstrap.log" 2>&1 \
        || { tail -20 "$work/mmdebstrap.log"; fail "mmdebstrap"; }
    podman import -q --change 'CMD ["bash"]' "$work/base.tar" "$base" >/dev/null
    rm -f "$work/base.tar"
fi

say "2. podman build --pull=never --format docker -t $image -f contrib/container/Containerfile ."
podman build --pull=never --format docker -t "$image" -f "$checkout/contrib/container/Containerfile" \
    "$checkout" >"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; fail "podman build"; }

password=$(head -c 24 /dev/urandom | base64)
printf %s "$password" | podman secret create repo-password - >/dev/null
podman volume create "$volume" >/dev/null

# podman runs the image's HEALTHCHECK from systemd timers: a host without
# systemd logs "unable to get systemd connection to add healthchecks"
# (harmless); `podman healthcheck run` below runs it once.
start() {
    podman run -d --name "$name" -p "127.0.0.1:$port:8420" -v "$volume:/var/lib/strongroom" \
        --secret repo-password \
        -e STRONGROOM_PASSWORD_FILE=/run/secrets/repo-password "$image" >/dev/null
    for _ in $(seq 300); do
        if curl -fsS "$url/api/v1/health" >/dev/null 2>&1; then return 0; fi
        [ "$(podman inspect -f '{{.State.Running}}' "$name")" = true ] \
            || { podman logs "$name" >&2; fail "the container exited"; }
        sleep 0.2
    done
    podman logs "$name" >&2
    fail "no answer on $url/api/v1/health"
}

say "3. first start on a fresh volume"
start
logs=$(podman logs "$name" 2>&1)
grep -q "created a new repository" <<<"$logs" || fail "no repository created: $logs"
admin_pw=$(grep "shown only now" <<<"$logs" | awk '{print $NF}')
[ -n "$admin_pw" ] || fail "no administrator password printed: $logs"
[ "$(grep -c "shown only now" <<<"$logs")" = 1 ] || fail "password printed more than once"
curl -fsS "$url/api/v1/health" | grep -q '"ok"' || fail "health does not say ok"
podman healthcheck run "$name" >/dev/null || fail "the image's HEALTHCHECK fails (or was dropped)"

# Sign in (a session cookie and its CSRF token) and make an enrollment token.
session() {
    curl -fsS -c "$work/cookies" -H 'Content-Type: application/json' \
        -d "{\"name\": \"admin\", \"password\": \"$1\"}" "$url/api/v1/session"
}
json() { python3 -c "import json, sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
csrf=$(session "$admin_pw" | json csrf_token) || fail "the administrator cannot sign in"
token=$(curl -fsS -b "$work/cookies" -H "X-CSRF-Token: $csrf" -H 'Content-Type: application/json' \
    -d '{"machine": "smoke-host"}' "$url/api/v1/enrollments" | json token)
agent agent enroll --server "$url" --token "$token" | grep -q smoke-host || fail "enroll"

mkdir -p "$work/tree/sub"
head -c 3000000 /dev/urandom > "$work/tree/sub/random.bin"
printf 'hello container\n%.0s' $(seq 200) > "$work/tree/hello.txt"
ln -s ../hello.txt "$work/tree/sub/link"
chmod 640 "$work/tree/hello.txt"
agent backup "$work/tree" --server "$url" >/dev/null || fail "backup through the container"

restore_and_compare() {
    local target=$work/restored-$1
    agent restore latest --target "$target" --server "$url" >/dev/null || fail "restore ($1)"
    diff -r --no-dereference "$work/tree" "$target$work/tree" || fail "restored tree differs ($1)"
    [ "$(stat -c %a "$target$work/tree/hello.txt")" = 640 ] || fail "mode not restored ($1)"
    [ "$(readlink "$target$work/tree/sub/link")" = ../hello.txt ] || fail "symlink ($1)"
}
restore_and_compare first

say "4. a new container on the same volume"
podman rm -f -t 10 "$name" >/dev/null
start
logs=$(podman logs "$name" 2>&1)
! grep -q "created a new repository" <<<"$logs" || fail "the repository was created again"
! grep -q "shown only now" <<<"$logs" || fail "a second administrator password was printed"
session "$admin_pw" >/dev/null || fail "the administrator's password changed"
[ "$(agent --json snapshots --server "$url" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 1 ] \
    || fail "the point did not survive the restart"
restore_and_compare second

[ "${SMOKE_S3:-0}" = 1 ] || exit 0

say "5. two containers over one S3 prefix and one PostgreSQL catalog"
podman rm -f -t 10 "$name" >/dev/null
[ -x "$pg_bin/initdb" ] || fail "PostgreSQL is not installed (apt-get install postgresql)"
if [ -f "$work/pg/data/postmaster.pid" ]; then   # left by a killed run
    as_nobody "$pg_bin/pg_ctl" -D "$work/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
fi
rm -rf "$work/pg"
install -d -o nobody -m 700 "$work/pg"
pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_nobody "$pg_bin/initdb" -D "$work/pg/data" -U postgres -A trust --no-sync \
    -E UTF8 --locale=C >/dev/null || fail "initdb"
as_nobody "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w -t 60 \
    -o "-k $work/pg -p $pg_port -c listen_addresses=127.0.0.1" start >/dev/null || fail "pg_ctl start"
# A cluster left by a killed run still holds that run's repository: a new one.
[ -e "$work/ceph/.ceph-rgw-up" ] && { "$checkout/.ci/ceph-rgw-down.sh" "$work/ceph" >/dev/null 2>&1 || true; }
rm -rf "$work/ceph"
settings=$(MEMSTORE_BYTES=$((1 << 30)) "$checkout/.ci/ceph-rgw-up.sh" "$work/ceph") \
    || fail "ceph-rgw-up.sh"
eval "$settings"
catalog=postgresql://postgres@127.0.0.1:$pg_port/postgres
repo=s3:$AWS_ENDPOINT_URL/strongroom-smoke/server
ports=("$port" "$((port + 1))")
for i in 0 1; do
    side=$([ "$i" = 0 ] && echo a || echo b)
    podman run -d --name "$name-$side" --network host --secret repo-password \
        -e STRONGROOM_PASSWORD_FILE=/run/secrets/repo-password -e STRONGROOM_REPO="$repo" \
        -e STRONGROOM_CATALOG="$catalog" -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY \
        -e AWS_DEFAULT_REGION -e AWS_REQUEST_CHECKSUM_CALCULATION \
        -e AWS_RESPONSE_CHECKSUM_VALIDATION "$image" --listen "127.0.0.1:${ports[$i]}" >/dev/null
    for _ in $(seq 300); do
        curl -fsS "http://127.0.0.1:${ports[$i]}/api/v1/health" >/dev/null 2>&1 && break
        [ "$(podman inspect -f '{{.State.Running}}' "$name-$side")" = true ] \
            || { podman logs "$name-$side" >&2; fail "container $side exited"; }
        sleep 0.2
    done
done
logs_a=$(podman logs "$name-a" 2>&1) logs_b=$(podman logs "$name-b" 2>&1)
grep -q "created a new repository at $repo" <<<"$logs_a" || fail "a did not create: $logs_a"
! grep -q "created a new repository" <<<"$logs_b" || fail "b created the repository again"
! grep -q "shown only now" <<<"$logs_b" || fail "b made a second administrator"
admin_pw=$(grep "shown only now" <<<"$logs_a" | awk '{print $NF}')
url=http://127.0.0.1:${ports[0]}
csrf=$(session "$admin_pw" | json csrf_token) || fail "sign in on a"
url=http://127.0.0.1:${ports[1]}   # the session cookie of a, on b: sessions are catalog rows
token=$(curl -fsS -b "$work/cookies" -H "X-CSRF-Token: $csrf" -H 'Content-Type: application/json' \
    -d '{"machine": "smoke-host"}' "$url/api/v1/enrollments" | json token) \
    || fail "a's session refused on b"
rm -rf "$work/agent-config" "$work/agent-cache" "$work/agent-data"
both=http://127.0.0.1:${ports[0]},http://127.0.0.1:${ports[1]}
agent agent enroll --server "$both" --token "$token" | grep -q smoke-host || fail "enroll (S3)"
url=$both
agent backup "$work/tree" --server "$both" >/dev/null || fail "backup through both (S3)"
podman rm -f -t 10 "$name-a" >/dev/null   # b alone serves the restore
url=http://127.0.0.1:${ports[1]}
restore_and_compare s3
objects=$(python3 -c 'import boto3, os, sys
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
print(s3.list_objects_v2(Bucket="strongroom-smoke", Prefix="server/")["KeyCount"])')
[ "$objects" -gt 3 ] || fail "the S3 prefix holds $objects objects"
exit 0
}
