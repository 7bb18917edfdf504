// OpenBLAS: sgemm/sgemv for dense float math, and the LAPACK eigensolver used by
// the subspace gradient. Debian's pkg-config entry points at the pthread build.
#include <cblas.h>

/// LAPACK's symmetric eigensolver (Fortran symbol; OpenBLAS exports it).
void ssyevd_(const char *jobz, const char *uplo, const int *n, float *a, const int *lda,
             float *w, float *work, const int *lwork, int *iwork, const int *liwork, int *info);

/// The same in double precision (the embedding subspace's covariance).
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
             double *w, double *work, const int *lwork, int *iwork, const int *liwork, int *info);
