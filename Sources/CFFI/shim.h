// libffi: call plugin-declared option setters whose argument types are known only at run time.
#include <ffi.h>
