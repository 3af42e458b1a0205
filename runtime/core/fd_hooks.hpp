#pragma once
// Closing an fd through lev (lev::Fd, Loop::close) tells this thread's
// epoll engines, so that a later fd with the same number is never taken for
// the closed one's registration (epoll forgets closed files silently), and
// this thread's loops, which let go of the fd's multishot recv (the
// kernel's request would otherwise hold the file open).
namespace lev::detail {
void fd_closing(int fd) noexcept;
/// The epoll engines' part of fd_closing.
void epoll_fd_closing(int fd) noexcept;
}  // namespace lev::detail
