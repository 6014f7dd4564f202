// <mpi.h>, C API only: without these, OpenMPI's and MPICH's mpi.h pull in the removed C++
// bindings, which need a library the build does not link.
#pragma once

#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>
