/* CPU feature detection, ISA levels, the QUANTC_ISA cap and the kernel-variant registry. */
#ifndef QC_CPU_H
#define QC_CPU_H

#include "qc_common.h"

/* ISA levels, ordered: QUANTC_ISA=<name> caps the variants to levels <= it. A level is
 * usable when the CPU and OS support it and it is not above the cap. AMXEMU is the AMX
 * kernel on a scalar model of the tiles (gemm/amx_tiles.h): supported only in a build with
 * QUANTC_AMX_EMULATE=1 on an AVX-512 VNNI CPU, and above the default cap (amx), so it runs
 * only where QUANTC_ISA=amxemu or a test forces it. */
#define QC_ISA_LIST(X) \
    X(SCALAR, scalar)  \
    X(AVX2, avx2)      \
    X(AVXVNNI, avxvnni) \
    X(AVX512, avx512)  \
    X(AVX512VNNI, avx512vnni) \
    X(AMX, amx)        \
    X(AMXEMU, amxemu)

typedef enum {
#define QC_ISA_ENUM(up, low) QC_ISA_##up,
    QC_ISA_LIST(QC_ISA_ENUM)
#undef QC_ISA_ENUM
    QC_ISA_COUNT
} qc_isa;

const char *qc_isa_name(qc_isa isa);
int qc_isa_from_name(const char *name, qc_isa *out); /* 0 on success, -1 unknown */
int qc_isa_supported(qc_isa isa);                    /* hardware + OS (+ AMX permission) */
/* Turn a level off for the process (a kernel failed its self-check) with the reason that
 * cpu_info() reports; qc_isa_reenable undoes it (tests). Reason NULL: level not disabled. */
void qc_isa_disable(qc_isa isa, const char *reason);
void qc_isa_reenable(qc_isa isa);
const char *qc_isa_disabled_reason(qc_isa isa);
qc_isa qc_isa_cap(void);
void qc_isa_set_cap(qc_isa cap);
static inline int qc_isa_usable(qc_isa isa) { return isa <= qc_isa_cap() && qc_isa_supported(isa); }

/* Raw features, for cpu_info(). */
typedef struct {
    int sse41, avx, fma, f16c, avx2, bmi2;
    int avx512f, avx512bw, avx512vl, avx512dq, avx512cd, avx512vnni, avx512bf16, avx512fp16;
    int avxvnni, amx_tile, amx_int8, amx_bf16, amx_permitted;
    char vendor[13];
} qc_cpu_features;
const qc_cpu_features *qc_cpu(void);
void qc_cpu_init(void); /* idempotent; called once at module import */

/* A kernel variant: a name, the ISA level it needs and an opaque table of kernels. A family
 * lists its variants best first; dispatch takes the first usable one. */
typedef struct {
    const char *name;
    qc_isa isa;
    const void *impl;
} qc_variant;

typedef struct {
    const char *name;
    size_t count;
    const qc_variant *variants; /* best first; the last must be the scalar variant */
} qc_family;

/* The best usable variant (never NULL: the scalar one is always usable). */
const qc_variant *qc_family_select(const qc_family *family);
/* The variant with this exact ISA level, or NULL when the family has none. */
const qc_variant *qc_family_find(const qc_family *family, qc_isa isa);

/* Families register themselves at module import so cpu_info() and the tests can list them. */
#define QC_MAX_FAMILIES 32
int qc_register_family(const qc_family *family);
size_t qc_family_count(void);
const qc_family *qc_family_at(size_t i);

#endif
