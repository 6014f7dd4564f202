// An owning array in device memory (cudaMalloc), with copies to and from the host.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>
#include <vector>

#include "kernels/cuda/cuda_check.h"

namespace kvshrink::kernels::cuda {

template <class T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t count) : count_(count) {
    void* memory = nullptr;
    if (count_ > 0) KVSHRINK_CUDA_CHECK(cudaMalloc(&memory, count_ * sizeof(T)));
    data_ = static_cast<T*>(memory);
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) {
    if (!host.empty()) upload(host);
  }
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), count_(std::exchange(other.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      if (data_) cudaFree(data_);
      data_ = std::exchange(other.data_, nullptr);
      count_ = std::exchange(other.count_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (data_) cudaFree(data_);
  }

  // At least `count` elements (contents lost when it grows): scratch reused from call to call.
  void reserve(size_t count) {
    if (count > count_) *this = DeviceBuffer(count);
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return count_; }

  void upload(const std::vector<T>& host) {  // host.size() == size()
    KVSHRINK_CUDA_CHECK(cudaMemcpy(data_, host.data(), count_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  // The first `count` elements from / to host memory, queued on `stream`.
  void copy_from_host(const T* host, size_t count, cudaStream_t stream) {
    KVSHRINK_CUDA_CHECK(cudaMemcpyAsync(data_, host, count * sizeof(T), cudaMemcpyHostToDevice, stream));
  }
  void copy_to_host(T* host, size_t count, cudaStream_t stream) const {
    KVSHRINK_CUDA_CHECK(cudaMemcpyAsync(host, data_, count * sizeof(T), cudaMemcpyDeviceToHost, stream));
  }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    KVSHRINK_CUDA_CHECK(cudaMemcpy(host.data(), data_, count_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  T* data_ = nullptr;
  size_t count_ = 0;
};

}  // namespace kvshrink::kernels::cuda
