"""BTF enum reader: a BTF blob assembled here byte by byte, and this machine's vmlinux."""
import os
import struct

import pytest

from pmemtrace import btf
from pmemtrace.errors import KernelFeatureMissing


class Blob:
    """Assembles a BTF blob per include/uapi/linux/btf.h (little or big endian)."""

    def __init__(self, end="<"):
        self.end = end
        self.strings = bytearray(b"\0")
        self.types = bytearray()

    def s(self, text):
        if not text:
            return 0
        off = len(self.strings)
        self.strings += text.encode() + b"\0"
        return off

    def rec(self, name, kind, vlen=0, kflag=0, size_or_type=0, tail=b""):
        info = (kflag << 31) | (kind << 24) | vlen
        self.types += struct.pack(self.end + "III", self.s(name), info, size_or_type) + tail
        return self

    def u32(self, *vals):
        return struct.pack(self.end + "I" * len(vals), *vals)

    def int_(self, name, size=4, bits=32, signed=True):
        return self.rec(name, btf.KIND_INT, size_or_type=size, tail=self.u32((int(signed) << 24) | bits))

    def ptr(self, to):
        return self.rec("", btf.KIND_PTR, size_or_type=to)

    def array(self, elem, index, n):
        return self.rec("", btf.KIND_ARRAY, tail=self.u32(elem, index, n))

    def struct_(self, name, members, union=False):
        tail = b"".join(self.u32(self.s(m), t, off) for m, t, off in members)
        return self.rec(name, btf.KIND_UNION if union else btf.KIND_STRUCT, len(members), 0, 16, tail)

    def enum(self, name, values, signed=False):
        tail = b"".join(struct.pack(self.end + "Ii", self.s(k), v) for k, v in values)
        return self.rec(name, btf.KIND_ENUM, len(values), int(signed), 4, tail)

    def enum64(self, name, values, signed=False):
        tail = b""
        for k, v in values:
            v &= (1 << 64) - 1
            tail += self.u32(self.s(k), v & 0xFFFFFFFF, v >> 32)
        return self.rec(name, btf.KIND_ENUM64, len(values), int(signed), 8, tail)

    def func_proto(self, ret, params):
        tail = b"".join(self.u32(self.s(n), t) for n, t in params)
        return self.rec("", btf.KIND_FUNC_PROTO, len(params), 0, ret, tail)

    def var(self, name, t):
        return self.rec(name, btf.KIND_VAR, size_or_type=t, tail=self.u32(1))

    def datasec(self, name, entries):
        tail = b"".join(self.u32(*e) for e in entries)
        return self.rec(name, btf.KIND_DATASEC, len(entries), 0, 64, tail)

    def decl_tag(self, name, t, idx=-1):
        return self.rec(name, btf.KIND_DECL_TAG, size_or_type=t, tail=struct.pack(self.end + "i", idx))

    def bytes(self, type_off=0, str_pad=0):
        hdr_len = 24
        str_off = type_off + len(self.types) + str_pad
        header = struct.pack(self.end + "HBBIIIII", btf.BTF_MAGIC, 1, 0, hdr_len,
                             type_off, len(self.types), str_off, len(self.strings))
        return (header + b"\0" * type_off + bytes(self.types) + b"\0" * str_pad + bytes(self.strings))


def sample(end="<"):
    b = Blob(end)
    b.int_("int")                                        # 1
    b.ptr(1)                                             # 2
    b.array(1, 1, 8)                                     # 3
    b.struct_("vm_fault", [("flags", 1, 0), ("pgoff", 2, 64), ("arr", 3, 128)])   # 4 (3 members)
    b.struct_("u", [("a", 1, 0)], union=True)            # 5
    b.enum("vm_fault_reason", [("VM_FAULT_OOM", 1), ("VM_FAULT_NOPAGE", 0x100),
                               ("VM_FAULT_FALLBACK", 0x800), ("VM_FAULT_NEEDDSYNC", 0x2000)])  # 6
    b.func_proto(1, [("vmf", 2), ("order", 1)])          # 7
    b.rec("handle", btf.KIND_FUNC, vlen=1, size_or_type=7)  # 8
    b.rec("fwd", btf.KIND_FWD)                           # 9
    b.rec("vm_flags_t", btf.KIND_TYPEDEF, size_or_type=1)   # 10
    b.rec("", btf.KIND_CONST, size_or_type=1)            # 11
    b.rec("", btf.KIND_VOLATILE, size_or_type=1)         # 12
    b.rec("", btf.KIND_RESTRICT, size_or_type=2)         # 13
    b.var("some_var", 1)                                 # 14
    b.datasec(".data", [(14, 0, 4), (14, 8, 4)])         # 15
    b.rec("double", btf.KIND_FLOAT, size_or_type=8)      # 16
    b.decl_tag("tag", 4, 2)                              # 17
    b.rec("user", btf.KIND_TYPE_TAG, size_or_type=1)     # 18
    b.enum64("big", [("BIG_ONE", 1 << 40), ("BIG_MAX", (1 << 64) - 1)])          # 19
    b.enum64("sbig", [("SBIG_NEG", -5)], signed=True)    # 20
    b.enum("", [("ANON_A", 7), ("ANON_NEG", -1)], signed=True)                   # 21 anonymous
    b.enum("uenum", [("U_HIGH", -1)])                    # 22 unsigned: 0xffffffff
    b.enum("vm_event_item", [("PGPGIN", 0), ("THP_FAULT_ALLOC", 3)])              # 23
    return b


