#include "lev/stats.hpp"

#include <string>

namespace lev {

const char* to_string(TraceEvent event) noexcept {
  switch (event) {
    case TraceEvent::op_submitted:
      return "op_submitted";
    case TraceEvent::op_completed:
      return "op_completed";
    case TraceEvent::task_resumed:
      return "task_resumed";
  }
  return "unknown";
}

std::string LoopStats::to_string() const {
  std::string out;
  auto line = [&out](const char* name, auto value) {
    out += name;
    out += ' ';
    out += std::to_string(value);
    out += '\n';
  };
  line("submitted", submitted);
  line("completed", completed);
  line("kernel_enters", kernel_enters);
  line("drains", drains);
  line("drained", drained);
  line("max_per_drain", max_per_drain);
  out += "mean_per_drain " + std::to_string(mean_per_drain()) + '\n';
  line("cq_overflows", cq_overflows);
  line("cq_dropped", cq_dropped);
  line("timers_armed", timers_armed);
  line("live_ops", live_ops);
  for (const OpCount& k : ops) {
    out += "ops.";
    out += k.kind;
    out += ' ' + std::to_string(k.submitted) + ' ' + std::to_string(k.completed) + '\n';
  }
  return out;
}

}  // namespace lev
