#include "lev/error.hpp"

#include <unistd.h>

#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>

#include "core/fd_hooks.hpp"
#include "lev/detail/op.hpp"
#include "lev/detail/ops/all.hpp"
#include "lev/fd.hpp"

namespace lev {

namespace {

// "send(fd 7) after 12 bytes": what message() and raise() put before the
// code's own text.
std::string where(const Error& e) {
  std::string m = e.op && *e.op ? e.op : "operation";
  if (e.path)
    m += std::string("(") + e.path + ")";
  else if (e.fd >= 0)
    m += "(fd " + std::to_string(e.fd) + ")";
  if (e.transferred) m += " after " + std::to_string(e.transferred) + " bytes";
  return m;
}

// The texts of failed paths, each kept once for the process's life (an
// Error holds a plain pointer to one), up to kPathBytes in all.
constexpr std::size_t kPathBytes = std::size_t{1} << 20;
struct PathTexts {
  std::mutex mu;
  std::unordered_set<std::string> texts;  // node-based: a text never moves
  std::size_t bytes = 0;
};
PathTexts& path_texts() {
  static auto* t = new PathTexts;  // never destroyed: errors may outlive statics
  return *t;
}

}  // namespace

Error Error::with_path(std::string_view p) const {
  Error e = *this;
  PathTexts& t = path_texts();
  const std::lock_guard<std::mutex> lock(t.mu);
  auto found = t.texts.find(std::string(p));
  if (found != t.texts.end()) {
    e.path = found->c_str();
  } else if (t.bytes + p.size() + 1 <= kPathBytes) {
    e.path = t.texts.emplace(p).first->c_str();
    t.bytes += p.size() + 1;
  }
  return e;
}

std::string Error::message() const { return where(*this) + ": " + code.message(); }

const std::error_category& lev_category() noexcept {
  struct Category final : std::error_category {
    const char* name() const noexcept override { return "lev"; }
    std::string message(int v) const override {
      switch (static_cast<errc>(v)) {
        case errc::closed:
          return "channel closed";
      }
      return "unknown lev error " + std::to_string(v);
    }
  };
  static const Category category;
  return category;
}

// std::system_error appends ": " and the code's message to what it is given,
// so it gets only the context; what() then reads exactly like message().
void Error::raise() const { throw std::system_error(code, where(*this)); }

void Fd::reset(int fd) noexcept {
  if (fd_ >= 0 && fd_ != fd) {
    detail::fd_closing(fd_);
    ::close(fd_);
  }
  fd_ = fd;
}

namespace detail {

const char* op_name(OpKind kind) noexcept {
  if (kind < OpKind::timer) return kind_entry(kind).name;
  return kind == OpKind::timer ? "timer" : "post";
}

}  // namespace detail
}  // namespace lev
