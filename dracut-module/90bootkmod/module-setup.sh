#!/bin/bash
# dracut module: carry the drivers in bootkmod's ledger that are usable on the kernel
# being built into its image, at the same place they have in the module tree
# (extra/<name>/ for the kernel a driver was built for, weak-updates/ for compatible
# kernels). dracut fails, with bootkmod's message naming driver and kernel, when a
# root-critical driver is not usable on that kernel, unless policy=warn is configured
# in /etc/bootkmod/bootkmod.conf.
#
# Environment: BOOTKMOD_ROOT (default: dracut's sysroot, or /), BOOTKMOD (the binary).
# shellcheck disable=SC2154  # kernel, initdir, dracutsysrootdir are set by dracut

bootkmod_root() {
    echo "${BOOTKMOD_ROOT:-${dracutsysrootdir:-/}}"
}

# Included whenever bootkmod has installed something.
check() {
    local root
    root="$(bootkmod_root)"
    require_binaries "${BOOTKMOD:-bootkmod}" || return 1
    # bootkmod resolves inside the root; a test of "$root/var/..." here would follow the
    # target's links on the host.
    "${BOOTKMOD:-bootkmod}" --root "$root" status --installed || return 255
    return 0
}

depends() {
    return 0
}

installkernel() {
    local root list name src dest
    root="$(bootkmod_root)"
    # One line per usable driver: NAME SOURCE DEST. A refusal is bootkmod's non-zero exit.
    if ! list="$("${BOOTKMOD:-bootkmod}" --root "$root" status --kver "$kernel" --dracut)"; then
        derror "bootkmod: refusing to build an image for kernel $kernel (see the message above)"
        return 1
    fi
    while IFS=$'\t' read -r name src dest; do
        [[ -n "$name" ]] || continue
        inst_simple "$src" "$dest" || return 1
        # Load it early even where no device alias would ask for it (root disk driver).
        mkdir -p "$initdir/etc/modules-load.d"
        echo "$name" >> "$initdir/etc/modules-load.d/bootkmod.conf"
    done <<< "$list"
    return 0
}
