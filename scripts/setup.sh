#!/usr/bin/env bash
# Installs what strata's build, tests and demo need, only what is missing, so it is
# cheap to run again. Debian packages need root (CI runs as root); Go tools go to
# ./bin so nothing outside the checkout changes.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have bwrap        || need_pkgs+=(bubblewrap)
have mksquashfs   || need_pkgs+=(squashfs-tools)
have mkfs.ext4    || need_pkgs+=(e2fsprogs)
have mkfs.erofs   || need_pkgs+=(erofs-utils)
have zstd         || need_pkgs+=(zstd)
have git          || need_pkgs+=(git)
have setpriv      || need_pkgs+=(util-linux)
[ -x /bin/busybox ] || need_pkgs+=(busybox-static)
# Independent readers of the oci output in the output tests.
have skopeo       || need_pkgs+=(skopeo)
have umoci        || need_pkgs+=(umoci)
# Foreign-architecture stages (examples/cross, an arm64 root filesystem) run
# under qemu-user.
have qemu-aarch64-static || need_pkgs+=(qemu-user-static)

if [ ${#need_pkgs[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "setup: missing Debian packages: ${need_pkgs[*]} (run as root or install them)" >&2
		exit 1
	fi
	echo "setup: installing ${need_pkgs[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# qemu-user-static ships binfmt_misc entries in /usr/lib/binfmt.d that only a
# running systemd-binfmt or binfmt-support registers, and neither runs in a
# container or CI job: register here those of the arm architectures, which
# examples/cross and the tests use (the rest stay as the host has them, so a
# test can still find an architecture this host does not run). Only entries
# with the F flag (the kernel opens the interpreter now, so it works inside a
# sandbox's mount namespace) are useful to strata. They last until the next boot.
binfmt=/proc/sys/fs/binfmt_misc
if [ "$(id -u)" -eq 0 ] && [ -d /usr/lib/binfmt.d ]; then
	if ! [ -e "$binfmt/register" ]; then
		mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null ||
			echo "setup: cannot mount binfmt_misc: foreign-arch stages will be refused here" >&2
	fi
	if [ -w "$binfmt/register" ]; then
		for conf in /usr/lib/binfmt.d/qemu-aarch64.conf /usr/lib/binfmt.d/qemu-arm.conf; do
			[ -e "$conf" ] || continue
			name=$(basename "$conf" .conf)
			[ -e "$binfmt/$name" ] && continue
			case "$(sed -n 's/.*:\([A-Z]*\)$/\1/p' "$conf")" in
			*F*) cat "$conf" > "$binfmt/register" ||
				echo "setup: could not register $name with binfmt_misc" >&2 ;;
			esac
		done
	fi
elif ! [ -e "$binfmt/qemu-aarch64" ]; then
	echo "setup: arm64 is not registered with binfmt_misc (run as root to register qemu-user): the arm64 tests will be skipped" >&2
fi

# examples/cross builds from Debian's busybox-static for arm64, downloaded once
# into examples/cross/deps/ (git-ignored); the builds are offline afterwards.
if [ "$(id -u)" -eq 0 ] || dpkg --print-foreign-architectures 2>/dev/null | grep -qx arm64; then
	examples/cross/fetch-busybox.sh ||
		echo "setup: could not fetch busybox-static:arm64: the examples/cross tests will be skipped" >&2
fi

# The upstream cue command, pinned to the library version in go.mod, for the
# "cue vet / cue export accept the examples" checks.
cue_version=$(go list -m -f '{{.Version}}' cuelang.org/go)
if ! [ -x bin/cue ] || ! bin/cue version 2>/dev/null | grep -q "$cue_version"; then
	echo "setup: installing cue $cue_version into bin/" >&2
	GOBIN="$PWD/bin" go install "cuelang.org/go/cmd/cue@$cue_version"
fi

# crane reads what strata pushes in the registry interoperability tests.
crane_version=v0.22.1
if ! [ -x bin/crane ] || ! bin/crane version 2>/dev/null | grep -q "${crane_version#v}"; then
	echo "setup: installing crane $crane_version into bin/" >&2
	GOBIN="$PWD/bin" go install "github.com/google/go-containerregistry/cmd/crane@$crane_version"
fi
