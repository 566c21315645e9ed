#!/usr/bin/env bash
# The QGIS-version matrix: the plugin tests and an end-to-end `qgis_process` segment with a Light
# engine made the plugin's way, in the QGIS of other Debian releases, each a chroot built with
# debootstrap from Debian's archive.
#
#   scripts/matrix.sh                 # make matrix: host, trixie and sid
#   scripts/matrix.sh host trixie     # CI (.ci/run): the host's QGIS (Debian 12: 3.22) and
#                                     # trixie's (QGIS 3.40 LTR, Python 3.13, numpy 2)
#   CROSSEARTH_MATRIX_FULL=1 scripts/matrix.sh ...   # also time and size a Full environment
#
# "host" runs the same steps in the host's own QGIS, in build/matrix/host, without a chroot;
# sid carries QGIS 3.44 on Python 3.14 and moves, so CI leaves it out.
#
# Chroots are cached on the machine, not in the repository ($CROSSEARTH_MATRIX_CACHE, default
# /var/cache/crossearth-matrix/<release>), and built again when missing or when the build
# recipe in this file changes. Each run copies the repository's files into <chroot>/work (a
# folder this script owns), so nothing of the host's checkout is written. The results of each
# release (QGIS and Python versions, set-up time, environment size, segment time) are written to
# build/matrix/<release>.json. Needs root (debootstrap, chroot, mounts), as CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cache=${CROSSEARTH_MATRIX_CACHE:-/var/cache/crossearth-matrix}
mirror=${CROSSEARTH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
releases=("$@")
[ "${#releases[@]}" -gt 0 ] || releases=(host trixie sid)
# What each chroot gets beyond debootstrap's minimal base (the recipe's identity is its hash).
packages="qgis python3-qgis python3-venv python3-pip xvfb xauth ca-certificates make git"
recipe=$(printf '%s\n' "$packages" "$mirror" | sha256sum | cut -c1-16)

needs_root=0
for release in "${releases[@]}"; do [ "$release" = host ] || needs_root=1; done
if [ "$needs_root" = 1 ] && [ "$(id -u)" -ne 0 ]; then
    echo "matrix: needs root (debootstrap and chroot); run it with sudo" >&2
    exit 2
fi
command -v debootstrap > /dev/null || {
    echo "matrix: debootstrap is missing; run make setup (it installs it)" >&2
    exit 2
}

mounted=()
cleanup() {
    for (( i=${#mounted[@]}-1; i>=0; i-- )); do umount -l "${mounted[$i]}" 2> /dev/null || true; done
}
trap cleanup EXIT

mount_into() {  # root: the kernel file systems a chroot needs for pip, Python and Qt
    local root=$1
    for fs in proc sys dev dev/pts; do
        mkdir -p "$root/$fs"
        if ! mountpoint -q "$root/$fs"; then
            case $fs in
                proc) mount -t proc proc "$root/proc" ;;
                *) mount --bind "/$fs" "$root/$fs" ;;
            esac
            mounted+=("$root/$fs")
        fi
    done
}

build_chroot() {  # release root: debootstrap, then QGIS; a half-built chroot is never used
    local release=$1 root=$2
    local partial="$root.partial"
    if [ -d "$partial" ]; then
        # Ours (this script made it, under its own name) and incomplete: start it again.
        for fs in dev/pts dev sys proc; do umount -l "$partial/$fs" 2> /dev/null || true; done
        rm -rf --one-file-system "$partial"
    fi
    echo "matrix: building the $release chroot in $root (debootstrap from $mirror)"
    debootstrap --variant=minbase --include=ca-certificates "$release" "$partial" "$mirror" \
        > "$cache/$release-debootstrap.log" 2>&1 || {
        tail -20 "$cache/$release-debootstrap.log" >&2
        echo "matrix: debootstrap $release failed; see $cache/$release-debootstrap.log" >&2
        exit 1
    }
    cp /etc/resolv.conf "$partial/etc/resolv.conf"
    mount_into "$partial"
    # A mirror may serve a frozen snapshot whose Release files have expired (seen for sid).
    chroot "$partial" /bin/sh -c "apt-get -o Acquire::Check-Valid-Until=false update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends $packages" \
        > "$cache/$release-apt.log" 2>&1 || {
        tail -20 "$cache/$release-apt.log" >&2
        echo "matrix: installing QGIS in the $release chroot failed" >&2
        exit 1
    }
    for fs in dev/pts dev sys proc; do umount -l "$partial/$fs" 2> /dev/null || true; done
    echo "$recipe" > "$partial/.crossearth-matrix-recipe"
    if [ -d "$root" ]; then
        [ -f "$root/.crossearth-matrix-recipe" ] || {
            echo "matrix: $root exists and is not one of this script's chroots; move it away" >&2
            exit 2
        }
        rm -rf --one-file-system "$root"
    fi
    mv "$partial" "$root"
}

# The plugin tests' tiny models, made once with the host's Full engine (the chroots get a Light
# one), with the ONNX graph the Light engine runs.
fixtures="$repo/build/matrix/fixtures"
if [ ! -f "$fixtures/models/tiny-landcover/model.onnx" ] \
    || [ tests/plugin/make_fixtures.py -nt "$fixtures/models/tiny-landcover/model.onnx" ]; then
    rm -rf "$fixtures"
    mkdir -p "$fixtures"
    PYTHONPATH="$repo" .venv/bin/python tests/plugin/make_fixtures.py "$fixtures" --onnx
fi

copy_repository() {  # target: the repository's files as git knows them (tracked and new,
    # not ignored; files deleted in the working tree are left out)
    mkdir -p "$1"
    git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' name; do [ -e "$name" ] && printf '%s\0' "$name"; done \
        | tar -C "$repo" --null -T - -cf - | tar -C "$1" -xf -
}

status=0
for release in "${releases[@]}"; do
    if [ "$release" = host ]; then
        work="$repo/build/matrix/host"
        rm -rf "$work"
        copy_repository "$work/crossearth"
        mkdir -p "$work/fixtures"
        cp -a "$fixtures/." "$work/fixtures/"
        if env -i HOME="$HOME" PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 WORK="$work" \
            CROSSEARTH_MATRIX_FULL="${CROSSEARTH_MATRIX_FULL:-0}" \
            bash "$work/crossearth/scripts/matrix_chroot.sh" host; then
            cp "$work/result.json" build/matrix/host.json
            echo "matrix: host passed: $(cat build/matrix/host.json)"
        else
            echo "matrix: host FAILED" >&2
            status=1
        fi
        continue
    fi
    root="$cache/$release"
    mkdir -p "$cache"
    if [ ! -f "$root/.crossearth-matrix-recipe" ] \
        || [ "$(cat "$root/.crossearth-matrix-recipe")" != "$recipe" ]; then
        build_chroot "$release" "$root"
    fi
    work="$root/work"
    rm -rf --one-file-system "$work"
    mkdir -p "$work/fixtures"
    copy_repository "$work/crossearth"
    cp -a "$fixtures/." "$work/fixtures/"
    # pip in the chroot trusts what the host trusts (a proxy's own certificate included).
    cp /etc/ssl/certs/ca-certificates.crt "$work/host-ca.crt"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    mount_into "$root"
    echo "matrix: $release: $(chroot "$root" qgis_process --version 2> /dev/null | head -1)"
    if chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        PIP_CERT=/work/host-ca.crt REQUESTS_CA_BUNDLE=/work/host-ca.crt LANG=C.UTF-8 \
        CROSSEARTH_MATRIX_FULL="${CROSSEARTH_MATRIX_FULL:-0}" \
        bash /work/crossearth/scripts/matrix_chroot.sh "$release"; then
        mkdir -p build/matrix
        cp "$work/result.json" "build/matrix/$release.json"
        echo "matrix: $release passed: $(cat "build/matrix/$release.json")"
    else
        echo "matrix: $release FAILED" >&2
        status=1
    fi
    cleanup
    mounted=()
done
exit $status
