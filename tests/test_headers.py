"""Kernel header discovery and the merged fallback tree, on temp dirs laid out like Debian's
packages, plus a live check on this machine."""
import os

import pytest

from pmemtrace import headers as H
from pmemtrace.errors import HeadersMissing

REL = "6.18.44-test"


def write(path, text=""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def debian_pair(src, ver, flavour="amd64", karch="x86"):
    """linux-headers-<ver>-<flavour> + linux-headers-<ver>-common, the way Debian ships them."""
    arch = os.path.join(src, f"linux-headers-{ver}-{flavour}")
    common = os.path.join(src, f"linux-headers-{ver}-common")
    kbuild = os.path.join(os.path.dirname(src), "lib", "linux-kbuild")
    write(os.path.join(kbuild, "scripts", "Makefile.build"), "kbuild")
    write(os.path.join(arch, "Makefile"), f"include {common}/Makefile\n")
    write(os.path.join(arch, ".config"), "CONFIG_X=y\n")
    write(os.path.join(arch, "include/generated/autoconf.h"), f"/* {ver}-{flavour} */\n")
    write(os.path.join(arch, "include/config/X"), "")
    write(os.path.join(arch, f"arch/{karch}/include/generated/asm/unistd_64_x32.h"), "")
    write(os.path.join(arch, f"arch/{karch}/module.lds"), "")
    write(os.path.join(common, "Makefile"), "# top-level kbuild Makefile\n")
    write(os.path.join(common, "include/linux/kconfig.h"), "")
    write(os.path.join(common, "include/linux/mm.h"), "")
    write(os.path.join(common, f"arch/{karch}/include/asm/page.h"), "")
    write(os.path.join(common, f"arch/{karch}/Makefile"), "")
    write(os.path.join(common, "arch/arm64/include/asm/page.h"), "")
    for d in (arch, common):
        if not os.path.lexists(os.path.join(d, "scripts")):
            os.symlink(os.path.relpath(os.path.join(kbuild, "scripts"), d), os.path.join(d, "scripts"))
    return arch, common


@pytest.fixture
def layout(tmp_path):
    src = tmp_path / "usr" / "src"
    src.mkdir(parents=True)
    mods = tmp_path / "lib" / "modules"
    mods.mkdir(parents=True)
    return dict(src_dir=str(src), modules_dir=str(mods), cache_dir=str(tmp_path / "cache"),
                release=REL, machine="x86_64", environ={})


def test_missing_when_nothing_is_installed(layout):
    h = H.find_headers(**layout)
    assert h.kind == "missing" and h.path is None
    with pytest.raises(HeadersMissing) as e:
        H.ensure_headers(**layout)
    msg = str(e.value)
    assert "run `sudo make install` (installs linux-headers-amd64)" in msg
    assert "\n" not in msg


def test_find_does_not_build(layout):
    debian_pair(layout["src_dir"], "6.1.0-56")
    h = H.find_headers(**layout)
    assert h.kind == "fallback"
    assert h.path == os.path.join(layout["cache_dir"], "kernel-headers-6.1.0-56-amd64")
    assert "built on first use" in h.detail
    assert not os.path.exists(layout["cache_dir"])


def test_newest_pair_and_plain_flavour_win(layout):
    src = layout["src_dir"]
    debian_pair(src, "6.1.0-9")
    debian_pair(src, "6.1.0-56")
    debian_pair(src, "6.1.0-56", flavour="cloud-amd64")
    debian_pair(src, "6.12.0-1", flavour="arm64", karch="arm64")     # another architecture
    pairs = H.generic_pairs(src, "x86_64")
    assert [p.release for p in pairs] == ["6.1.0-56-amd64", "6.1.0-56-cloud-amd64", "6.1.0-9-amd64"]
    assert pairs[0].common_dir == os.path.join(src, "linux-headers-6.1.0-56-common")
    assert [p.release for p in H.generic_pairs(src, "aarch64")] == ["6.12.0-1-arm64"]


def test_merged_tree(layout):
    arch, common = debian_pair(layout["src_dir"], "6.1.0-56")
    h = H.ensure_headers(**layout)
    tree = h.path
    assert h.kind == "fallback" and h.bcc_env() == {"BCC_KERNEL_SOURCE": tree}
    assert "(built)" in h.detail
    # directories in both packages are real directories, recursed into
    for d in ("include", "arch", "arch/x86", "arch/x86/include"):
        assert os.path.isdir(os.path.join(tree, d)) and not os.path.islink(os.path.join(tree, d)), d
    # everything else is a symlink to where it came from
    assert os.readlink(os.path.join(tree, "include/linux")) == os.path.join(common, "include/linux")
    assert os.readlink(os.path.join(tree, "include/generated")) == os.path.join(arch, "include/generated")
    assert os.readlink(os.path.join(tree, "arch/x86/include/asm")) == os.path.join(common, "arch/x86/include/asm")
    assert os.readlink(os.path.join(tree, "arch/arm64")) == os.path.join(common, "arch/arm64")
    assert os.readlink(os.path.join(tree, ".config")) == os.path.join(arch, ".config")
    # a file in both: the arch-specific package wins
    assert open(os.path.join(tree, "Makefile")).read() == f"include {common}/Makefile\n"
    # identical symlinked directories collapse to one symlink
    assert os.path.islink(os.path.join(tree, "scripts"))
    assert os.path.isfile(os.path.join(tree, "scripts/Makefile.build"))
    for p in H.REQUIRED:
        assert os.path.isfile(os.path.join(tree, p))
    # nothing left behind in the cache but the tree
    assert os.listdir(layout["cache_dir"]) == ["kernel-headers-6.1.0-56-amd64"]
    assert H.find_headers(**layout).detail.endswith("(built)")


def test_built_once(layout):
    debian_pair(layout["src_dir"], "6.1.0-56")
    tree = H.ensure_headers(**layout).path
    inode = os.stat(tree).st_ino
    marker = os.path.join(tree, "include", "kept")
    write(marker)
    assert H.ensure_headers(**layout).path == tree
    assert os.stat(tree).st_ino == inode and os.path.exists(marker)


def test_incomplete_tree_is_rebuilt(layout):
    debian_pair(layout["src_dir"], "6.1.0-56")
    tree = H.ensure_headers(**layout).path
    os.unlink(os.path.join(tree, "include", "generated"))
    assert "built on first use" in H.find_headers(**layout).detail
    assert H.ensure_headers(**layout).path == tree
    assert os.path.isfile(os.path.join(tree, "include/generated/autoconf.h"))
    assert os.listdir(layout["cache_dir"]) == ["kernel-headers-6.1.0-56-amd64"]


def test_tree_without_stamp_is_rebuilt(layout):
    """A directory someone else left at the path (or a crash before the stamp) is replaced."""
    debian_pair(layout["src_dir"], "6.1.0-56")
    tree = os.path.join(layout["cache_dir"], "kernel-headers-6.1.0-56-amd64")
    write(os.path.join(tree, "junk"))
    H.ensure_headers(**layout)
    assert not os.path.exists(os.path.join(tree, "junk"))
    assert os.path.exists(os.path.join(tree, H.STAMP))


def test_broken_packages_fail_cleanly(layout):
    arch, common = debian_pair(layout["src_dir"], "6.1.0-56")
    os.unlink(os.path.join(common, "include/linux/kconfig.h"))
    with pytest.raises(HeadersMissing, match="include/linux/kconfig.h"):
        H.ensure_headers(**layout)
    assert os.listdir(layout["cache_dir"]) == []        # no half-built tree, no temp dirs


def test_unwritable_cache_is_one_line_error(layout, tmp_path):
    debian_pair(layout["src_dir"], "6.1.0-56")
    write(str(tmp_path / "afile"))
    layout["cache_dir"] = str(tmp_path / "afile" / "cache")
    with pytest.raises(HeadersMissing, match="cannot build the kernel header tree"):
        H.ensure_headers(**layout)


def test_self_contained_flavour_tree_is_used_directly(layout):
    """Ubuntu's linux-headers-<ver>-generic links every source directory into its own tree:
    no merge needed, BCC_KERNEL_SOURCE points at it."""
    src = layout["src_dir"]
    base = os.path.join(src, "linux-headers-6.8.0-45")
    flav = os.path.join(src, "linux-headers-6.8.0-45-generic")
    write(os.path.join(base, "Makefile"), "# full kbuild Makefile\n")
    write(os.path.join(base, "include/linux/kconfig.h"))
    write(os.path.join(base, "arch/x86/include/asm/page.h"))
    write(os.path.join(flav, "include/generated/autoconf.h"))
    write(os.path.join(flav, "arch/x86/include/generated/asm/x.h"))
    os.symlink("../linux-headers-6.8.0-45/Makefile", os.path.join(flav, "Makefile"))
    os.symlink("../../linux-headers-6.8.0-45/include/linux", os.path.join(flav, "include/linux"))
    h = H.ensure_headers(**layout)
    assert (h.kind, h.path) == ("fallback", flav)
    assert h.bcc_env() == {"BCC_KERNEL_SOURCE": flav}
    assert not os.path.exists(layout["cache_dir"])


def test_exact_headers_debian_split(layout):
    arch, common = debian_pair(layout["src_dir"], "6.1.0-56")
    kdir = os.path.join(layout["modules_dir"], REL)
    os.makedirs(kdir)
    os.symlink(arch, os.path.join(kdir, "build"))
    os.symlink(common, os.path.join(kdir, "source"))
    h = H.ensure_headers(**layout)
    assert (h.kind, h.path) == ("exact", os.path.join(kdir, "build"))
    assert h.bcc_env() == {}            # bcc finds build + source itself
    assert not os.path.exists(layout["cache_dir"])


def test_exact_headers_single_tree(layout):
    kdir = os.path.join(layout["modules_dir"], REL)
    write(os.path.join(kdir, "build", "include/linux/kconfig.h"))
    assert H.find_headers(**layout).kind == "exact"


def test_dangling_build_link_is_not_exact(layout):
    debian_pair(layout["src_dir"], "6.1.0-56")
    kdir = os.path.join(layout["modules_dir"], REL)
    os.makedirs(kdir)
    os.symlink("/nonexistent/linux-headers", os.path.join(kdir, "build"))
    assert H.find_headers(**layout).kind == "fallback"


def test_bcc_kernel_source_from_the_user_is_respected(layout, tmp_path):
    mine = str(tmp_path / "mine")
    write(os.path.join(mine, "include/linux/kconfig.h"))
    layout["environ"] = {"BCC_KERNEL_SOURCE": mine}
    h = H.find_headers(**layout)
    assert (h.kind, h.path, h.bcc_env()) == ("exact", mine, {})
    layout["environ"] = {"BCC_KERNEL_SOURCE": str(tmp_path / "nothing")}
    assert H.find_headers(**layout).kind == "missing"


@pytest.mark.live
def test_this_machine_has_a_usable_tree():
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("live test needs root under CI")
        pytest.skip("needs root (builds under /var/cache/pmemtrace)")
    rel = os.uname().release
    # pmemtrace itself sets BCC_KERNEL_SOURCE when it loads probes (earlier tests in this process did)
    h = H.ensure_headers(environ={k: v for k, v in os.environ.items() if k != "BCC_KERNEL_SOURCE"})
    build = f"/lib/modules/{rel}/build"
    if os.path.isfile(os.path.join(build, "include/generated/autoconf.h")):
        assert h.kind == "exact" and h.path == build
        return
    assert h.kind == "fallback"
    assert os.path.isfile(os.path.join(h.path, "include/generated/autoconf.h"))
    assert os.path.isfile(os.path.join(h.path, "include/linux/kconfig.h"))
    karch, _ = H.machine_arches()
    assert os.path.isdir(os.path.join(h.path, "arch", karch, "include/generated"))
    newest = H.generic_pairs()[0]
    assert h.path == f"/var/cache/pmemtrace/kernel-headers-{newest.release}"
