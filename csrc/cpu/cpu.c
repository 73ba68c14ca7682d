/* CPU feature detection (cpuid/xgetbv), AMX permission, the ISA cap and the variant registry. */
#include "cpu/cpu.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#if !defined(QC_NO_X86) && (defined(__x86_64__) || defined(__i386__))
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define QC_X86 1
#endif

static qc_cpu_features g_cpu;
/* written by qc_cpu_init and by qc_isa_disable/reenable (under the GIL or the gemm
 * self-check lock), read by dispatch: atomic, relaxed */
static atomic_int g_supported[QC_ISA_COUNT];
static atomic_int g_hw_supported[QC_ISA_COUNT]; /* before any qc_isa_disable */
static char g_disabled_reason[QC_ISA_COUNT][160];
static atomic_int g_disabled[QC_ISA_COUNT];
/* read by every dispatch, possibly while a test thread moves it: atomic, relaxed order (a
 * call uses the cap it reads; each variant is correct on its own) */
static atomic_int g_cap = QC_ISA_AMX; /* the top real level; amxemu only when forced */
static int g_initialized;

static const char *const g_isa_names[QC_ISA_COUNT] = {
#define QC_ISA_NAME(up, low) #low,
    QC_ISA_LIST(QC_ISA_NAME)
#undef QC_ISA_NAME
};

const char *qc_isa_name(qc_isa isa) {
    return (isa >= 0 && isa < QC_ISA_COUNT) ? g_isa_names[isa] : "unknown";
}

int qc_isa_from_name(const char *name, qc_isa *out) {
    if (!name) return -1;
    for (int i = 0; i < QC_ISA_COUNT; i++) {
        if (strcmp(name, g_isa_names[i]) == 0) {
            *out = (qc_isa)i;
            return 0;
        }
    }
    return -1;
}

int qc_isa_supported(qc_isa isa) {
    return (isa >= 0 && isa < QC_ISA_COUNT)
               ? atomic_load_explicit(&g_supported[isa], memory_order_relaxed)
               : 0;
}

void qc_isa_disable(qc_isa isa, const char *reason) {
    if (isa <= QC_ISA_SCALAR || isa >= QC_ISA_COUNT) return; /* scalar is the ground truth */
    if (!atomic_load(&g_disabled[isa])) {
        snprintf(g_disabled_reason[isa], sizeof g_disabled_reason[isa], "%s", reason);
        atomic_store(&g_disabled[isa], 1);
    }
    atomic_store(&g_supported[isa], 0);
}

void qc_isa_reenable(qc_isa isa) {
    if (isa <= QC_ISA_SCALAR || isa >= QC_ISA_COUNT) return;
    atomic_store(&g_supported[isa], atomic_load(&g_hw_supported[isa]));
    atomic_store(&g_disabled[isa], 0);
}

const char *qc_isa_disabled_reason(qc_isa isa) {
    if (isa < 0 || isa >= QC_ISA_COUNT || !atomic_load(&g_disabled[isa])) return NULL;
    return g_disabled_reason[isa];
}
qc_isa qc_isa_cap(void) { return (qc_isa)atomic_load_explicit(&g_cap, memory_order_relaxed); }
void qc_isa_set_cap(qc_isa cap) { atomic_store_explicit(&g_cap, (int)cap, memory_order_relaxed); }
const qc_cpu_features *qc_cpu(void) { return &g_cpu; }

