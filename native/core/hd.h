// AV_HD marks header-only functions callable from host C++ and CUDA device code.
#pragma once

#ifdef __CUDACC__
#define AV_HD __host__ __device__
#else
#define AV_HD
#endif  // __CUDACC__
