#!/bin/sh
# Downloads Debian's busybox-static for arm64 into deps/, once: the example's
# source. apt-get download needs the arm64 architecture in dpkg's list, which
# adding takes root (and an apt-get update); make setup does it.
set -eu
cd "$(dirname "$0")"
deb=deps/busybox-static_arm64.deb
[ -s "$deb" ] && exit 0
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "fetch-busybox: dpkg does not list arm64; as root: dpkg --add-architecture arm64 && apt-get update" >&2
		exit 1
	fi
	dpkg --add-architecture arm64
	apt-get update -qq
fi
mkdir -p deps
tmp=$(mktemp -d deps/.download.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# As root, apt downloads as its _apt user, which cannot write here.
sandbox=
[ "$(id -u)" -eq 0 ] && sandbox="-o APT::Sandbox::User=root"
(cd "$tmp" && apt-get download -qq $sandbox busybox-static:arm64)
mv "$tmp"/busybox-static_*_arm64.deb "$deb"
echo "fetch-busybox: busybox-static:arm64 $(dpkg-deb -f "$deb" Version) -> $deb" >&2
