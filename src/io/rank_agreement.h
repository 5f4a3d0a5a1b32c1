// Agreeing across ranks on whether a check passed, so that a bad input fails
// every rank together instead of leaving some waiting in a collective.
#pragma once

#include <functional>
#include <string>

#include "core/error.h"

namespace vit::io {

// Collective over MPI_COMM_WORLD: the lowest rank that reports `failed`, or
// -1 when no rank does.
int first_failing_rank(bool failed);

// Thrown on EVERY rank at once, after all ranks agreed that one of them
// failed; the failing rank's message was already printed, once. The entry
// point ends the process with exit_status() on every rank, without
// MPI_Abort (no rank is left in a collective, so there is nothing to abort).
class AgreedFailure : public UserError {
 public:
  AgreedFailure(const std::string& what, int exit_status) : UserError(what), exit_status_(exit_status) {}
  int exit_status() const { return exit_status_; }

 private:
  int exit_status_;
};

// Collective: runs `check` on every rank. If it throws vit::UserError on any
// rank, the lowest such rank prints "<prefix><message>" to stderr and every
// rank throws AgreedFailure(<that rank's message or "">, exit_status).
void agree_or_throw(const std::function<void()>& check, const std::string& prefix, int exit_status = 2);

}  // namespace vit::io
