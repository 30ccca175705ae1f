"""glibc malloc settings for training on CPU: reuse freed memory instead of returning it.

By default glibc hands large freed blocks back to the kernel (``munmap``, heap trimming), so
the next step's tensors of the same size fault their pages in again: in a ViT-B distillation
step on 2 cores the fp32/bf16 casts of the weights and their gradients (``aten::copy_``) took
~23% of the step, mostly page faults, and ~15% once freed memory is kept. Keeping it does not
raise the peak: the process already reached that size once per step.

PyTorch has no caching allocator on CPU; these two ``mallopt`` settings are the usual
substitute (the same as ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the
environment). Set ``MASKAGAIN_MALLOC=default`` to leave glibc's defaults alone.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 2**31 - 1  # an int: trim only when 2 GiB lie free at the heap top


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks up to 32 MiB for reuse.

    Returns True when the settings are in effect, False where they are not (not glibc, or
    ``MASKAGAIN_MALLOC=default``). Process-wide; affects CPU memory only. Idempotent: a second
    call sets the same two values again (glibc holds the state, nothing here does).
    """
    if os.environ.get("MASKAGAIN_MALLOC", "").strip().lower() == "default":
        log.debug("MASKAGAIN_MALLOC=default: glibc malloc settings left alone")
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        log.debug("no glibc mallopt here: malloc settings left alone")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    log.debug("glibc malloc keeps freed blocks up to %d MiB: %s", MMAP_THRESHOLD >> 20, ok)
    return ok
