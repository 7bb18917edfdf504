// OpenBLAS picks its kernels by CPU model when it loads. On CPUs newer than the
// library knows (common in cloud VMs), Debian's OpenBLAS 0.3.21 falls back to its
// Prescott (SSE3) kernels and runs sgemm at a fraction of the machine's speed.
// OPENBLAS_CORETYPE overrides the choice, but only before the library initialises,
// so the command line re-executes itself with it set (see EdgeFinetuneCLI).

import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif

public enum BLASCore {
    /// The kernel family OpenBLAS chose, e.g. "Haswell", "SkylakeX", "Prescott".
    public static var current: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// The kernel family this CPU supports, from its feature flags (Linux /proc/cpuinfo):
    /// SkylakeX with AVX-512 (F, BW, DQ, VL), Haswell with AVX2 and FMA; nil otherwise.
    public static var supported: String? {
        guard let flags = cpuFlags() else { return nil }
        if ["avx512f", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(flags.contains) { return "SkylakeX" }
        if ["avx2", "fma"].allSatisfy(flags.contains) { return "Haswell" }
        return nil
    }

    /// The core type to force, when OpenBLAS chose older kernels than the CPU supports.
    public static var recommendedOverride: String? {
        let weak = ["Prescott", "Core2", "Nehalem", "Atom", "Katmai", "Coppermine", "Northwood", "Banias", "Sandybridge"]
        guard weak.contains(current), let best = supported else { return nil }
        return best
    }

    private static func cpuFlags() -> Set<String>? {
        guard let f = fopen("/proc/cpuinfo", "r") else { return nil }
        defer { fclose(f) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        while getline(&line, &capacity, f) > 0 {
            let text = String(cString: line!)
            if text.hasPrefix("flags") {
                free(line)
                let value = text.split(separator: ":", maxSplits: 1).last ?? ""
                return Set(value.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))
            }
        }
        free(line)
        return nil
    }
}
