# SPDX-License-Identifier: Apache-2.0
"""Runs a pinned BPF program on many frames with BPF_PROG_TEST_RUN, in one process.

bpftool's batch mode opens the pinned program and reads and writes a file per frame; for tens of
thousands of frames (test/packet/fuzz.test.ts) this calls bpf(2) directly on one program fd.

usage: python3 progrun.py PINNED_PROG_PATH < frames > results
  stdin:  frames, each a 4-byte little-endian length and that many bytes
  stdout: per frame, a 4-byte little-endian signed return code (or -errno when the kernel refused
          to run it), a 4-byte little-endian length and the frame as the program left it
"""
import ctypes
import os
import struct
import sys

SYS_BPF = {"x86_64": 321, "aarch64": 280}[os.uname().machine]
BPF_OBJ_GET = 7
BPF_PROG_TEST_RUN = 10
OUT_MAX = 65536

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def bpf(cmd, attr):
    ret = libc.syscall(SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    return ret if ret >= 0 else -ctypes.get_errno()


def main():
    path = ctypes.create_string_buffer(sys.argv[1].encode())
    get = (ctypes.c_uint8 * 24)()
    struct.pack_into("<Q", get, 0, ctypes.addressof(path))
    fd = bpf(BPF_OBJ_GET, get)
    if fd < 0:
        sys.exit(f"progrun: cannot open pinned program {sys.argv[1]}: {os.strerror(-fd)}")
    stdin = sys.stdin.buffer.read()
    out = sys.stdout.buffer
    data_out = ctypes.create_string_buffer(OUT_MAX)
    attr = (ctypes.c_uint8 * 80)()
    pos = 0
    while pos < len(stdin):
        (n,) = struct.unpack_from("<I", stdin, pos)
        frame = ctypes.create_string_buffer(stdin[pos + 4 : pos + 4 + n], n)
        pos += 4 + n
        ctypes.memset(attr, 0, 80)
        # struct bpf_attr.test: prog_fd, retval, data_size_in, data_size_out, data_in, data_out, repeat
        struct.pack_into("<IIIIQQI", attr, 0, fd, 0, n, OUT_MAX, ctypes.addressof(frame), ctypes.addressof(data_out), 1)
        ret = bpf(BPF_PROG_TEST_RUN, attr)
        if ret < 0:
            out.write(struct.pack("<iI", ret, 0))
            continue
        retval, _, size_out = struct.unpack_from("<III", attr, 4)
        out.write(struct.pack("<iI", retval if retval < 2**31 else retval - 2**32, size_out))
        out.write(data_out.raw[:size_out])
    out.flush()


main()
