#include "core/stream.h"

#include <cstring>
#include <utility>

#include "core/error.h"

namespace vit {

#ifdef VIT_WITH_CUDA
void* cuda_stream_create();
void cuda_stream_destroy(void* s);
void cuda_stream_wait(void* s, void* e);
void cuda_stream_sync(void* s);
void* cuda_event_create();
void cuda_event_destroy(void* e);
void cuda_event_record(void* e, void* s);
void cuda_event_sync(void* e);
void cuda_copy_async(void* dst, const void* src, size_t bytes, void* s);
#endif

Stream::Stream(Device device) : device_(device) {
  if (device == Device::CUDA) {
#ifdef VIT_WITH_CUDA
    handle_ = cuda_stream_create();
    owned_ = true;
#else
    VIT_THROW("a GPU stream was requested but vit_hpc was built without CUDA");
#endif
  }
}

Stream::~Stream() {
#ifdef VIT_WITH_CUDA
  if (owned_ && handle_) cuda_stream_destroy(handle_);
#endif
}

Stream::Stream(Stream&& o) noexcept
    : handle_(std::exchange(o.handle_, nullptr)), device_(o.device_), owned_(std::exchange(o.owned_, false)) {}

Stream& Stream::operator=(Stream&& o) noexcept {
  if (this != &o) {
    this->~Stream();
    handle_ = std::exchange(o.handle_, nullptr);
    device_ = o.device_;
    owned_ = std::exchange(o.owned_, false);
  }
  return *this;
}

void Stream::wait(const Event& event) const {
  if (device_ == Device::CUDA) stream_wait_event(handle_, event);
}

void stream_wait_event(void* stream, const Event& event) {
#ifdef VIT_WITH_CUDA
  if (event.handle()) cuda_stream_wait(stream, event.handle());
#else
  (void)stream;
  (void)event;
#endif
}

void Stream::synchronize() const {
#ifdef VIT_WITH_CUDA
  if (device_ == Device::CUDA) cuda_stream_sync(handle_);
#endif
}

Event::Event(Device device) {
  if (device == Device::CUDA) {
#ifdef VIT_WITH_CUDA
    handle_ = cuda_event_create();
#else
    VIT_THROW("a GPU event was requested but vit_hpc was built without CUDA");
#endif
  }
}

Event::~Event() {
#ifdef VIT_WITH_CUDA
  if (handle_) cuda_event_destroy(handle_);
#endif
}

Event::Event(Event&& o) noexcept : handle_(std::exchange(o.handle_, nullptr)) {}

Event& Event::operator=(Event&& o) noexcept {
  if (this != &o) {
    this->~Event();
    handle_ = std::exchange(o.handle_, nullptr);
  }
  return *this;
}

void Event::record(void* stream) {
#ifdef VIT_WITH_CUDA
  if (handle_) cuda_event_record(handle_, stream);
#else
  (void)stream;
#endif
}

void Event::synchronize() const {
#ifdef VIT_WITH_CUDA
  if (handle_) cuda_event_sync(handle_);
#endif
}

void copy_bytes_async(void* dst, const void* src, size_t bytes, void* stream) {
#ifdef VIT_WITH_CUDA
  if (cuda_device_count() > 0) {
    cuda_copy_async(dst, src, bytes, stream);
    return;
  }
#endif
  (void)stream;
  std::memcpy(dst, src, bytes);
}

void synchronize_stream(void* stream) {
#ifdef VIT_WITH_CUDA
  if (cuda_device_count() > 0) cuda_stream_sync(stream);
#else
  (void)stream;
#endif
}

}  // namespace vit
