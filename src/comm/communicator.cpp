#include "comm/communicator.h"

namespace vit::comm {

Communicator::~Communicator() = default;

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Avg: return "avg";
    case ReduceOp::Max: return "max";
  }
  return "?";
}

}  // namespace vit::comm
