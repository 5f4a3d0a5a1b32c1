// GPU streams and events, with CPU no-ops, so that code ordering work across
// streams (gradient buckets reduced on a communication stream while backward
// goes on) reads the same in CPU and GPU builds.
//
// On the CPU every operation is synchronous, so waiting is a no-op.
#pragma once

#include <cstddef>

#include "core/device.h"

namespace vit {

class Event;

class Stream {
 public:
  Stream() = default;                  // the null stream / the CPU
  explicit Stream(Device device);      // a new non-blocking stream on the GPU
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  Stream(Stream&& o) noexcept;
  Stream& operator=(Stream&& o) noexcept;

  void* handle() const { return handle_; }  // cudaStream_t
  Device device() const { return device_; }
  void wait(const Event& event) const;      // later work on this stream waits for the event
  void synchronize() const;                 // the host waits for all work on this stream

 private:
  void* handle_ = nullptr;
  Device device_ = Device::CPU;
  bool owned_ = false;
};

class Event {
 public:
  Event() = default;
  explicit Event(Device device);
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  Event(Event&& o) noexcept;
  Event& operator=(Event&& o) noexcept;

  void record(void* stream);  // cudaStream_t
  void synchronize() const;   // the host waits for the event
  void* handle() const { return handle_; }

 private:
  void* handle_ = nullptr;
};

// Copies ordered on `stream` (asynchronous on the GPU; host memory should be
// pinned for a true overlap). Synchronous on the CPU.
void copy_bytes_async(void* dst, const void* src, size_t bytes, void* stream);
// Waits for all work on `stream` (cudaStream_t; null = the legacy stream).
void synchronize_stream(void* stream);
// Later work on `stream` (cudaStream_t) waits for `event`.
void stream_wait_event(void* stream, const Event& event);

}  // namespace vit
