"""A software prefetch for compiled kernels: ``prefetch(buf, i)`` asks the CPU to bring
the cache line of ``buf[i]`` in, without waiting for it.

Why: the per-packet kernels (``capture.pcap.scan_pcap_records``, ``decode``) read a
few header bytes of each packet, a few hundred bytes apart in a chunk of 8 MiB that
is no longer in the core's cache by then (it was read into memory and hashed
first). Each packet's first load then waits for memory, and that wait was most of
the decode kernel's time (perf: ~45 % of its cycles on the first byte it reads of a
packet). Asking for packet ``i + k``'s header while decoding packet ``i`` overlaps
those waits. A prefetch never faults, so an index past the buffer is harmless, and
it changes no result: only when the bytes arrive.

It is LLVM's ``llvm.prefetch`` intrinsic (read, high locality, data cache), emitted
inline; no bounds check, no wraparound of negative indices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np

from .jitload import intrinsic


def _prefetch(typingctx: Any, buf: Any, i: Any) -> Any:
    """``prefetch(buf, i)``: start loading the cache line holding ``buf[i]`` (a 1-d
    array, any integer index; nothing is read into the program)."""
    from llvmlite import ir
    from numba.core import cgutils, types

    i32 = ir.IntType(32)
    if not isinstance(buf, types.Array) or buf.ndim != 1 or not isinstance(i, types.Integer):
        return None
    sig = types.void(buf, i)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = context.cast(builder, args[1], signature.args[1], types.intp)
        ptr = cgutils.get_item_pointer2(
            context, builder, data=ary.data, shape=cgutils.unpack_tuple(builder, ary.shape),
            strides=cgutils.unpack_tuple(builder, ary.strides), layout=aryty.layout,
            inds=[idx], wraparound=False, boundscheck=False)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [ptr.type], fnty)
        # read (0), high temporal locality (3), data cache (1)
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


def _nothing(buf: Any, i: int) -> None:
    """``prefetch`` called from Python (a kernel run as plain Python): a prefetch
    changes no result."""


prefetch = cast(Callable[[np.ndarray, int], None], intrinsic(_prefetch, _nothing))
"""``prefetch(buf, i)`` in compiled code (``_prefetch``). Importing this module (every
capture reader and the decoder do) imports no Numba: the intrinsic is made when Numba
first types a kernel that calls it (``jitload.LazyIntrinsic``)."""
