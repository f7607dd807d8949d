#!/bin/bash
# Assembles the Plexus image's root filesystem (see Containerfile), from plexusd and the static
# shim (release builds, or debug ones for the tests) and this Debian machine's own files, so that
# `make image` pulls nothing from a registry:
#   - plexusd and the plexus shim in /usr/local/bin;
#   - the shared libraries plexusd needs, and glibc's loader: the delegates plexusd runs come from
#     the node's CNI bin dir, and plugins built against glibc (Debian's are) need it too;
#   - iptables (nft backend) with its extensions: bridge (ipMasq), portmap and firewall run it;
#   - /etc/protocols and /etc/services, which iptables reads to name protocols and ports.
#
# usage: image-rootfs.sh PLEXUSD SHIM ROOTFS   (the built plexusd and plexus shim)
set -euo pipefail

plexusd=$1
shim=$2
rootfs=$3

rm -rf "$rootfs"
mkdir -p "$rootfs"/usr/{bin,sbin,lib,lib64,local/bin} "$rootfs"/{etc,run,tmp,var}
chmod 1777 "$rootfs/tmp"
# Debian's merged /usr, so the paths binaries and their ELF interpreter name resolve.
for dir in bin sbin lib lib64; do ln -s "usr/$dir" "$rootfs/$dir"; done
ln -s ../run "$rootfs/var/run"

# /lib/x/y and /usr/lib/x/y are the same file here; inside the image, under usr/.
under_usr() {
	case "$1" in
	/usr/*) echo "$1" ;;
	*) echo "/usr$1" ;;
	esac
}

# Copies a file (its content, not a link) to the same path in the image.
put() {
	local target
	target="$rootfs$(under_usr "$1")"
	mkdir -p "$(dirname "$target")"
	cp -L --preserve=mode "$1" "$target"
}

# Copies every shared library an ELF file needs, and the loader.
put_libraries() {
	ldd "$1" 2>/dev/null | awk '/=> \// {print $3} /^[ \t]*\/[^ ]*ld-linux/ {print $1}' |
		while read -r library; do put "$library"; done
}

# Stripped: a debug build (the image tests use one) carries hundreds of MiB of debug info. The
# shim is linked statically (see the Makefile), so it needs no library, here or on the node.
install -s -m 0755 "$plexusd" "$rootfs/usr/local/bin/plexusd"
put_libraries "$plexusd"
install -s -m 0755 "$shim" "$rootfs/usr/local/bin/plexus"

multi=/usr/sbin/xtables-nft-multi
if [ -x "$multi" ]; then
	put "$multi"
	put_libraries "$multi"
	for name in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
		ln -sf xtables-nft-multi "$rootfs/usr/sbin/$name"
	done
	extensions=$(dirname "$(ldd "$multi" | awk '/libxtables/ {print $3}')")/xtables
	for extension in "$extensions"/*.so; do
		put "$extension"
		put_libraries "$extension"
	done
else
	echo "image-rootfs.sh: $multi not found: the image has no iptables (portmap and ipMasq need it)" >&2
fi

for file in /etc/protocols /etc/services; do
	[ -f "$file" ] && cp "$file" "$rootfs/etc/"
done
printf 'hosts: files dns\nprotocols: files\nservices: files\n' >"$rootfs/etc/nsswitch.conf"
echo "root:x:0:0:root:/:/usr/local/bin/plexusd" >"$rootfs/etc/passwd"
echo "root:x:0:" >"$rootfs/etc/group"
