// CUDA events with timing (unlike core/stream.h's Event, created without
// timing to stay cheap), for the chunk timeline and the step-gap meter.
// Implemented in chunk_timeline_cuda.cpp; declared only in CUDA builds.
#pragma once

namespace vit::parallel {

#ifdef VIT_WITH_CUDA
void* timeline_event_create();                       // cudaEvent_t
void timeline_event_destroy(void* e);
void timeline_event_record(void* e, void* stream);  // on cudaStream_t `stream`
float timeline_event_ms(void* from, void* to);       // milliseconds between two recorded events
#endif

}  // namespace vit::parallel
