// __builtin_cpu_supports reads CPUID (GCC and Clang, x86 only).
#include "cpu_features.h"
#include <string.h>

static void append(char *out, unsigned long size, const char *name) {
    if (size == 0) return;
    unsigned long used = strlen(out);
    unsigned long need = (used ? 2 : 0) + strlen(name);
    if (used + need + 1 > size) return;
    if (used) strcat(out, ", ");
    strcat(out, name);
}

int edge_cpu_has_haswell_features(char *missing, unsigned long size) {
    if (size > 0) missing[0] = 0;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    int ok = 1;
    if (!__builtin_cpu_supports("avx2")) { ok = 0; append(missing, size, "AVX2"); }
    if (!__builtin_cpu_supports("fma")) { ok = 0; append(missing, size, "FMA"); }
    if (!__builtin_cpu_supports("f16c")) { ok = 0; append(missing, size, "F16C"); }
    if (!__builtin_cpu_supports("bmi")) { ok = 0; append(missing, size, "BMI1"); }
    if (!__builtin_cpu_supports("bmi2")) { ok = 0; append(missing, size, "BMI2"); }
    if (!__builtin_cpu_supports("movbe")) { ok = 0; append(missing, size, "MOVBE"); }
    return ok;
#else
    (void)missing;
    return 1;
#endif
}
