"""Enum values from the kernel's BTF (/sys/kernel/btf/vmlinux), read in pure Python.

Probes need numbers that the kernel defines as enumerators and that change with the
kernel's configuration (THP_FAULT_ALLOC is a position in enum vm_event_item, which
depends on CONFIG_* options) or, in principle, between versions (enum vm_fault_reason).
Reading them from the running kernel's BTF means they are never guessed.

Format (include/uapi/linux/btf.h): a header (magic 0xeB9F, version, flags, hdr_len,
then type_off/type_len/str_off/str_len relative to the end of the header), a type
section and a string section. The type section is a run of records; each record is
a 12-byte common part (name_off, info, size/type) followed by kind-specific data
whose length depends on the kind and on vlen (info bits 0-15). Types are numbered
from 1 in the order they appear. Only enums are kept, but every record is walked
with its exact size, so a wrong size for any kind would derail the walk (and is
detected: the walk must end exactly at the end of the type section).
"""
import functools
import struct
from typing import Dict, List, Optional, Tuple

from .errors import KernelFeatureMissing

VMLINUX = "/sys/kernel/btf/vmlinux"

BTF_MAGIC = 0xEB9F

KIND_INT = 1
KIND_PTR = 2
KIND_ARRAY = 3
KIND_STRUCT = 4
KIND_UNION = 5
KIND_ENUM = 6
KIND_FWD = 7
KIND_TYPEDEF = 8
KIND_VOLATILE = 9
KIND_CONST = 10
KIND_RESTRICT = 11
KIND_FUNC = 12
KIND_FUNC_PROTO = 13
KIND_VAR = 14
KIND_DATASEC = 15
KIND_FLOAT = 16
KIND_DECL_TAG = 17
KIND_TYPE_TAG = 18
KIND_ENUM64 = 19

COMMON_SIZE = 12  # struct btf_type

# Bytes after the common part: (fixed, per vlen item).
TRAILING: Dict[int, Tuple[int, int]] = {
    KIND_INT: (4, 0),             # u32 encoding/offset/bits
    KIND_PTR: (0, 0),
    KIND_ARRAY: (12, 0),          # struct btf_array
    KIND_STRUCT: (0, 12),         # struct btf_member
    KIND_UNION: (0, 12),
    KIND_ENUM: (0, 8),            # struct btf_enum {name_off, s32 val}
    KIND_FWD: (0, 0),
    KIND_TYPEDEF: (0, 0),
    KIND_VOLATILE: (0, 0),
    KIND_CONST: (0, 0),
    KIND_RESTRICT: (0, 0),
    KIND_FUNC: (0, 0),
    KIND_FUNC_PROTO: (0, 8),      # struct btf_param
    KIND_VAR: (4, 0),             # struct btf_var {linkage}
    KIND_DATASEC: (0, 12),        # struct btf_var_secinfo
    KIND_FLOAT: (0, 0),
    KIND_DECL_TAG: (4, 0),        # struct btf_decl_tag {s32 component_idx}
    KIND_TYPE_TAG: (0, 0),
    KIND_ENUM64: (0, 12),         # struct btf_enum64 {name_off, lo32, hi32}
}


class BtfError(KernelFeatureMissing):
    """BTF missing or not parseable: one line, says which file and why."""


class Enums:
    """All enums of one BTF blob: named ones by name, and every enumerator in order."""

    def __init__(self, named: Dict[str, Dict[str, int]], enumerators: List[Tuple[str, int]], ntypes: int):
        self.named = named                  # enum name -> {enumerator: value} (first enum of a name wins)
        self.enumerators = enumerators      # (enumerator, value) of every enum, named or not, in BTF order
        self.ntypes = ntypes
        self._by_value_name: Dict[str, int] = {}
        for name, value in enumerators:
            self._by_value_name.setdefault(name, value)

    def value(self, value_name: str) -> Optional[int]:
        return self._by_value_name.get(value_name)


