// Compiles the plugin ABI header once as part of the build, so that its static
// asserts (every field's offset and size, the 64-bit requirement) are checked with
// the compiler SwiftPM uses for C. The header is the whole of this target.
#include "edge_optimizer.h"