#ifdef QC_X86
static uint64_t xgetbv0(void) {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

/* Linux keeps AMX tile data off until the process asks for it (ARCH_REQ_XCOMP_PERM). */
static int request_amx_permission(void) {
#ifdef SYS_arch_prctl
    const long ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18;
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
#else
    return 0;
#endif
}
#endif

static void qc_cpu_detect(int *g_supported);

void qc_cpu_init(void) {
    if (g_initialized) return;
    g_initialized = 1;
    memset(&g_cpu, 0, sizeof g_cpu);
    int sup[QC_ISA_COUNT] = {0};
    sup[QC_ISA_SCALAR] = 1;
    qc_cpu_detect(sup);
    for (int i = 0; i < QC_ISA_COUNT; i++) {
        atomic_store(&g_supported[i], sup[i]);
        atomic_store(&g_hw_supported[i], sup[i]);
    }
}

/* Fills g_supported (a local array, shadowing the atomic one) from cpuid/xgetbv. */
static void qc_cpu_detect(int *g_supported) {
    (void)g_supported;
#ifdef QC_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return;
    unsigned max_leaf = a;
    memcpy(g_cpu.vendor, &b, 4);
    memcpy(g_cpu.vendor + 4, &d, 4);
    memcpy(g_cpu.vendor + 8, &c, 4);
    __get_cpuid(1, &a, &b, &c, &d);
    int osxsave = (c >> 27) & 1;
    g_cpu.sse41 = (c >> 19) & 1;
    g_cpu.fma = (c >> 12) & 1;
    g_cpu.f16c = (c >> 29) & 1;
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    int os_avx = (xcr0 & 0x6) == 0x6;           /* XMM and YMM state */
    int os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0; /* opmask, ZMM_Hi256, Hi16_ZMM */
    int os_amx = (xcr0 & 0x60000) == 0x60000;    /* XTILECFG, XTILEDATA */
    g_cpu.avx = ((c >> 28) & 1) && os_avx;
    g_cpu.fma &= os_avx;
    g_cpu.f16c &= os_avx;
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        unsigned sub_leaves = a;
        g_cpu.avx2 = ((b >> 5) & 1) && os_avx;
        g_cpu.bmi2 = (b >> 8) & 1;
        g_cpu.avx512f = ((b >> 16) & 1) && os_avx512;
        g_cpu.avx512dq = ((b >> 17) & 1) && os_avx512;
        g_cpu.avx512cd = ((b >> 28) & 1) && os_avx512;
        g_cpu.avx512bw = ((b >> 30) & 1) && os_avx512;
        g_cpu.avx512vl = ((b >> 31) & 1) && os_avx512;
        g_cpu.avx512vnni = ((c >> 11) & 1) && os_avx512;
        g_cpu.avx512fp16 = ((d >> 23) & 1) && os_avx512;
        g_cpu.amx_bf16 = ((d >> 22) & 1) && os_amx;
        g_cpu.amx_tile = ((d >> 24) & 1) && os_amx;
        g_cpu.amx_int8 = ((d >> 25) & 1) && os_amx;
        if (sub_leaves >= 1) {
            __cpuid_count(7, 1, a, b, c, d);
            g_cpu.avxvnni = ((a >> 4) & 1) && os_avx;
            g_cpu.avx512bf16 = ((a >> 5) & 1) && os_avx512;
        }
    }
    int avx2 = g_cpu.avx2 && g_cpu.fma && g_cpu.f16c && g_cpu.bmi2;
    int avx512 = avx2 && g_cpu.avx512f && g_cpu.avx512bw && g_cpu.avx512vl && g_cpu.avx512dq &&
                 g_cpu.avx512cd;
    g_supported[QC_ISA_AVX2] = avx2;
    g_supported[QC_ISA_AVXVNNI] = avx2 && g_cpu.avxvnni;
    g_supported[QC_ISA_AVX512] = avx512;
    g_supported[QC_ISA_AVX512VNNI] = avx512 && g_cpu.avx512vnni;
    if (avx512 && g_cpu.avx512vnni && g_cpu.amx_tile && g_cpu.amx_int8) {
        g_cpu.amx_permitted = request_amx_permission();
        g_supported[QC_ISA_AMX] = g_cpu.amx_permitted;
    }
#ifdef QC_AMX_EMULATE
    g_supported[QC_ISA_AMXEMU] = g_supported[QC_ISA_AVX512VNNI];
#endif
#endif
}

const qc_variant *qc_family_select(const qc_family *family) {
    for (size_t i = 0; i < family->count; i++) {
        if (qc_isa_usable(family->variants[i].isa)) return &family->variants[i];
    }
    return &family->variants[family->count - 1];
}

const qc_variant *qc_family_find(const qc_family *family, qc_isa isa) {
    for (size_t i = 0; i < family->count; i++) {
        if (family->variants[i].isa == isa) return &family->variants[i];
    }
    return NULL;
}

static const qc_family *g_families[QC_MAX_FAMILIES];
static size_t g_nfamilies;

int qc_register_family(const qc_family *family) {
    for (size_t i = 0; i < g_nfamilies; i++) {
        if (g_families[i] == family) return 0;
    }
    if (g_nfamilies >= QC_MAX_FAMILIES) return -1;
    g_families[g_nfamilies++] = family;
    return 0;
}

size_t qc_family_count(void) { return g_nfamilies; }
const qc_family *qc_family_at(size_t i) { return i < g_nfamilies ? g_families[i] : NULL; }