def parse(data: bytes, source: str = "<bytes>") -> Enums:
    """Walk every type record of a BTF blob and collect its enums."""
    if len(data) < 24:
        raise BtfError(f"{source}: too short for a BTF header ({len(data)} bytes)")
    if data[:2] == b"\x9f\xeb":
        end = "<"
    elif data[:2] == b"\xeb\x9f":
        end = ">"
    else:
        raise BtfError(f"{source}: not BTF (bad magic {data[:2].hex()})")
    _magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
        end + "HBBIIIII", data, 0)
    if version != 1:
        raise BtfError(f"{source}: BTF version {version} is not supported (expected 1)")
    types_start = hdr_len + type_off
    types_end = types_start + type_len
    strs_start = hdr_len + str_off
    strs_end = strs_start + str_len
    if hdr_len < 24 or types_end > len(data) or strs_end > len(data):
        raise BtfError(f"{source}: BTF sections run past the end of the file")
    strings = data[strs_start:strs_end]

    def name_at(off: int) -> str:
        if off >= len(strings):
            raise BtfError(f"{source}: name offset {off} outside the string section")
        stop = strings.find(b"\0", off)
        return strings[off:stop if stop >= 0 else len(strings)].decode("utf-8", "replace")

    common = struct.Struct(end + "III")
    enum_item = struct.Struct(end + "Ii")
    enum64_item = struct.Struct(end + "III")
    trailing = TRAILING
    named: Dict[str, Dict[str, int]] = {}
    enumerators: List[Tuple[str, int]] = []
    pos = types_start
    ntypes = 0
    while pos < types_end:
        if pos + COMMON_SIZE > types_end:
            raise BtfError(f"{source}: truncated type record at byte {pos}")
        name_off, info, _size = common.unpack_from(data, pos)
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        try:
            fixed, per_item = trailing[kind]
        except KeyError:
            raise BtfError(f"{source}: unknown BTF kind {kind} (type {ntypes + 1}); "
                           "this kernel's BTF is newer than pmemtrace knows") from None
        body = pos + COMMON_SIZE
        nxt = body + fixed + per_item * vlen
        if nxt > types_end:
            raise BtfError(f"{source}: type {ntypes + 1} runs past the type section")
        if kind == KIND_ENUM or kind == KIND_ENUM64:
            signed = bool(info >> 31)
            values: Dict[str, int] = {}
            for i in range(vlen):
                if kind == KIND_ENUM:
                    vname_off, val = enum_item.unpack_from(data, body + 8 * i)
                    if not signed:
                        val &= 0xFFFFFFFF
                else:
                    vname_off, lo, hi = enum64_item.unpack_from(data, body + 12 * i)
                    val = (hi << 32) | lo
                    if signed and val >= 1 << 63:
                        val -= 1 << 64
                vname = name_at(vname_off)
                values[vname] = val
                enumerators.append((vname, val))
            if name_off:
                named.setdefault(name_at(name_off), values)
        pos = nxt
        ntypes += 1
    if pos != types_end:
        raise BtfError(f"{source}: type records do not end at the end of the type section")
    return Enums(named, enumerators, ntypes)


@functools.lru_cache(maxsize=4)
def load(path: str = VMLINUX) -> Enums:
    """Parse the BTF at path once per process (the kernel's is ~5 MB)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BtfError(f"cannot read kernel BTF {path}: {e.strerror} "
                       "(pmemtrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y)") from None
    return parse(data, path)


def enum_values(enum_name: str, path: str = VMLINUX) -> Dict[str, int]:
    """{enumerator: value} of the named enum; KeyError if this BTF has no such enum."""
    enums = load(path)
    if enum_name not in enums.named:
        raise KeyError(enum_name)
    return dict(enums.named[enum_name])


def enum_value(value_name: str, path: str = VMLINUX) -> Optional[int]:
    """Value of an enumerator, searched in every enum (named or anonymous); None if absent.

    Kernel-wide names (THP_FAULT_ALLOC, VM_FAULT_*) are unique. A few names local to one .c
    file recur with other values elsewhere (Opt_uid, RES_LIMIT ...): the first in BTF order
    is returned, so look those up with enum_values(enum_name) instead."""
    return load(path).value(value_name)


def available(path: str = VMLINUX) -> bool:
    try:
        load(path)
    except BtfError:
        return False
    return True
