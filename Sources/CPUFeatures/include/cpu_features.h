// What the CPU this process runs on supports, asked before any code compiled for more
// than the baseline runs. On CPUs other than x86-64 every query answers 1.
#ifndef EDGE_CPU_FEATURES_H
#define EDGE_CPU_FEATURES_H

/// 1 when the CPU has AVX2, FMA, F16C, BMI1, BMI2 and MOVBE (what `-target-cpu haswell`
/// lets the compiler use); 0 otherwise. `missing` receives the names of the missing
/// features, comma-separated (at most `size` bytes, NUL-terminated).
int edge_cpu_has_haswell_features(char *missing, unsigned long size);

#endif
