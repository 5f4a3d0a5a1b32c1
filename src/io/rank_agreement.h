// Agreeing across ranks on whether a check passed, so that a bad input fails
// every rank together instead of leaving some waiting in a collective.
#pragma once

namespace vit::io {

// Collective over MPI_COMM_WORLD: the lowest rank that reports `failed`, or
// -1 when no rank does.
int first_failing_rank(bool failed);

}  // namespace vit::io
