#!/usr/bin/env bash
# Proves that an unprivileged user can build examples/minimal: creates the user
# strata-test if missing, copies the static bin/strata, its companion and the example somewhere
# that user can read, builds as that user with a fresh cache, and checks the outputs.
# Needs root (to create the user and switch to it); skipped otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
	echo "rootless: SKIP (needs root to create and switch to the test user)"
	exit 0
fi
user=strata-test
id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
work=$(mktemp -d /tmp/strata-rootless.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The companion (strata-sandbox) too, so the path a release takes is the one tested.
cp bin/strata bin/strata-sandbox "$work/"
cp -r examples/minimal "$work/ws"
mkdir "$work/cache" "$work/home"
chown -R "$user:" "$work"
chmod 755 "$work"
as_user() { setpriv --reuid="$user" --regid="$user" --init-groups env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$work/home" "$@"; }
as_user "$work/strata" -C "$work/ws" --cache-dir "$work/cache" --no-progress build > "$work/outputs.txt"
cat "$work/outputs.txt"
tar_out="$work/ws/out/minimal/minimal.tar"
sq_out="$work/ws/out/minimal/minimal.squashfs"
test -s "$tar_out" || { echo "rootless: FAIL: no tar output"; exit 1; }
test -s "$sq_out" || { echo "rootless: FAIL: no squashfs output"; exit 1; }
tar -tf "$tar_out" | grep -x 'bin/busybox' >/dev/null || { echo "rootless: FAIL: bin/busybox missing"; exit 1; }
[ "$(tar -xOf "$tar_out" etc/hostname)" = minimal ] || { echo "rootless: FAIL: etc/hostname"; exit 1; }
tar -xOf "$tar_out" etc/passwd | grep '^admin:' >/dev/null || { echo "rootless: FAIL: admin missing from etc/passwd"; exit 1; }
tar -tvf "$tar_out" | grep ' 1000/1000 .* home/admin/$' >/dev/null || { echo "rootless: FAIL: home/admin not owned by 1000:1000"; exit 1; }
unsquashfs -lln "$sq_out" | grep 'squashfs-root/bin/busybox$' >/dev/null || { echo "rootless: FAIL: squashfs lacks bin/busybox"; exit 1; }
# A second build as the same user is fully cached.
as_user "$work/strata" -C "$work/ws" --cache-dir "$work/cache" --no-progress build 2>"$work/second.txt" >/dev/null
if grep -q ' started ' "$work/second.txt"; then echo "rootless: FAIL: second build was not cached"; cat "$work/second.txt"; exit 1; fi
echo "rootless: OK (built examples/minimal as $user)"
