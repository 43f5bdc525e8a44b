"""The app process's resident memory on a CPU: what torch's CUDA build maps and never runs.

torch's CUDA build maps its CUDA libraries at import (cuBLAS, NVRTC, nvJitLink, libtorch_cuda, ...),
and the kernel counts every page of their code that it has faulted in as the process's RSS: about
220 MiB on the project's machine, more or less of it from one run to the next depending on what the
page cache holds (the same app measured 976 MiB and 1,199 MiB peak, docs/benchmarks.md). On a
machine without a GPU none of that code ever runs. ``release_cuda_code_pages`` tells the kernel so:
``madvise(MADV_DONTNEED)`` on those libraries' read-only executable mappings, which drops their
pages from the process; a page that is ever needed again is read back from the file. Only mappings
that are never written (``r-xp``) are touched, so no relocated data is lost.
"""

from __future__ import annotations

import ctypes
import os
import sys

MADV_DONTNEED = 4
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -2, -3, -8  # glibc's mallopt parameters
MMAP_THRESHOLD_MAX = 32 << 20  # the largest M_MMAP_THRESHOLD glibc takes on 64-bit (HEAP_MAX_SIZE / 2)
# the libraries a CUDA build of torch maps: NVIDIA's wheels (site-packages/nvidia/...) and torch's own
CUDA_LIBRARY_MARKERS = ("/nvidia/", "/libtorch_cuda", "/libc10_cuda", "/libcudnn", "/libnccl", "/libcublas",
                        "/libcusparse", "/libcufft", "/libcurand", "/libnvrtc", "/libnvJitLink", "/libcupti")


def cuda_code_mappings(maps: str) -> list[tuple[int, int, str]]:
    """The lines of a ``/proc/<pid>/maps`` text -> (start, end, path) of each read-only executable
    mapping of a CUDA library."""
    found = []
    for line in maps.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or parts[1] != "r-xp":
            continue
        path = parts[5].strip()
        if any(marker in path for marker in CUDA_LIBRARY_MARKERS):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            found.append((start, end, path))
    return found


def resident_mib() -> float:
    """This process's current RSS in MiB (0 where /proc is not there)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def release_cuda_code_pages() -> float:
    """On Linux, in a process that does not use CUDA: drop the resident code pages of the CUDA
    libraries from this process. Returns the MiB of RSS released (0 where nothing was done).
    Call it only where CUDA will not be used (the app calls it when it serves on the CPU)."""
    if not sys.platform.startswith("linux"):
        return 0.0
    try:
        with open(f"/proc/{os.getpid()}/maps") as f:
            mappings = cuda_code_mappings(f.read())
    except OSError:
        return 0.0
    if not mappings:
        return 0.0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    before = resident_mib()
    for start, end, _ in mappings:
        libc.madvise(start, end - start, MADV_DONTNEED)
    return max(0.0, before - resident_mib())


def limit_malloc_arenas(arenas: int) -> bool:
    """On glibc: let at most ``arenas`` malloc arenas serve all threads (its default is 8 per core).

    Every thread that allocates while another holds an arena's lock gets an arena of its own, and
    each keeps the memory its thread freed. The app's request threads (one per concurrent request)
    and batch workers each grew one. On the 2-core machine under 16 HTTP clients (docs/benchmarks.md):
    with 4 arenas the served app peaked at 958-982 MiB against 988-1,047 MiB, at the same throughput;
    with 2 it peaked lower still but served about 15 % fewer requests (threads waiting on the arenas'
    locks). Call it before the threads start. Returns whether glibc took the setting (False elsewhere)."""
    return _mallopt((M_ARENA_MAX, arenas))


def reuse_freed_memory(trim_mib: int = 128, top_pad_mib: int = 32) -> bool:
    """On glibc: serve allocations up to 32 MiB from malloc's heaps and keep what is freed there, so
    that the next model call reuses memory whose pages are already mapped.

    By default glibc gives every allocation above its mmap threshold (a few MiB, rising to at most 32
    MiB as large blocks are freed) pages of its own, returns them on free, and trims a heap's free top
    above twice that threshold; a thread's heap grows only as far as each request needs. Every model
    call then writes its large activations (a (4, 96, 113, 113) float map is 19.6 MiB) into fresh
    pages, and each first touch of a 4 KiB page is a page fault: 1,200-2,100 per image through the
    inference encoder, about 3 microseconds each on the 2-core VM, a quarter to a third of the
    encoder's time; the served app took about 2,000 faults per request, 190 with this
    (docs/benchmarks.md). Here the threshold is fixed at 32 MiB, a heap keeps up to ``trim_mib`` of
    free memory at its top, and grows ``top_pad_mib`` at a time. Memory that was in use is kept
    rather than handed back, so the resident set stays at its peak instead of returning below it.
    Call it in a process that runs models on the CPU (the app, ``mmapp caption`` / ``ask``,
    ``mmapp features``), not from library code. Returns whether glibc took all three settings (False elsewhere)."""
    return _mallopt((M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (M_TRIM_THRESHOLD, int(trim_mib) << 20),
                    (M_TOP_PAD, int(top_pad_mib) << 20))


def reuse_freed_memory_on(device: object) -> bool:
    """``reuse_freed_memory()`` where ``device`` (a ``torch.device``) is the CPU; False elsewhere."""
    return getattr(device, "type", None) == "cpu" and reuse_freed_memory()


def _mallopt(*settings: tuple[int, int]) -> bool:
    """glibc's ``mallopt(parameter, value)`` for each setting; whether it took them all (False off glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        return all([bool(libc.mallopt(parameter, int(value))) for parameter, value in settings])
    except (OSError, AttributeError):
        return False
