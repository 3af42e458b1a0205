#pragma once
// Closing an fd through lev (lev::Fd, Loop::close) tells the epoll engines
// of this thread, so that a later fd with the same number is never taken for
// the closed one's registration (epoll forgets closed files silently).
namespace lev::detail {
void fd_closing(int fd) noexcept;
}