@pytest.mark.parametrize("end", ["<", ">"])
def test_walks_every_kind_and_reads_enums(end):
    e = btf.parse(sample(end).bytes())
    assert e.ntypes == 23
    assert e.named["vm_fault_reason"] == {"VM_FAULT_OOM": 1, "VM_FAULT_NOPAGE": 0x100,
                                          "VM_FAULT_FALLBACK": 0x800, "VM_FAULT_NEEDDSYNC": 0x2000}
    assert e.named["big"] == {"BIG_ONE": 1 << 40, "BIG_MAX": (1 << 64) - 1}
    assert e.named["sbig"] == {"SBIG_NEG": -5}
    assert e.named["uenum"] == {"U_HIGH": 0xFFFFFFFF}
    assert "" not in e.named
    assert e.value("ANON_A") == 7 and e.value("ANON_NEG") == -1
    assert e.value("THP_FAULT_ALLOC") == 3
    assert e.value("MADV_HUGEPAGE") is None


def test_a_name_in_several_enums_resolves_to_the_first():
    b = sample()
    b.enum("later", [("VM_FAULT_NOPAGE", 1)])
    e = btf.parse(b.bytes())
    assert e.value("VM_FAULT_NOPAGE") == 0x100
    assert e.named["later"] == {"VM_FAULT_NOPAGE": 1}


def test_section_offsets_are_relative_to_header_end():
    e = btf.parse(sample().bytes(type_off=8, str_pad=12))
    assert e.value("VM_FAULT_NEEDDSYNC") == 0x2000


def test_public_api_reads_a_file(tmp_path):
    p = tmp_path / "vmlinux"
    p.write_bytes(sample().bytes())
    assert btf.enum_values("vm_fault_reason", str(p))["VM_FAULT_FALLBACK"] == 0x800
    assert btf.enum_value("BIG_ONE", str(p)) == 1 << 40
    assert btf.enum_value("NOPE", str(p)) is None
    assert btf.load(str(p)) is btf.load(str(p))          # parsed once per process
    with pytest.raises(KeyError):
        btf.enum_values("no_such_enum", str(p))
    # the returned dict is a copy: callers cannot corrupt the cache
    btf.enum_values("vm_fault_reason", str(p))["VM_FAULT_OOM"] = 99
    assert btf.enum_values("vm_fault_reason", str(p))["VM_FAULT_OOM"] == 1


def test_a_wrong_size_is_detected_not_misread():
    b = sample()
    blob = bytearray(b.bytes())
    # claim one struct member too many on type 4: the walk must notice
    t4 = 24 + 12 * 3 + 4 + 12      # header, INT(16), PTR(12), ARRAY(24)
    (info,) = struct.unpack_from("<I", blob, t4 + 4)
    struct.pack_into("<I", blob, t4 + 4, info + 1)
    with pytest.raises(btf.BtfError):
        btf.parse(bytes(blob))


@pytest.mark.parametrize("blob, why", [
    (b"\x00" * 10, "too short"),
    (b"\x00\x00" + b"\x00" * 30, "bad magic"),
])
def test_bad_input_is_one_clear_error(blob, why):
    with pytest.raises(KernelFeatureMissing, match=why):
        btf.parse(blob)


def test_unknown_kind_is_reported():
    b = Blob()
    b.rec("future", 31)
    with pytest.raises(btf.BtfError, match="unknown BTF kind 31"):
        btf.parse(b.bytes())


def test_missing_file_is_kernel_feature_missing(tmp_path):
    with pytest.raises(KernelFeatureMissing, match="CONFIG_DEBUG_INFO_BTF"):
        btf.enum_value("X", str(tmp_path / "absent"))
    assert btf.available(str(tmp_path / "absent")) is False


def _need_vmlinux():
    if not os.path.exists(btf.VMLINUX):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{btf.VMLINUX} missing under CI")
        pytest.skip(f"{btf.VMLINUX} missing")


@pytest.mark.live
def test_this_kernels_vm_fault_reason():
    _need_vmlinux()
    reasons = btf.enum_values("vm_fault_reason")
    # stable values from include/linux/mm_types.h
    assert reasons["VM_FAULT_NOPAGE"] == 0x100
    assert reasons["VM_FAULT_FALLBACK"] == 0x800
    assert reasons["VM_FAULT_NEEDDSYNC"] == 0x2000
    assert btf.enum_value("VM_FAULT_NEEDDSYNC") == 0x2000
    assert btf.enum_value("MADV_HUGEPAGE") is None       # a #define, not an enumerator


@pytest.mark.live
def test_this_kernels_thp_fault_alloc_matches_proc_vmstat_order():
    """vm_event_item is printed in enum order after the zone/node counters in
    /proc/vmstat, starting with pgpgin; the enum value is the position there."""
    _need_vmlinux()
    names = [line.split()[0] for line in open("/proc/vmstat")]
    if "thp_fault_alloc" not in names:
        pytest.skip("kernel without CONFIG_TRANSPARENT_HUGEPAGE")
    events = btf.enum_values("vm_event_item")
    want = names.index("thp_fault_alloc") - names.index("pgpgin")
    assert btf.enum_value("THP_FAULT_ALLOC") == events["THP_FAULT_ALLOC"] == want
    assert events["PGPGIN"] == 0
