/* fault_malloc.so: an LD_PRELOAD shim that makes malloc fail on demand, for
 * tests/integration/test_fault_injection.py (reliability checklist C5).
 *
 * It wraps malloc, calloc, realloc, free and the aligned allocators around
 * glibc's own (__libc_*), and is steered through a small shared file named
 * by GOHUB_FAULT_SHM (see fault_ctl_t; the test maps the same file):
 *   fail_every  0 = never fail; N = fail about one eligible call in N
 *   scope       0 = every allocation is eligible; 1 = only calls made from
 *               the main executable (gohub's own code, and LuaJIT's, which
 *               allocates through gohub's vm_alloc)
 * and counts, for the test to read: calls, failed, and live (blocks
 * allocated minus blocks freed while the file was mapped), which shows a
 * leak on an error path as growth between two quiet moments.
 *
 * Test tooling, not part of gohub: built by the test with `cc -shared`. */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

/* The shared file's layout (little-endian 64-bit fields, as the test
 * reads them with struct "<8q"). */
typedef struct {
    _Atomic int64_t fail_every;
    _Atomic int64_t scope;
    _Atomic int64_t calls;  /* eligible calls while fail_every != 0 */
    _Atomic int64_t failed;
    _Atomic int64_t live;
    _Atomic int64_t seed;
    int64_t pad[2];
} fault_ctl_t;

static fault_ctl_t *ctl;        /* NULL until mapped (or when unset) */
static _Atomic int state;       /* 0 = not tried, 1 = mapping, 2 = done */
static uintptr_t exe_lo, exe_hi; /* the main executable's code */

/* The main executable's executable segment, from the auxiliary vector:
 * no allocation and no loader lock, so it is safe inside malloc. */
static void find_exe(void)
{
    const Elf64_Phdr *ph = (const Elf64_Phdr *)getauxval(AT_PHDR); /* x86-64 */
    size_t n = getauxval(AT_PHNUM);
    uintptr_t base = 0;
    for (size_t i = 0; ph != NULL && i < n; i++)
        if (ph[i].p_type == PT_PHDR)
            base = (uintptr_t)ph - ph[i].p_vaddr;
    for (size_t i = 0; ph != NULL && i < n; i++) {
        if (ph[i].p_type == PT_LOAD && (ph[i].p_flags & PF_X)) {
            exe_lo = base + ph[i].p_vaddr;
            exe_hi = exe_lo + ph[i].p_memsz;
        }
    }
}

static void init(void)
{
    int expect = 0;
    if (!atomic_compare_exchange_strong(&state, &expect, 1))
        return; /* done, or another thread is mapping: count nothing yet */
    find_exe();
    const char *path = getenv("GOHUB_FAULT_SHM");
    if (path != NULL) {
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd >= 0) {
            void *p = mmap(NULL, sizeof(fault_ctl_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            close(fd);
            if (p != MAP_FAILED)
                ctl = p;
        }
    }
    atomic_store(&state, 2);
}

/* 1 when this call is to fail. */
static int should_fail(uintptr_t caller)
{
    if (atomic_load_explicit(&state, memory_order_acquire) != 2) {
        init();
        return 0;
    }
    if (ctl == NULL)
        return 0;
    int64_t every = atomic_load_explicit(&ctl->fail_every, memory_order_relaxed);
    if (every <= 0)
        return 0;
    if (atomic_load_explicit(&ctl->scope, memory_order_relaxed) == 1 &&
        (caller < exe_lo || caller >= exe_hi))
        return 0;
    uint64_t k = (uint64_t)atomic_fetch_add_explicit(&ctl->calls, 1, memory_order_relaxed);
    /* splitmix64 of the call number: failures spread over every path */
    uint64_t z = k + (uint64_t)atomic_load_explicit(&ctl->seed, memory_order_relaxed) +
                 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    if (z % (uint64_t)every != 0)
        return 0;
    atomic_fetch_add_explicit(&ctl->failed, 1, memory_order_relaxed);
    return 1;
}

static void count(int64_t d)
{
    if (ctl != NULL)
        atomic_fetch_add_explicit(&ctl->live, d, memory_order_relaxed);
}

#define CALLER ((uintptr_t)__builtin_return_address(0))

void *malloc(size_t n)
{
    if (should_fail(CALLER)) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __libc_malloc(n);
    if (p != NULL)
        count(1);
    return p;
}

void *calloc(size_t k, size_t n)
{
    if (should_fail(CALLER)) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __libc_calloc(k, n);
    if (p != NULL)
        count(1);
    return p;
}

void *realloc(void *old, size_t n)
{
    if (old != NULL && n == 0) { /* glibc: frees old, returns NULL */
        __libc_free(old);
        count(-1);
        return NULL;
    }
    if (should_fail(CALLER)) {
        errno = ENOMEM;
        return NULL; /* old stays valid */
    }
    void *p = __libc_realloc(old, n);
    if (p != NULL && old == NULL)
        count(1);
    return p;
}

void free(void *p)
{
    if (p == NULL)
        return;
    __libc_free(p);
    count(-1);
}

static void *aligned(size_t align, size_t n, uintptr_t caller)
{
    if (should_fail(caller))
        return NULL;
    void *p = __libc_memalign(align, n);
    if (p != NULL)
        count(1);
    return p;
}

int posix_memalign(void **out, size_t align, size_t n)
{
    if (align < sizeof(void *) || (align & (align - 1)) != 0)
        return EINVAL;
    void *p = aligned(align, n, CALLER);
    if (p == NULL)
        return ENOMEM;
    *out = p;
    return 0;
}

void *aligned_alloc(size_t align, size_t n)
{
    return aligned(align, n, CALLER);
}

void *memalign(size_t align, size_t n)
{
    return aligned(align, n, CALLER);
}

void *valloc(size_t n)
{
    return aligned((size_t)sysconf(_SC_PAGESIZE), n, CALLER);
}
