// LZ4 frame format (with content checksums) for training checkpoints.
#include <lz4frame.h>
