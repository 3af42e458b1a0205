// IdleDeadline: one loop timer per connection, re-armed only when it finds
// that the connection was active since it was armed.
#include "lev/deadline.hpp"

namespace lev {

namespace {
bool no_limit(Duration d) noexcept { return d <= Duration::zero() || d == Duration::max(); }
}  // namespace

IdleDeadline::IdleDeadline(Loop& loop, Duration idle)
    : loop_(&loop), idle_(no_limit(idle) ? Duration::max() : idle), last_(loop.now()) {
  timer_.kind = detail::OpKind::timer;
  timer_.deliver = &IdleDeadline::on_timer;
  timer_.ctx = this;
  if (idle_ != Duration::max()) arm(saturating_add(last_, idle_));
}

IdleDeadline::~IdleDeadline() { disarm(); }

void IdleDeadline::arm(TimePoint at) {
  disarm();
  if (at == TimePoint::max()) return;
  timer_.deadline = at;
  loop_->start(timer_);
  armed_ = true;
}

void IdleDeadline::disarm() noexcept {
  if (!armed_) return;
  armed_ = false;
  if (static_cast<unsigned>(timer_.state) - 1u < 2u) loop_->disarm(timer_);
}

void IdleDeadline::set_idle(Duration idle) {
  idle_ = no_limit(idle) ? Duration::max() : idle;
  rearm();
}

void IdleDeadline::limit_until(TimePoint at) {
  until_ = at;
  rearm();
}

void IdleDeadline::touch() noexcept { last_ = loop_->now(); }

void IdleDeadline::rearm() {
  expired_ = false;
  last_ = loop_->now();
  const TimePoint want = std::min(saturating_add(last_, idle_), until_);
  // A limit that comes no sooner than the armed timer is seen when that
  // timer fires (it looks again then): moving a limit later, as a server
  // does per message, costs a few stores and no timer.
  if (armed_ && timer_.deadline <= want) return;
  arm(want);
}

// The timer fired: the connection expired when an operation waits and it
// has been idle for the limit (or the absolute limit passed); otherwise
// it is armed again for the next moment that could be an expiry.
void IdleDeadline::on_timer(detail::OpBase& t) {
  auto* self = static_cast<IdleDeadline*>(t.ctx);
  self->armed_ = false;
  if (t.res < 0) return;  // disarmed by teardown
  const TimePoint now = self->loop_->now();
  const TimePoint idle_end = saturating_add(self->last_, self->idle_);
  if (now >= self->until_ || (self->pending_.cancel && now >= idle_end)) {
    self->expired_ = true;
    if (self->pending_.cancel) self->pending_.cancel(self->pending_.awaiter);
    return;
  }
  // Active meanwhile, or nothing waits now: look again when the idle limit
  // could have passed.
  TimePoint next =
      self->pending_.cancel && idle_end > now ? idle_end : saturating_add(now, self->idle_);
  self->arm(std::min(next, self->until_));
}

}  // namespace lev
