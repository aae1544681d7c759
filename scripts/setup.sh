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
