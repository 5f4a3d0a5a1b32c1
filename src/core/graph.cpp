#include "core/graph.h"

#include <algorithm>

#include "core/device.h"
#include "core/error.h"

namespace vit {

#ifdef VIT_WITH_CUDA
// graph_cuda.cpp
void cuda_capture_begin(void* stream);
void* cuda_capture_end(void* stream, bool keep, std::string* why);  // instantiated graph, or null and why
void cuda_graph_launch(void* exec, void* stream);
void cuda_graph_destroy(void* exec);
#endif

GraphCache::~GraphCache() { clear(); }

void GraphCache::clear() {
#ifdef VIT_WITH_CUDA
  for (Entry& e : entries_) {
    if (e.exec) cuda_graph_destroy(e.exec);
  }
#endif
  entries_.clear();
}

void GraphCache::run(std::vector<uint64_t> key, void* stream, const std::function<void()>& work,
                     const std::function<void()>& redo) {
#ifndef VIT_WITH_CUDA
  (void)key;
  (void)stream;
  (void)redo;
  ++eager_;
  work();
#else
  if (stream == nullptr || off_) {
    ++eager_;
    work();
    return;
  }
  key.push_back(device_frees());
  auto it = std::find_if(entries_.begin(), entries_.end(), [&](const Entry& e) { return e.key == key; });
  if (it == entries_.end()) {
    // New key: run eagerly and remember it; forget graphs whose pointers may be stale.
    entries_.erase(std::remove_if(entries_.begin(), entries_.end(),
                                  [&](const Entry& e) {
                                    const bool stale = e.key.back() != key.back();
                                    if (stale && e.exec) cuda_graph_destroy(e.exec);
                                    return stale;
                                  }),
                   entries_.end());
    if (entries_.size() >= capacity_) {
      if (entries_.front().exec) cuda_graph_destroy(entries_.front().exec);
      entries_.erase(entries_.begin());
    }
    entries_.push_back(Entry{std::move(key), nullptr});
    ++eager_;
    work();
    return;
  }
  Entry e = *it;  // move to the back (most recent)
  entries_.erase(it);
  if (e.exec == nullptr) {
    std::string why;
    bool completed = true;
    cuda_capture_begin(stream);
    try {
      work();
    } catch (const std::exception& ex) {
      why = ex.what();
      completed = false;
    }
    void* exec = cuda_capture_end(stream, completed, &why);
    if (exec == nullptr) {
      off_ = true;
      note_ = "CUDA graphs are off for this run: capturing the step failed (" + why + "); it runs eagerly";
      clear();
      redo();
      ++eager_;
      work();
      return;
    }
    e.exec = exec;
    ++captures_;
  } else {
    ++replays_;
  }
  entries_.push_back(e);
  cuda_graph_launch(e.exec, stream);
#endif
}

}  // namespace vit
